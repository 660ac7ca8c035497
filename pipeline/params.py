"""params.yaml loading with ``-S key=value`` overrides, in the grammar ``dvc exp run -S`` uses.

Override forms (Hydra's, as DVC passes them on):
  ``key.sub=value``   change an existing key (an unknown key is an error, which catches typos)
  ``+key.sub=value``  add a key that does not exist yet
  ``++key.sub=value`` set a key whether or not it exists
  ``~key.sub``        remove a key
Values are parsed as YAML, so ``-S prepare.size=128``, ``-S 'prepare.split={train: 0.8, val: 0.1, test: 0.1}'``
and ``-S data.classes=[normal,pneumonia]`` give an int, a mapping and a list.
"""
from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml


class ParamsError(ValueError):
    """A params file or an override that cannot be applied."""


def apply_override(params: dict, override: str) -> None:
    """Apply one ``-S`` override to ``params`` in place."""
    text = override.strip()
    if text.startswith("~"):
        mode, text = "delete", text[1:]
        key, value = text.split("=", 1)[0], None
    else:
        if text.startswith("++"):
            mode, text = "force", text[2:]
        elif text.startswith("+"):
            mode, text = "add", text[1:]
        else:
            mode = "set"
        if "=" not in text:
            raise ParamsError(f"override {override!r} is not of the form key=value")
        key, raw = text.split("=", 1)
        value = yaml.safe_load(raw) if raw.strip() else ""
    if ":" in key:  # DVC's "params.yaml:key" file prefix; there is one params file here
        fname, key = key.split(":", 1)
        if Path(fname).name != "params.yaml":
            raise ParamsError(f"override {override!r} names {fname!r}; only params.yaml exists")
    parts = key.strip().split(".")
    node = params
    for i, part in enumerate(parts[:-1]):
        if part not in node:
            if mode in ("add", "force"):
                node[part] = {}
            else:
                raise ParamsError(f"override {override!r}: no key {'.'.join(parts[: i + 1])!r} in params")
        node = node[part]
        if not isinstance(node, dict):
            raise ParamsError(f"override {override!r}: {'.'.join(parts[: i + 1])!r} is not a mapping")
    leaf = parts[-1]
    if mode == "delete":
        if leaf not in node:
            raise ParamsError(f"override {override!r}: no key {key!r} to remove")
        del node[leaf]
    elif mode == "set" and leaf not in node:
        raise ParamsError(
            f"override {override!r}: no key {key!r} in params (use +{key}=... to add a new key); "
            f"keys here: {sorted(node)}"
        )
    elif mode == "add" and leaf in node:
        raise ParamsError(f"override {override!r}: {key!r} exists already (drop the '+' to change it)")
    else:
        node[leaf] = value


def load_params(path: str | Path = "params.yaml", overrides: Sequence[str] = ()) -> dict:
    """Read ``path`` and apply ``overrides`` in order."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file {path} not found; run from the project root or pass --params")
    params = yaml.safe_load(path.read_text()) or {}
    params = copy.deepcopy(params)
    for ov in overrides:
        apply_override(params, ov)
    return params


def flatten(params: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


@dataclass
class StageArgs:
    params: dict
    root: Path  # folder of the params file: relative paths in params are taken from here
    extra: argparse.Namespace | None = None  # a command's own arguments (add_arguments)

    def path(self, value: str | Path) -> Path:
        """A params path made absolute against the project root."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.root / p


def parse_stage_args(description: str, argv: Sequence[str] | None = None, add_arguments=None) -> StageArgs:
    """The command line every stage shares: ``--params FILE`` and repeated ``-S key=value``;
    ``add_arguments(parser)`` adds a command's own (their values land in ``StageArgs.extra``)."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    if add_arguments:
        add_arguments(ap)
    ap.add_argument("--params", default="params.yaml", help="params file (default: ./params.yaml)")
    ap.add_argument("-S", "--set-param", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a params.yaml key, as with `dvc exp run -S` (repeatable)")
    ns = ap.parse_args(argv)
    try:
        params = load_params(ns.params, ns.overrides)
    except ParamsError as e:
        ap.error(str(e))
    return StageArgs(params=params, root=Path(ns.params).resolve().parent, extra=ns)
