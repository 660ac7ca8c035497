"""What each DVC stage really depends on, derived from the code: the project modules its command imports
(directly or through other project modules, at any depth, including imports inside functions), the data files
those modules read from their own package (a template, a reader page: a string in the module that names a
file beside it), and the params.yaml keys it reads (recorded while the stage runs). tests/test_dvc_deps.py compares both with dvc.yaml.

    python -m tests.deps      # prints every stage's import closure, ready to paste into dvc.yaml
"""
from __future__ import annotations

import ast
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from common import PACKAGES

ROOT = Path(__file__).resolve().parents[1]
# Sections that are not inputs of a stage's results: where files live (DVC tracks those paths as deps and
# outs themselves) and where MLflow logs go.
NOT_RESULT_PARAMS = ("paths", "mlflow")


def module_file(name: str) -> Path | None:
    """The project file of module ``name`` (``a.b`` -> a/b.py or a/b/__init__.py), or None if not ours."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported_names(path: Path) -> set[str]:
    """Module names that ``path`` imports anywhere in its body (``from a import b`` yields ``a`` and, when it
    is a module, ``a.b``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _package_data(path: Path) -> set[Path]:
    """Non-Python files beside ``path`` that it names in a string (``TEMPLATE = "report_page.html.j2"``,
    ``resources.files("evaluation").joinpath("vtt_reader.html")``): files the module reads at run time."""
    beside = {p.name: p for p in path.parent.iterdir() if p.is_file() and p.suffix not in (".py", ".pyc")}
    return {beside[node.value] for node in ast.walk(ast.parse(path.read_text(), str(path)))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in beside}


def import_closure(module: str) -> set[str]:
    """Project files (relative posix paths) that importing ``module`` executes, packages' __init__ included,
    and the data files those modules read from their own package (``_package_data``)."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        # importing a.b.c runs a/__init__.py and a/b/__init__.py first
        for i in range(1, len(parts) + 1):
            path = module_file(".".join(parts[:i]))
            if path is not None and path not in seen:
                seen.add(path)
                todo.extend(_imported_names(path))
    seen |= {data for path in list(seen) for data in _package_data(path)}
    return {p.relative_to(ROOT).as_posix() for p in seen}


def stage_module(cmd: str) -> str:
    """``python -m pipeline.x --arm ...`` -> ``pipeline.x``."""
    words = cmd.split()
    if words[:2] != ["python", "-m"]:
        raise ValueError(f"stage command {cmd!r} is not `python -m <module> ...`")
    return words[2]


# ------------------------------------------------------------------ params actually read

def leaves(tree: dict, prefix: str = "") -> set[str]:
    out: set[str] = set()
    for k, v in dict.items(tree):  # dict's own items(): reading the tree here records nothing
        key = f"{prefix}{k}"
        out |= leaves(v, key + ".") if isinstance(v, dict) and v else {key}
    return out


class RecordingDict(dict):
    """A params mapping that records the dotted key of every leaf read through it. Reading a whole mapping
    (iterating it, items(), values(), copying, dumping it) counts as reading every leaf under it."""

    def __init__(self, data: dict, prefix: str, log: set[str]):
        super().__init__({k: RecordingDict(v, f"{prefix}{k}.", log) if isinstance(v, dict) and v else v
                          for k, v in data.items()})  # an empty mapping is a leaf, as in leaves()
        self._prefix, self._log = prefix, log

    def _read(self, key) -> None:
        value = dict.get(self, key)
        if isinstance(value, RecordingDict):
            return  # reading a section is not reading its leaves; what is then read of it counts
        self._log.add(f"{self._prefix}{key}")

    def _read_all(self) -> None:
        self._log.update(f"{self._prefix}{k}" for k in leaves(self))

    def __getitem__(self, key):
        self._read(key)
        return dict.__getitem__(self, key)

    def get(self, key, default=None):
        # a key params.yaml lacks is recorded too: its default is in the code, where DVC cannot see it, and a
        # value set later would not rerun a stage that lists only the keys params.yaml had
        self._read(key)
        return dict.get(self, key, default)

    def __iter__(self):
        self._read_all()
        return dict.__iter__(self)

    def keys(self):
        self._read_all()
        return dict.keys(self)

    def items(self):
        self._read_all()
        return dict.items(self)

    def values(self):
        self._read_all()
        return dict.values(self)

    def copy(self):
        self._read_all()
        return dict(self)

    def __deepcopy__(self, memo):
        self._read_all()
        import copy
        return copy.deepcopy(dict(dict.items(self)), memo)


@contextmanager
def recording_params(monkeypatch) -> Iterator[set[str]]:
    """While active, every stage's params (pipeline.params.load_params) record their reads into the set
    yielded; clear it between stages."""
    import pipeline.params as P

    log: set[str] = set()
    real = P.load_params

    def load(*args, **kwargs):
        return RecordingDict(real(*args, **kwargs), "", log)

    monkeypatch.setattr(P, "load_params", load)
    yield log


def result_params(read: set[str]) -> set[str]:
    return {k for k in read if k.split(".")[0] not in NOT_RESULT_PARAMS}


def main() -> None:
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        seen = set()
        for stage in repo.index.stages:
            module = stage_module(stage.cmd)
            name = stage.name.split("@")[0]
            if name in seen:
                continue
            seen.add(name)
            print(f"{name}:")
            for f in sorted(import_closure(module)):
                print(f"      - {f}")


if __name__ == "__main__":
    main()
