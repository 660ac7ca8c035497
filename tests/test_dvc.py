"""`dvc repro` on a fresh copy of the project runs every stage and a second run does nothing; `dvc exp run -S`
variants (one in the workspace, one through the DVC queue) then show as comparable MLflow parent runs, and
`dvc metrics`/`dvc plots` read the same files. The tests share one reproduced project (one xdist group)."""
import json
import os
import shutil
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.xdist_group("dvc-project")


def run(cmd, cwd, env):
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout + out.stderr


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory):
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not files:
        pytest.skip("not a git checkout")
    dst = tmp_path_factory.mktemp("dvc") / "clone"
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


@pytest.fixture(scope="module")
def reproduced(fresh_clone):
    dst, env = fresh_clone
    return dst, env, run([sys.executable, "-m", "dvc", "repro"], dst, env)


def test_dvc_repro_runs_every_stage_then_nothing(reproduced):
    dst, env, first = reproduced
    for stage in ("demo_data", "prepare", "extractor", "train_gan", "synthesize", "fidelity",
                  "downstream_cnn_synthetic@cnn-real_synthetic-1.0-0", "downstream_xgboost_real@xgboost-real-1.0-0", "downstream_summary",
                  "vtt_export", "report"):
        assert f"Running stage '{stage}'" in first
    assert (dst / "data/prepared/images.npy").is_file() and (dst / "mlflow.db").is_file()
    assert (dst / "models/gan/generator.pt").is_file() and (dst / "reports/gan/losses.csv").is_file()
    assert (dst / "reports/index.html").is_file()
    assert json.loads((dst / "metrics/fidelity.json").read_text())["extractors"]["medaug-domain"]["overall"]["fid"] > 0
    plots = json.loads(run([sys.executable, "-m", "dvc", "plots", "show", "--json"], dst, env))["data"]
    values = plots["GAN losses"][0]["content"]["data"]["values"]
    assert {v["field"] for v in values} == {"loss_d", "loss_g"} and max(int(v["step"]) for v in values) == 6
    second = run([sys.executable, "-m", "dvc", "repro"], dst, env)
    assert "Running stage" not in second and "up to date" in second
    status = run(["git", "status", "--porcelain", "--untracked-files=no"], dst, env)
    assert status.strip() == "", status  # no tracked file (params, code) was touched


def dvc(dst, env, *args):
    return run([sys.executable, "-m", "dvc", *args], dst, env)


def test_exp_variants_are_two_comparable_parent_runs(reproduced, tmp_path):
    from mlflow.tracking import MlflowClient

    # a copy (git, DVC cache, mlflow.db and all), so the other test sees the reproduced workspace untouched
    dst = shutil.copytree(reproduced[0], tmp_path / "clone", symlinks=True)
    env = {**reproduced[1], "DVC_SITE_CACHE_DIR": str(dst / ".dvc/tmp/site-cache")}
    run(["git", "add", "-A"], dst, env)                   # the baseline's dvc.lock, so metrics can be diffed
    run(["git", "commit", "-qm", "baseline"], dst, env)
    head = run(["git", "rev-parse", "HEAD"], dst, env).strip()
    dvc(dst, env, "exp", "run", "-n", "lrd-1e-4", "-S", "gan.lr_d=1e-4")
    dvc(dst, env, "exp", "run", "--queue", "-n", "lrd-3e-4", "-S", "gan.lr_d=3e-4")
    dvc(dst, env, "queue", "start", "-j", "1")
    deadline = time.time() + 600
    while time.time() < deadline:                         # queued runs go on in background workers
        status = dvc(dst, env, "queue", "status")
        if "Success" in status or "Failed" in status:
            break
        time.sleep(3)
    assert "Success" in status, status + dvc(dst, env, "queue", "logs", "lrd-3e-4")

    client = MlflowClient(f"sqlite:///{dst / 'mlflow.db'}")  # the queued run wrote here too, not in its tmp dir
    exp = client.get_experiment_by_name("medaug")
    parents = {r.data.tags.get("dvc_exp_name"): r for r in client.search_runs([exp.experiment_id])
               if "mlflow.parentRunId" not in r.data.tags}
    assert {"lrd-1e-4", "lrd-3e-4"} <= set(parents), parents.keys()
    a, b = parents["lrd-1e-4"], parents["lrd-3e-4"]
    assert (a.data.params["gan.lr_d"], b.data.params["gan.lr_d"]) == ("0.0001", "0.0003")
    assert a.data.params["gan.lr_g"] == b.data.params["gan.lr_g"]
    for r in (a, b):                                      # same code and data, the headline metrics on both
        assert r.data.tags["git_commit"] == head and r.data.tags["data_hash"] == parents[""].data.tags["data_hash"]
        for m in ("fidelity.medaug-domain.fid", "fidelity.medaug-domain.relative_fid", "memorisation.features."
                  "synthetic_below", "downstream.cnn.fraction_1.0.real_synthetic-real.accuracy"):
            assert m in r.data.metrics, m
        stages = {c.data.tags["stage"] for c in client.search_runs(
            [exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{r.info.run_id}'")}
        assert {"train_gan", "fidelity", "report"} <= stages and "prepare" not in stages  # cached: not re-run
    assert a.data.metrics["fidelity.medaug-domain.fid"] != b.data.metrics["fidelity.medaug-domain.fid"]

    shown = json.loads(dvc(dst, env, "metrics", "show", "--json"))
    assert "reports/summary.json" in json.dumps(shown)
    diff = json.loads(dvc(dst, env, "metrics", "diff", "--json"))   # HEAD (baseline) vs workspace (lrd-1e-4)
    assert any(k.startswith("fidelity.medaug-domain") for k in diff["reports/summary.json"])
    exps = json.loads(dvc(dst, env, "exp", "show", "--json"))
    assert {"lrd-1e-4", "lrd-3e-4"} <= set(re.findall(r'"name": "([^"]+)"', json.dumps(exps)))
    plots = json.loads(dvc(dst, env, "plots", "diff", "--json"))
    assert "GAN losses" in plots["data"]


def copy_of(reproduced, folder: Path) -> tuple[Path, dict]:
    """A copy of the reproduced project (git, DVC cache and all) in another folder."""
    dst = shutil.copytree(reproduced[0], folder, symlinks=True)
    return dst, {**reproduced[1], "DVC_SITE_CACHE_DIR": str(dst / ".dvc/tmp/site-cache")}


def ran_stages(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def test_forced_rerun_in_another_folder_writes_byte_identical_outputs(reproduced, tmp_path):
    """Every stage, re-run from scratch in a folder with another path, writes the same bytes: dvc.lock (the
    hash of every out) is unchanged."""
    dst, env = copy_of(reproduced, tmp_path / "elsewhere" / "deeper")
    before = (dst / "dvc.lock").read_text()
    out = dvc(dst, env, "repro", "--force")
    assert "report" in ran_stages(out) and "prepare" in ran_stages(out)
    after = (dst / "dvc.lock").read_text()
    if after != before:
        import difflib
        pytest.fail("outputs changed on a forced re-run:\n" + "".join(difflib.unified_diff(
            before.splitlines(True), after.splitlines(True), "before", "after", n=2))[:4000])


def test_dvc_push_sends_the_blinded_set_but_never_the_vtt_key(reproduced, tmp_path):
    """The answer key is cached locally (so dvc checks it out) but is a push: false out: a shared remote that
    readers may reach never holds it, with the run cache pushed too (its entries hold out hashes, not files)."""
    dst, env = copy_of(reproduced, tmp_path / "clone")
    remote = tmp_path / "remote"
    dvc(dst, env, "remote", "add", "--local", "-d", "shared", str(remote))
    dvc(dst, env, "push", "--run-cache")
    outs = {o["path"]: o["md5"] for o in yaml.safe_load((dst / "dvc.lock").read_text())["stages"]["vtt_export"]["outs"]}
    pushed = {p.parent.name + p.name for p in remote.rglob("*") if p.is_file()}
    assert outs["exports/vtt/summary.json"] in pushed and outs["exports/vtt/blinded"] in pushed   # <md5>.dir
    assert any((remote / "runs").rglob("*")) and outs["exports/vtt/key.csv"] not in pushed
    assert (dst / ".dvc/cache/files/md5" / outs["exports/vtt/key.csv"][:2] / outs["exports/vtt/key.csv"][2:]).is_file()


def test_a_comment_in_prepare_reruns_prepare_alone(reproduced, tmp_path):
    dst, env = copy_of(reproduced, tmp_path / "clone")
    code = dst / "pipeline/prepare.py"
    code.write_text(code.read_text() + "\n# a harmless comment\n")
    out = dvc(dst, env, "repro")
    assert ran_stages(out) == ["prepare"], out
    # the later stages were checked and skipped: prepare wrote the same outputs
    for stage in ("extractor", "train_gan", "downstream_summary", "report"):
        assert f"Stage '{stage}' didn't change, skipping" in out, out


@pytest.mark.slow
def test_editing_a_module_marks_exactly_the_stages_that_import_it(reproduced, tmp_path):
    """For every project module: a comment appended makes `dvc status` name exactly the stages whose
    import closure holds it (tests/deps.py), no more and no fewer."""
    from deps import PACKAGES, import_closure, stage_module

    dst, env = copy_of(reproduced, tmp_path / "clone")
    from dvc.repo import Repo
    with Repo(str(dst)) as repo:
        commands = {s.name: stage_module(s.cmd) for s in repo.index.stages}
    closures = {name: import_closure(module) for name, module in commands.items()}
    modules = sorted(p.relative_to(ROOT).as_posix() for pkg in PACKAGES for p in (ROOT / pkg).glob("*.py"))
    wrong = {}
    for module in modules:
        path = dst / module
        original = path.read_text()
        path.write_text(original + "\n# a harmless comment\n")
        try:
            out = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=dst, env=env,
                                 capture_output=True, text=True, timeout=600)
            status = json.loads(out.stdout or "{}")
        finally:
            path.write_text(original)
        expected = {name for name, files in closures.items() if module in files}
        if set(status) != expected:
            wrong[module] = {"needlessly": sorted(set(status) - expected), "missed": sorted(expected - set(status))}
    assert not wrong, json.dumps(wrong, indent=1)
