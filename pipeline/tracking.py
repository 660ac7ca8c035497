"""MLflow tracking shared by every stage.

One parent run per pipeline execution, one child run per stage that executes in it. DVC runs each stage
as its own process and skips stages whose inputs did not change, so an execution is identified by what
decides its results: the params (after ``-S`` overrides), the git commit, any uncommitted change to code
or to dvc.yaml, and the DVC experiment name. Every stage computes that key, finds the open parent run
tagged with it (or creates it, logging all params as dotted keys), and starts its own child run under it.
``dvc repro`` after a code or params change therefore opens a new parent; ``dvc exp run -S ...`` variants
each get their own; re-running the same configuration adds child runs to the same parent. The ``report``
stage, last, puts the headline metrics on the parent (``log_to_parent``).

Where runs go: ``mlflow.tracking_uri`` (a team's server: ``http://host:5000``). The ``MLFLOW_TRACKING_URI``
environment variable is not read: ``mlflow.set_tracking_uri`` sets it in the process, so it would carry one
run's database into the next. A relative ``sqlite:///`` path is taken from the DVC project root: ``DVC_ROOT``,
which DVC sets to the main workspace also for queued experiments running in ``.dvc/tmp/exps/``, so those
land in the same database as ``dvc repro`` in the workspace.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from pipeline.params import flatten
from pipeline.prepared import dataset_hash

KEY_TAG = "pipeline_key"
STAGE_TAG = "stage"
DATA_TAG = "data_hash"
PARENT_TAG = "mlflow.parentRunId"


def project_root(root: Path) -> Path:
    """The DVC project's main workspace: ``DVC_ROOT`` (DVC sets it, also in a queued experiment's temporary
    copy), else ``root``."""
    return Path(os.environ.get("DVC_ROOT") or root)


def resolve_tracking_uri(uri: str, root: Path) -> str:
    """``uri`` with a relative ``sqlite:///file.db`` made absolute against the project root
    (``project_root``); other URIs pass."""
    root = project_root(root)
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str((root / uri[len(prefix):]).resolve())
    return uri


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


CODE_PATHS = ("*.py", "*.html", "*.j2", "dvc.yaml", "pyproject.toml", "*.dvc")  # what decides a run, besides params


def git_state(root: Path) -> dict[str, str]:
    """Commit, and a hash of uncommitted changes to code (modules, page templates), pipeline definition and
    ``dvc add``-ed data pointers, new files not yet added included ("" when clean)."""
    commit = (_git(root, "rev-parse", "HEAD") or "").strip()
    diff = _git(root, "diff", "HEAD", "--", *CODE_PATHS) or ""
    new_files = _git(root, "ls-files", "--others", "--exclude-standard", "--", *CODE_PATHS) or ""
    for name in sorted(new_files.splitlines()):
        diff += f"\nnew file {name}\n" + (root / name).read_text(errors="replace")
    return {"commit": commit, "code_diff": hashlib.sha256(diff.encode()).hexdigest()[:16] if diff else ""}


def execution_key(params: dict, git: dict[str, str], exp_name: str) -> str:
    blob = json.dumps({"params": params, "git": git, "exp": exp_name}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def numeric_metrics(summary: dict, prefix: str = "") -> dict[str, float]:
    """Flatten a summary to the finite numbers in it (MLflow metrics), with dotted keys."""
    out: dict[str, float] = {}
    for k, v in flatten(summary, prefix).items():
        if isinstance(v, bool):
            v = int(v)
        if isinstance(v, (int, float)) and math.isfinite(v):
            out[k] = float(v)
    return out


@contextmanager
def stage_run(stage: str, params: dict, root: Path, stage_params: dict | None = None) -> Iterator[Any]:
    """Open the child run for ``stage`` under its execution's parent run; yields ``mlflow``.

    ``stage_params`` (default: all) are logged on the child as dotted keys. With ``mlflow.enabled: false``
    nothing is logged and ``None`` is yielded.
    """
    cfg = params.get("mlflow", {})
    if not cfg.get("enabled", True):
        yield None
        return
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = resolve_tracking_uri(cfg.get("tracking_uri", "sqlite:///mlflow.db"), root)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    name = cfg.get("experiment", "medaug")
    exp = client.get_experiment_by_name(name)
    if exp is None:
        artifacts = (project_root(root) / "mlartifacts").resolve().as_uri() if uri.startswith("sqlite:") else None
        # the kind tag makes MLflow 3's UI open the runs table (model training), not its GenAI overview
        exp_id = client.create_experiment(name, artifact_location=artifacts,
                                          tags={"mlflow.experimentKind": "custom_model_development"})
    else:
        exp_id = exp.experiment_id

    git = git_state(root)
    exp_name = os.environ.get("DVC_EXP_NAME", "")
    key = execution_key(params, git, exp_name)
    tags = {"mlflow.source.git.commit": git["commit"], "git_commit": git["commit"],
            "git_code_diff": git["code_diff"], "dvc_exp_name": exp_name, KEY_TAG: key}
    data_hash = dataset_hash(root / params.get("paths", {}).get("prepared", "data/prepared"))
    found = client.search_runs([exp_id], filter_string=f"tags.{KEY_TAG} = '{key}'", max_results=1,
                               order_by=["attributes.start_time ASC"])
    if found:
        parent_id = found[0].info.run_id
    else:
        label = exp_name or (git["commit"][:8] + ("+dirty" if git["code_diff"] else "") if git["commit"] else "")
        parent = client.create_run(exp_id, run_name=f"pipeline {label}".strip(), tags=tags)
        parent_id = parent.info.run_id
        mlflow.log_params({k: _param_value(v) for k, v in flatten(params).items()}, run_id=parent_id)
    if data_hash:  # the prepared data this stage saw (absent before prepare has run)
        client.set_tag(parent_id, DATA_TAG, data_hash)
        tags[DATA_TAG] = data_hash

    with mlflow.start_run(experiment_id=exp_id, run_name=stage, parent_run_id=parent_id,
                          tags={**tags, STAGE_TAG: stage}):
        logged = flatten(stage_params if stage_params is not None else params)
        mlflow.log_params({k: _param_value(v) for k, v in logged.items()})
        try:
            yield mlflow
        finally:
            client.set_terminated(parent_id)


def log_to_parent(ml: Any, metrics: dict[str, float], artifacts: list[Path] = ()) -> str:
    """Log ``metrics`` and ``artifacts`` (files) on the parent (pipeline) run of the active stage run; returns the
    parent's id."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client, parent_id = MlflowClient(), ml.active_run().data.tags[PARENT_TAG]
    now = int(time.time() * 1000)
    items = [Metric(k, v, now, 0) for k, v in metrics.items()]
    for i in range(0, len(items), 1000):  # MLflow's limit per batch
        client.log_batch(parent_id, metrics=items[i:i + 1000])
    for path in artifacts:
        client.log_artifact(parent_id, str(path))
    return parent_id


def _param_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)
