"""The visual Turing test library (evaluation/vtt.py): response checks, scoring against hand-computed values,
kappa helpers, and blinding that carries no information and follows every image and the secret."""
import csv
import io
import re

import numpy as np
import pytest
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from evaluation import vtt


# ---- scoring on fixed response files ------------------------------------------------------------------------
KEY_ROWS = [{"id": f"r{i}", "truth": "real", "label_name": "normal", "origin": "x", "salt": "00"} for i in range(1, 5)] \
    + [{"id": f"s{i}", "truth": "synthetic", "label_name": "normal", "origin": "x", "salt": "00"} for i in range(1, 5)]
KEY = vtt.read_key(vtt.key_text(KEY_ROWS))
TRUTH = {r["id"]: r["truth"] for r in KEY_ROWS}


def responses(reader, answers, conf=5, version="v1"):
    return [{"reader": reader, "key_version": version, "id": i, "answer": a,
             "confidence": str(conf if isinstance(conf, int) else conf[i]), "comment": ""} for i, a in answers.items()]


PERFECT = dict(TRUTH)
ALL_REAL = {i: "real" for i in TRUTH}
SWAPPED = {**TRUTH, "r1": "synthetic", "s1": "real"}


def test_perfect_reader():
    rows = vtt.check_responses("p.csv", responses("p", PERFECT), KEY, "v1")
    r = vtt.score({"p": rows})["readers"]["p"]
    assert r["accuracy"] == 1 and r["sensitivity_synthetic"] == 1 and r["specificity"] == 1
    assert r["binomial_p_vs_chance"] == pytest.approx(2 * 0.5**8)   # 8 of 8, two-sided
    assert r["realism_real_median"] == 10 and r["realism_synthetic_median"] == 1
    assert r["realism_mann_whitney_u"] == 16 and r["realism_mann_whitney_p"] < 0.05
    assert r["accuracy_by_confidence"]["5"] == {"n": 8, "accuracy": 1.0}


def test_reader_at_chance():
    rows = vtt.check_responses("c.csv", responses("c", ALL_REAL, conf=1), KEY, "v1")
    r = vtt.score({"c": rows})["readers"]["c"]
    assert r["accuracy"] == 0.5 and r["sensitivity_synthetic"] == 0 and r["specificity"] == 1
    assert r["binomial_p_vs_chance"] == pytest.approx(1.0)
    assert r["realism_mann_whitney_p"] == pytest.approx(1.0)  # every image rated 6


def test_two_readers_who_disagree_cohen_kappa():
    conf = {i: (2 if i in ("r1", "s1") else 4) for i in TRUTH}
    a = vtt.check_responses("a.csv", responses("a", PERFECT), KEY, "v1")
    b = vtt.check_responses("b.csv", responses("b", SWAPPED, conf), KEY, "v1")
    s = vtt.score({"a": a, "b": b})
    # po = 6/8, both 4 real / 4 synthetic: pe = 0.5, kappa = (0.75 - 0.5) / 0.5
    assert s["agreement"] == {"method": "cohen_kappa", "kappa": pytest.approx(0.5), "items": 8}
    rb = s["readers"]["b"]
    assert rb["accuracy"] == 0.75 and rb["accuracy_by_confidence"]["2"] == {"n": 2, "accuracy": 0.0}
    assert rb["accuracy_by_confidence"]["4"] == {"n": 6, "accuracy": 1.0}
    assert s["pooled"]["n"] == 16 and s["pooled"]["accuracy"] == pytest.approx(14 / 16)
    c = vtt.check_responses("c.csv", responses("c", ALL_REAL), KEY, "v1")
    assert vtt.score({"a": a, "c": c})["agreement"]["kappa"] == pytest.approx(0.0)  # po = pe = 0.5


def test_pooled_answers_are_not_taken_as_independent():
    """Two readers who rate the same 8 images: the pooled CI resamples readers and images, so it is wider than
    a binomial CI over 16 independent answers, and no pooled binomial p-value is given."""
    a = vtt.check_responses("a.csv", responses("a", PERFECT), KEY, "v1")
    b = vtt.check_responses("b.csv", responses("b", SWAPPED), KEY, "v1")
    pooled = vtt.score({"a": a, "b": b})["pooled"]
    assert pooled["accuracy"] == pytest.approx(14 / 16) and pooled["binomial_p_vs_chance"] is None
    lo, hi = pooled["accuracy_95ci"]
    independent = stats.binomtest(14, 16).proportion_ci(0.95, method="exact")
    assert lo <= 14 / 16 <= hi and hi - lo > independent.high - independent.low
    assert pooled["accuracy_95ci"] == vtt.score({"a": a, "b": b})["pooled"]["accuracy_95ci"]   # seeded
    assert pooled["realism_unit"] == "image (mean over readers)"
    one = vtt.score({"a": a})
    assert one["pooled"]["accuracy_95ci"] == one["readers"]["a"]["accuracy_95ci"]   # one reader: the exact CI


def test_three_readers_fleiss_kappa():
    readers = {n: vtt.check_responses(f"{n}.csv", responses(n, ans), KEY, "v1")
               for n, ans in (("a", PERFECT), ("b", SWAPPED), ("c", ALL_REAL))}
    s = vtt.score(readers)
    # by hand: P_bar = (1/3 + 3 + 1/3 + 1) / 8 = 7/12, P_e = (2/3)^2 + (1/3)^2 = 5/9 -> (7/12 - 5/9) / (4/9) = 1/16
    assert s["agreement"]["method"] == "fleiss_kappa" and s["agreement"]["kappa"] == pytest.approx(1 / 16)


@pytest.mark.parametrize("readers", [2, 3])
def test_kappa_is_undefined_when_every_answer_is_the_same(readers):
    """Every reader answers "real" throughout: chance agreement is 1, kappa 0/0. It is None with the reason,
    not a perfect 1.0 (nor NaN, which JSON cannot hold)."""
    s = vtt.score({n: vtt.check_responses(f"{n}.csv", responses(n, ALL_REAL), KEY, "v1") for n in "abc"[:readers]})
    assert s["agreement"]["kappa"] is None
    assert s["agreement"]["kappa_undefined"] == "every answer was 'real'"
    assert s["agreement"]["method"] == ("cohen_kappa" if readers == 2 else "fleiss_kappa")


@pytest.mark.parametrize("edit,message", [
    (lambda rows: rows.append(dict(rows[0], id="zz")), r"line 10: unknown id 'zz'"),
    (lambda rows: rows.append(dict(rows[2])), r"line 10: id r3 already answered on line 4"),
    (lambda rows: rows.pop(), r"1 of 8 images have no answer: s4"),
    (lambda rows: rows[1].update(key_version="old"), r"line 3: key version 'old'"),
    (lambda rows: rows[0].update(answer="maybe"), r"line 2: answer 'maybe'"),
    (lambda rows: rows[0].update(confidence="7"), r"line 2: confidence '7'"),
])
def test_bad_response_files_name_the_rows(edit, message):
    rows = responses("p", PERFECT)
    edit(rows)
    with pytest.raises(vtt.ResponseError, match=message):
        vtt.check_responses("p.csv", rows, KEY, "v1")


@pytest.mark.parametrize("short,message", [("p", "no key_version, id, answer, confidence"),
                                           ("p,v1,r3", "no answer, confidence")])
def test_a_short_row_is_a_response_error_naming_its_line(short, message):
    """csv.DictReader gives None for the fields a short row lacks: that row is named, like any other problem."""
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=vtt.RESPONSE_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(r for r in responses("p", PERFECT) if r["id"] != "r3")
    lines = text.getvalue().splitlines()
    rows = list(csv.DictReader(io.StringIO("\n".join(lines[:3] + [short] + lines[3:]) + "\n")))
    with pytest.raises(vtt.ResponseError, match=rf"p.csv: line 4: too few fields \({message}\)"):
        vtt.check_responses("p.csv", rows, KEY, "v1")
    no_comment = [dict(r, comment=None) for r in responses("p", PERFECT)]   # the optional comment left off
    assert {r["comment"] for r in vtt.check_responses("p.csv", no_comment, KEY, "v1")} == {""}


def test_kappa_helpers_on_textbook_values():
    # the worked example of Fleiss' kappa (10 subjects, 14 raters, 5 categories; Wikipedia): 0.210
    table = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                      [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])
    assert vtt.fleiss_kappa(table) == pytest.approx(0.210, abs=5e-4)
    assert vtt.fleiss_kappa(np.array([[3, 0], [0, 3], [3, 0]])) == pytest.approx(1.0)
    assert vtt.fleiss_kappa(np.array([[3, 0], [3, 0], [3, 0]])) is None   # one category throughout: 0/0
    assert vtt.cohen_kappa(["a", "b", "a", "b"], ["a", "b", "a", "b"]) == 1.0
    assert vtt.cohen_kappa(["a"] * 4, ["a"] * 4) is None      # one answer throughout: 0/0, undefined


# ---- export ------------------------------------------------------------------------------------------------
def test_render_png_size_depends_only_on_pixel_count_and_has_no_text_chunks():
    rng = np.random.default_rng(0)
    smooth = np.zeros((1, 32, 32), np.float32)
    noisy = rng.uniform(-1, 1, (1, 32, 32)).astype(np.float32)
    a, b = vtt.render_png(smooth, 64), vtt.render_png(noisy, 64)
    assert len(a) == len(b)
    for chunk in (b"tEXt", b"iTXt", b"zTXt", b"tIME", b"eXIf"):
        assert chunk not in a


def test_blinded_properties_carry_no_information_on_a_large_export():
    rng = np.random.default_rng(1)
    real = rng.uniform(-1, 1, (500, 1, 16, 16)).astype(np.float32)
    real[:, :, 4:12, 4:12] = 0.5           # the two sets differ in their pixels only
    syn = np.tanh(rng.normal(0, 2, (500, 1, 16, 16))).astype(np.float32)
    items, _ = vtt.blind(real, ["a"] * 500, ["r"] * 500, syn, ["a"] * 500, ["s"] * 500, 32, bytes(16))
    y = np.array([it.truth == vtt.SYNTHETIC for it in items])
    order = np.arange(len(items))
    feats = np.column_stack([[len(it.png) for it in items], [int(it.id, 16) / 16**12 for it in items],
                             [int(it.id[0], 16) for it in items], order / len(items)])
    assert len({len(it.png) for it in items}) == 1
    acc = cross_val_score(LogisticRegression(max_iter=1000), feats, y, cv=5).mean()
    assert abs(acc - 0.5) < 0.07, acc          # chance: SE of 1000 coin flips is 0.016
    assert len({it.id for it in items}) == 1000 and all(re.fullmatch(r"[0-9a-f]{12}", it.id) for it in items)


def test_blinding_is_reproducible_and_follows_every_image_and_the_secret():
    """Same images and entropy: the same ids, order and salts (an export is reproducible). One other
    image, or other entropy: all ids and salts change, so answers to one set never fit another."""
    rng = np.random.default_rng(3)
    real, syn = rng.uniform(-1, 1, (6, 1, 8, 8)), rng.uniform(-1, 1, (6, 1, 8, 8))
    args = (["a"] * 6, ["r"] * 6)

    def export(real, entropy=bytes(16)):
        items, blinding = vtt.blind(real, *args, syn, ["a"] * 6, [f"s{i}" for i in range(6)], 16, entropy)
        return [it.id for it in items], vtt.key_text(vtt.key_rows(items, blinding))

    ids, key = export(real)
    assert export(real) == (ids, key)
    assert len(set(ids)) == 12 and all(len(i) == 12 for i in ids)
    other = real.copy()
    other[0, 0, 0, 0] = -other[0, 0, 0, 0]
    for changed in (export(other), export(real, b"another secret, 16+ bytes")):
        assert not set(changed[0]) & set(ids) and changed[1] != key
    with pytest.raises(ValueError, match="16 bytes"):
        vtt.blind(real, *args, syn, ["a"] * 6, ["s"] * 6, 16, b"short")


def test_blinding_refuses_real_and_synthetic_images_of_different_sizes():
    """render_png resamples only images not at the display size already: with two sizes one class alone would
    be resampled, a tell."""
    rng = np.random.default_rng(4)
    with pytest.raises(ValueError, match="real images are 16x16 but synthetic images are 8x8"):
        vtt.blind(rng.uniform(-1, 1, (2, 1, 16, 16)), ["a"] * 2, ["r"] * 2, rng.uniform(-1, 1, (2, 1, 8, 8)),
                  ["a"] * 2, ["s"] * 2, 16, bytes(16))
