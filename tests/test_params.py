import pytest
import yaml

from pipeline.params import ParamsError, apply_override, flatten, load_params


def base():
    return {"a": {"b": 1, "c": [1, 2]}, "s": "x"}


@pytest.mark.parametrize("override, key, expected", [
    ("a.b=5", ("a", "b"), 5),
    ("a.b=0.5", ("a", "b"), 0.5),
    ("s=hello world", ("s",), "hello world"),
    ("a.c=[3,4]", ("a", "c"), [3, 4]),
    ("a.b={x: 1}", ("a", "b"), {"x": 1}),
    ("params.yaml:a.b=true", ("a", "b"), True),
    ("+a.new=7", ("a", "new"), 7),
    ("++a.b=9", ("a", "b"), 9),
    ("++z.y=1", ("z", "y"), 1),
])
def test_override_forms(override, key, expected):
    p = base()
    apply_override(p, override)
    node = p
    for k in key:
        node = node[k]
    assert node == expected


def test_delete_override():
    p = base()
    apply_override(p, "~a.b")
    assert "b" not in p["a"]


@pytest.mark.parametrize("override, message", [
    ("a.typo=1", "Could not override 'a.typo'"),
    ("x.y=1", "Could not override 'x.y'"),
    ("+a.b=1", "An item is already at 'a.b'"),
    ("a.b", "missing EQUAL"),
    ("other.yaml:a.b=1", "only params.yaml"),
    ("~a.zzz", "'a.zzz' does not exist"),
])
def test_bad_overrides_say_what_is_wrong(override, message):
    with pytest.raises(ParamsError, match=message):
        apply_override(base(), override)


def test_load_params_applies_overrides_in_order(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("a:\n  b: 1\n")
    assert load_params(f, ["a.b=2", "a.b=3"]) == {"a": {"b": 3}}
    assert load_params(f) == {"a": {"b": 1}}


def test_flatten_uses_dotted_keys():
    assert flatten(base()) == {"a.b": 1, "a.c": [1, 2], "s": "x"}


@pytest.mark.parametrize("overrides", [
    ["a.b=5", "s=hello world"], ["a.c=[3,4]", "a.b={x: 1}", "+a.new=7"], ["++z.y=1e-4", "~a.b"],
    ["params.yaml:a.b=true"], ["a.b=null", "s='quoted, with a comma'"], ["a.c=[]", "s=2.0e-4"],
])
def test_overrides_read_exactly_as_dvc_exp_run_reads_them(tmp_path, overrides):
    """`dvc exp run -S` rewrites params.yaml with dvc.utils.hydra.apply_overrides: ours gives the same."""
    from dvc.utils.hydra import apply_overrides as dvc_apply

    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(base()))
    ours = load_params(f, overrides)
    dvc_apply(f, [o.removeprefix("params.yaml:") for o in overrides])   # DVC strips the file prefix first
    assert ours == yaml.safe_load(f.read_text())
