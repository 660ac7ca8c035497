"""dvc.yaml lists, for every stage, exactly the project code its command imports and exactly the params keys
it reads, both derived from the code (tests/deps.py), so `dvc repro` re-runs what a change can affect and
nothing else. A failure names what dvc.yaml lacks or lists needlessly, stage by stage."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib

import pytest
import yaml
from conftest import stage_args, tiny_params
from deps import (NOT_RESULT_PARAMS, PACKAGES, ROOT, RecordingDict, import_closure, leaves, module_file,
                  recording_params, result_params, stage_module)

pytestmark = pytest.mark.xdist_group("deps-project")


def test_the_packages_followed_are_the_ones_pyproject_installs():
    """common.PACKAGES bounds the import closures below and the GAN's run key: a package added to pyproject.toml
    but not there would be code no stage lists as a dep."""
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert sorted(PACKAGES) == sorted(packages)


def dvc_stages() -> dict[str, dict]:
    """Stage (matrix arms share one definition: the first arm stands for them) -> module, code, params."""
    from dvc.repo import Repo

    out: dict[str, dict] = {}
    with Repo(str(ROOT)) as repo:
        for stage in repo.index.stages:
            code, params = set(), set()
            for dep in stage.deps:
                if hasattr(dep, "params"):
                    params.update(dep.params)
                elif dep.def_path.split("/")[0] in PACKAGES:
                    code.add(dep.def_path)
            out.setdefault(stage.name.split("@")[0], {"module": stage_module(stage.cmd), "code": code,
                                                      "params": params, "arm": stage.name})
    return out


def describe(problems: dict[str, tuple[set, set]], what: str) -> str:
    lines = [f"dvc.yaml's {what} differ from what the code does:"]
    for stage, (lacks, needless) in sorted(problems.items()):
        if lacks:
            lines.append(f"  {stage}: lacks {sorted(lacks)}")
        if needless:
            lines.append(f"  {stage}: lists needlessly {sorted(needless)}")
    return "\n".join(lines)


def code_problems(stages: dict[str, dict]) -> dict[str, tuple[set, set]]:
    problems = {}
    for name, s in stages.items():
        declared = set(s["code"])  # modules and the data files they read (a template, the reader page)
        imported = import_closure(s["module"])
        if declared != imported:
            problems[name] = (imported - declared, declared - imported)
    return problems


def test_every_stage_lists_exactly_the_code_it_imports():
    stages = dvc_stages()
    assert {"prepare", "train_gan", "downstream_cnn_real", "report"} <= set(stages)
    problems = code_problems(stages)
    assert not problems, describe(problems, "code deps") + "\n(`python tests/deps.py` prints each closure)"
    for s in stages.values():  # the non-Python project files a stage lists exist
        assert all((ROOT / f).is_file() for f in s["code"]), s


def test_no_stage_module_imports_another_stage_module():
    """What two stages share lives in a library module or a non-stage helper in pipeline/ (issue 19): a stage
    importing another stage depends on all of its code and reads top to bottom through two entry points.
    ``python -m pipeline.vtt_score`` (a command, not a stage) is held to the same rule."""
    stage_files = {module_file(s["module"]).relative_to(ROOT).as_posix(): s["module"] for s in dvc_stages().values()}
    stage_files["pipeline/vtt_score.py"] = "pipeline.vtt_score"
    found = {}
    for path, module in stage_files.items():
        others = sorted(import_closure(module) & set(stage_files) - {path})
        if others:
            found[module] = others
    assert not found, f"stage modules importing other stage modules: {found}"


def test_the_code_check_fails_when_a_real_dependency_is_removed():
    """The check above can fail: drop one imported module from a stage and it is named."""
    stages = dvc_stages()
    stages["synthesize"]["code"].discard("common/seeding.py")
    stages["report"]["code"].add("dcgan/train.py")
    problems = code_problems(stages)
    assert problems == {"synthesize": ({"common/seeding.py"}, set()), "report": (set(), {"dcgan/train.py"})}


def test_the_import_walk_follows_imports_inside_functions():
    # synthesize imports imaging.dicom_write inside main(), only when DICOM copies are asked for
    assert "imaging/dicom_write.py" in import_closure("pipeline.synthesize")
    # through other modules: every stage reaches common/seeding.py or pipeline/params.py via its imports
    assert {"pipeline/params.py", "pipeline/__init__.py"} <= import_closure("pipeline.fidelity")


def test_a_template_a_stage_reads_is_one_of_its_deps():
    """Data files a module reads from its own package are in the closure, so dvc.yaml must list them."""
    assert "pipeline/report_page.html.j2" in import_closure("pipeline.report")
    assert "evaluation/vtt_reader.html" in import_closure("pipeline.vtt_export")
    assert not any(f.endswith((".html", ".j2")) for f in import_closure("pipeline.prepare"))
    stages = dvc_stages()
    stages["report"]["code"].discard("pipeline/report_page.html.j2")
    assert code_problems(stages) == {"report": ({"pipeline/report_page.html.j2"}, set())}


# ------------------------------------------------------------------ params

@pytest.fixture(scope="module")
def stage_reads(tmp_path_factory, demo_archive):
    """Every stage run in-process on tiny data with MLflow off, recording the params keys each one reads."""
    from pipeline import (demo_data, downstream, downstream_summary, fidelity, prepare, report, synthesize,
                          train_extractor, train_gan, vtt_export)

    project = tiny_params(tmp_path_factory.mktemp("deps"), demo_archive,
                          mlflow=dict(enabled=False),
                          demo=dict(patients=4, images_per_patient=[2, 2], sizes=[64]),
                          gan=dict(width=0.25, steps=4, batch=8, log_every=2, checkpoint_every=2, fid_every=2,
                                   fid_samples=16, grid_every=1),
                          extractor=dict(width=4, dim=16, steps=5, batch=16),
                          fidelity=dict(kid_subsets=5, inception_weights="no-such-file.pth", pairs=4),
                          downstream=dict(arms=dict(cnn=dict(real=["real"], synthetic=["real_synthetic"]),
                                                    xgboost=dict(real=["real"], synthetic=["real_synthetic"])),
                                          fractions=[1.0], seeds=[0], cnn=dict(width=4, epochs=1, batch=16),
                                          xgboost=dict(n_estimators=5), bootstrap=dict(samples=10)),
                          vtt=dict(n=2, display_size=64))
    a = stage_args(project)
    runs = {"demo_data": (demo_data, a + ["-S", f"paths.demo={project / 'demo'}"]), "prepare": (prepare, a),
            "extractor": (train_extractor, a), "train_gan": (train_gan, a), "synthesize": (synthesize, a),
            "fidelity": (fidelity, a)}
    for clf in ("cnn", "xgboost"):
        for group, ts in (("real", "real"), ("synthetic", "real_synthetic")):
            runs[f"downstream_{clf}_{group}"] = (downstream, [*a, "--group", group, "--arm", clf, ts, "1.0", "0"])
    runs.update(downstream_summary=(downstream_summary, a), vtt_export=(vtt_export, a), report=(report, a))
    read = {}
    with pytest.MonkeyPatch.context() as mp, recording_params(mp) as log:
        for name, (module, argv) in runs.items():
            log.clear()
            module.main(argv)
            read[name] = set(log)
    return read


@pytest.fixture(scope="module")
def params_read(stage_reads):
    return {name: result_params(read) for name, read in stage_reads.items()}


def test_every_stage_lists_exactly_the_params_it_reads(params_read):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    stages = dvc_stages()
    assert set(params_read) == set(stages)
    problems = {}
    for name, s in stages.items():
        declared = set()
        for key in s["params"]:
            node = params
            for part in key.split("."):
                node = node[part]
            declared |= {f"{key}.{k}" for k in leaves(node)} if isinstance(node, dict) else {key}
        assert not {k for k in declared if k.split(".")[0] in NOT_RESULT_PARAMS}, name
        if declared != params_read[name]:
            problems[name] = (params_read[name] - declared, declared - params_read[name])
    assert not problems, describe(problems, "params")


# paths a stage reads but does not declare, on purpose: train_gan's checkpoints (README "Training the GAN": not a
# DVC out, so that DVC's run cache can restore the stage; the run key inside the checkpoint guards a resume)
UNDECLARED_PATHS = {"train_gan": {"gan_work"}}


def test_every_path_a_stage_reads_is_a_declared_dep_or_out(stage_reads):
    """A stage that reads paths.synthetic without listing ${paths.synthetic} would not rerun when the synthetic
    set changes: every paths.* key a stage reads is named in its deps, outs, metrics or plots."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    problems = {}
    for name, read in stage_reads.items():
        entries = [e if isinstance(e, str) else next(iter(e)) for field in ("deps", "outs", "metrics", "plots")
                   for e in stages[name].get(field) or []]
        declared = {m for e in entries for m in re.findall(r"\$\{paths\.(\w+)\}", e)}
        used = {k.split(".")[1] for k in read if k.startswith("paths.")} - UNDECLARED_PATHS.get(name, set())
        if used - declared:
            problems[name] = (used - declared, set())
    assert not problems, describe(problems, "data deps and outs")
    assert "synthetic" in {k.split(".")[1] for k in stage_reads["downstream_cnn_synthetic"] if k.startswith("paths.")}


def test_a_default_for_a_key_params_yaml_lacks_is_a_read():
    """``.get(key, default)`` of a key params.yaml does not have hides the default in the code: it is recorded, so
    the params test names it (put the key in params.yaml and the stage's params)."""
    log: set[str] = set()
    params = RecordingDict({"gan": {"steps": 4}}, "", log)
    assert params["gan"].get("warmup", 0) == 0 and params["gan"].get("steps") == 4
    assert log == {"gan.warmup", "gan.steps"}


def test_a_params_read_is_recorded(params_read):
    """The recorder sees reads through sections and copies: these are reads the stages are known to make."""
    assert "gan.lr_d" in params_read["train_gan"] and "base.seed" in params_read["train_gan"]
    assert "downstream.cnn.epochs" in params_read["downstream_cnn_real"]
    assert not any(k.startswith("downstream.xgboost.") for k in params_read["downstream_cnn_real"])


def test_stage_glue_functions_stay_short():
    """Stage glue reads top to bottom (issue 19): no function in pipeline/ over 60 lines (tools/function_lengths.py
    lists them, longest first)."""
    sys.path.insert(0, str(ROOT / "tools"))
    from function_lengths import lengths, sources

    long = [(n, name) for n, name in lengths(sources("pipeline", None)) if n > 60]
    assert not long, f"functions in pipeline/ over 60 lines: {long}"


def test_function_lengths_reads_a_revision_like_the_working_tree(tmp_path):
    """The before/after figures of tools/function_lengths.py: a git revision is read like the working tree."""
    sys.path.insert(0, str(ROOT / "tools"))
    from function_lengths import main

    out = tmp_path / "lengths.json"
    tree, head = main(["--rev", "", "HEAD", "--top", "2", "--json", str(out)])
    written = json.loads(out.read_text())
    assert written["revs"][1]["rev"] == subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                                                      capture_output=True, check=True).stdout.strip()
    assert written["revs"][0] == tree and tree["rev"] == "working tree"
    if not subprocess.run(["git", "status", "--porcelain", "pipeline/"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout:
        assert head["functions"] == tree["functions"] and head["longest"] == tree["longest"]
    assert tree["over_limit"] == 0 and len(tree["longest"]) == 2
    assert tree["longest"][0]["lines"] >= tree["longest"][1]["lines"]
