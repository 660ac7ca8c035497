"""params.yaml loading with ``-S key=value`` overrides, in the grammar ``dvc exp run -S`` uses.

Overrides are parsed and applied by Hydra's override parser, through the same calls as DVC's own
``dvc.utils.hydra.apply_overrides``, so a stage run by hand and ``dvc exp run -S`` can never read an
override differently (tests/test_params.py compares the two). Forms:
  ``key.sub=value``   change an existing key (an unknown key is an error, which catches typos)
  ``+key.sub=value``  add a key that does not exist yet
  ``++key.sub=value`` set a key whether or not it exists
  ``~key.sub``        remove a key
``-S prepare.size=128``, ``-S 'prepare.split={train: 0.8, val: 0.1, test: 0.1}'`` and
``-S data.classes=[normal,pneumonia]`` give an int, a mapping and a list.
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


def _strip_file(override: str) -> str:
    """DVC's ``params.yaml:key=value`` form names the file; there is one params file here."""
    head = override.split("=", 1)[0]
    if ":" in head:
        fname, rest = override.split(":", 1)
        if Path(fname.lstrip("+~")).name != "params.yaml":
            raise ParamsError(f"override {override!r} names {fname!r}; only params.yaml exists")
        return fname[: len(fname) - len(fname.lstrip("+~"))] + rest
    return override


def apply_overrides(params: dict, overrides: Sequence[str]) -> dict:
    """``params`` with ``overrides`` applied in order, as ``dvc exp run -S`` applies them to params.yaml."""
    if not overrides:
        return copy.deepcopy(params)
    from dvc.utils.collections import to_omegaconf
    from dvc.utils.hydra import to_hydra_overrides
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.errors import ConfigCompositionException, OverrideParseException
    from omegaconf import OmegaConf

    try:
        parsed = to_hydra_overrides([_strip_file(override) for override in overrides])
        config = OmegaConf.create(to_omegaconf(copy.deepcopy(params)), flags={"allow_objects": True})
        OmegaConf.set_struct(config, True)  # an unknown key is an error, as in DVC
        ConfigLoaderImpl._apply_overrides_to_config(parsed, config)
        return OmegaConf.to_object(config)
    except (ConfigCompositionException, OverrideParseException) as e:
        raise ParamsError(f"override {' '.join(map(repr, overrides))}: {e}; keys at the top: {sorted(params)}") from e


def apply_override(params: dict, override: str) -> None:
    """Apply one ``-S`` override to ``params`` in place."""
    new = apply_overrides(params, [override])
    params.clear()
    params.update(new)


def load_params(path: str | Path = "params.yaml", overrides: Sequence[str] = ()) -> dict:
    """Read ``path`` and apply ``overrides`` in order."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file {path} not found; run from the project root or pass --params")
    return apply_overrides(yaml.safe_load(path.read_text()) or {}, overrides)


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
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.root / path


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
