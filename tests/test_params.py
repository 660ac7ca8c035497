import pytest

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
    ("a.typo=1", "no key 'a.typo'"),
    ("x.y=1", "no key 'x'"),
    ("+a.b=1", "exists already"),
    ("a.b", "not of the form"),
    ("other.yaml:a.b=1", "only params.yaml"),
    ("~a.zzz", "no key"),
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
