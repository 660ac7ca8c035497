"""`dvc repro` on a fresh copy of the project runs every stage; a second run does nothing."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def run(cmd, cwd, env):
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout + out.stderr


@pytest.fixture
def fresh_clone(tmp_path):
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not files:
        pytest.skip("not a git checkout")
    dst = tmp_path / "clone"
    for f in files:
        if (ROOT / f).is_file() and not f.startswith("dvc.lock"):
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dst / f)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    params["demo"].update(patients=6, images_per_patient=[2, 2], sizes=[96, 128])
    params["prepare"]["size"] = 32
    params["gan"].update(width=0.25, steps=6, batch=8, log_every=3, checkpoint_every=3, grid_every=1,
                         fid_every=3, fid_samples=20)
    params["extractor"].update(width=4, dim=16, steps=5, batch=16)
    params["fidelity"].update(kid_subsets=5, inception_weights="no-such-file.pth")
    params["downstream"].update(fractions=[1.0], seeds=[0])
    params["downstream"]["cnn"].update(width=4, epochs=1, batch=16)
    params["downstream"]["xgboost"].update(n_estimators=10)
    params["downstream"]["bootstrap"]["samples"] = 20
    params["vtt"].update(n=1, display_size=64)
    (dst / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_SITE_CACHE_DIR": str(dst / ".dvc/tmp/site-cache"),
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    run(["git", "init", "-q"], dst, env)
    run(["git", "add", "-A"], dst, env)
    run(["git", "commit", "-qm", "clone"], dst, env)
    return dst, env


def test_dvc_repro_runs_every_stage_then_nothing(fresh_clone):
    dst, env = fresh_clone
    first = run([sys.executable, "-m", "dvc", "repro"], dst, env)
    for stage in ("demo_data", "prepare", "extractor", "train_gan", "synthesize", "fidelity",
                  "downstream@cnn-real_synthetic-1.0-0", "downstream@xgboost-real-1.0-0", "downstream_summary",
                  "vtt_export"):
        assert f"Running stage '{stage}'" in first
    assert (dst / "data/prepared/images.npy").is_file() and (dst / "mlflow.db").is_file()
    assert (dst / "models/gan/generator.pt").is_file() and (dst / "reports/gan/losses.csv").is_file()
    assert json.loads((dst / "metrics/fidelity.json").read_text())["extractors"]["medaug-domain"]["overall"]["fid"] > 0
    plots = json.loads(run([sys.executable, "-m", "dvc", "plots", "show", "--json"], dst, env))["data"]
    values = plots["GAN losses"][0]["content"]["data"]["values"]
    assert {v["field"] for v in values} == {"loss_d", "loss_g"} and max(int(v["step"]) for v in values) == 6
    second = run([sys.executable, "-m", "dvc", "repro"], dst, env)
    assert "Running stage" not in second and "up to date" in second
    status = run(["git", "status", "--porcelain", "--untracked-files=no"], dst, env)
    assert status.strip() == "", status  # no tracked file (params, code) was touched
