"""The visual Turing test's equivalence test (TOST against 0.5 +- margin): per reader exact, pooled over several
readers the two-way bootstrap's 90% interval; and the report page, with and without it in the scores."""
import pytest
from scipy import stats

from evaluation import vtt

MARGIN = 0.1


def key(n_images: int) -> dict[str, dict]:
    """A key of n_images, half real (even index) and half synthetic."""
    return vtt.read_key(vtt.key_text([{"id": f"i{n:03d}", "truth": "real" if n % 2 == 0 else "synthetic",
                                       "label_name": "a", "origin": "x", "salt": "00"} for n in range(n_images)]))


def reader(name: str, answers_key: dict[str, dict], correct) -> list[dict]:
    """Checked rows of a reader who is right on image number n exactly when ``correct(n)``."""
    flip = {"real": "synthetic", "synthetic": "real"}
    rows = [{"reader": name, "key_version": "k1", "id": i, "confidence": "3",
             "answer": row["truth"] if correct(n) else flip[row["truth"]]}
            for n, (i, row) in enumerate(sorted(answers_key.items()))]
    return vtt.check_responses(f"{name}.csv", rows, answers_key, "k1")


def equivalence_of(n_images: int, n_correct: int, margin: float = MARGIN) -> dict:
    one = vtt.score({"a": reader("a", key(n_images), lambda n: n < n_correct)}, margin)
    assert one["pooled"]["equivalence"] == one["readers"]["a"]["equivalence"]  # one reader: pooled is theirs
    return one["readers"]["a"]["equivalence"]


def test_a_reader_at_chance_with_many_answers_is_equivalent():
    e = equivalence_of(200, 100)
    assert e["equivalent"] and e["p"] < 0.05 and e["margin"] == MARGIN and e["alpha"] == 0.05
    low, high = e["ci_90"]
    assert 0.4 < low < 0.5 < high < 0.6 and e["smallest_margin"] == pytest.approx(max(0.5 - low, high - 0.5))


def test_the_same_accuracy_with_few_answers_is_not_equivalent():
    e = equivalence_of(20, 10)
    assert not e["equivalent"] and e["p"] > 0.05
    assert e["ci_90"][0] < 0.4 and e["ci_90"][1] > 0.6 and e["smallest_margin"] > MARGIN


def test_a_reader_who_tells_them_apart_is_not_equivalent():
    e = equivalence_of(200, 160)
    assert not e["equivalent"] and e["p"] > 0.5 and e["ci_90"][0] > 0.6


def test_the_p_value_is_the_larger_of_two_one_sided_binomial_tails():
    e = equivalence_of(120, 66)
    p_low = stats.binom.sf(65, 120, 0.4)    # P(X >= 66 | 0.4): H0 accuracy <= 0.4
    p_high = stats.binom.cdf(66, 120, 0.6)  # P(X <= 66 | 0.6): H0 accuracy >= 0.6
    assert e["p"] == pytest.approx(max(p_low, p_high), rel=1e-9) and p_high > p_low
    ci = stats.binomtest(66, 120).proportion_ci(0.90, method="exact")
    assert e["ci_90"] == pytest.approx([ci.low, ci.high]) and e["equivalent"] == (e["p"] < 0.05)


def test_no_answers_and_a_bad_margin():
    e = vtt.score({"a": []}, MARGIN)["readers"]["a"]["equivalence"]
    assert e["ci_90"] is None and e["p"] is None and not e["equivalent"] and e["smallest_margin"] is None
    assert "equivalence" not in vtt.score({"a": []})["readers"]["a"]  # no margin fixed: no test
    with pytest.raises(ValueError, match=r"margin must be in \(0, 0.5\), got 0.5"):
        vtt.score({"a": []}, 0.5)


def test_pooled_over_two_readers_uses_the_bootstrap_interval():
    """One reader always right and one always wrong: pooled accuracy 0.5 and, taken as 400 independent answers,
    equivalent; resampling readers shows the readers disagree entirely, so the pooled test is not."""
    k = key(200)
    right, wrong = reader("a", k, lambda n: True), reader("b", k, lambda n: False)
    pooled = vtt.score({"a": right, "b": wrong}, MARGIN)["pooled"]
    e = pooled["equivalence"]
    assert pooled["accuracy"] == 0.5 and vtt.equivalence_exact(200, 400, MARGIN)["equivalent"]
    assert e["p"] is None and "bootstrap" in e["method"] and not e["equivalent"]
    assert e["ci_90"][0] < 0.4 and e["ci_90"][1] > 0.6
    # two readers at chance who err on different images: the 90% interval, inside the 95% one of the same draws
    pooled = vtt.score({"a": reader("a", k, lambda n: n % 2 == 0), "b": reader("b", k, lambda n: n % 4 < 2)},
                       MARGIN)["pooled"]
    e, (low95, high95) = pooled["equivalence"], pooled["accuracy_95ci"]
    assert low95 <= e["ci_90"][0] < 0.5 < e["ci_90"][1] <= high95
    assert e["equivalent"] == (0.4 < e["ci_90"][0] and e["ci_90"][1] < 0.6) and e["equivalent"]
    assert e["readers_equivalent"] == 2


def test_a_pooled_half_of_readers_who_tell_them_apart_is_not_equivalence():
    """Readers at 0.40, 0.50 and 0.60 of 200 images: two tell real from synthetic (one the wrong way round), yet
    the pooled accuracy is 0.5 and its bootstrap interval fits inside 0.4-0.6. Pooled equivalence needs every
    reader's own test as well."""
    k = key(200)
    readers = {name: reader(name, k, lambda n, c=c: n < c) for name, c in (("a", 80), ("b", 100), ("c", 120))}
    scores = vtt.score(readers, MARGIN)
    e = scores["pooled"]["equivalence"]
    assert scores["pooled"]["accuracy"] == 0.5 and 0.4 < e["ci_90"][0] and e["ci_90"][1] < 0.6
    assert e["readers_equivalent"] == 1 and not e["equivalent"]
    assert [scores["readers"][n]["equivalence"]["equivalent"] for n in "abc"] == [False, True, False]


def test_the_report_shows_the_equivalence_test_and_renders_scores_without_it(tmp_path):
    from test_report_page import page_with_vtt_export

    from pipeline import report_page
    from pipeline.reporting import vtt_score_summary

    k = key(200)
    readers = {"dr a": reader("dr a", k, lambda n: n % 2 == 0), "dr b": reader("dr b", k, lambda n: n < 160)}
    summary, figures = page_with_vtt_export(tmp_path, 100)
    for margin in (MARGIN, None):  # None: scores written before the equivalence test
        summary["vtt"] = vtt_score_summary({"scored": True, "key_version": "k1", "images": 200,
                                            **vtt.score(readers, margin)}, "k1")
        page = report_page.render(summary, figures)
        assert ("Equivalence to chance within 0.5 ± 0.1" in page) == (margin is not None)
        assert ("<th>equivalent within 0.5 ± 0.1 (90% CI)</th>" in page) == (margin is not None)
    summary["vtt"] = vtt_score_summary({"scored": True, "key_version": "k1", "images": 200,
                                        **vtt.score(readers, MARGIN)}, "k1")
    assert summary["vtt"]["equivalent"] is False and summary["vtt"]["equivalence_p"] is None
    page = report_page.render(summary, figures)
    assert '<td class="n">yes [0.440, 0.560]</td></tr>' in page and '<td class="n">no [0.748, 0.845]</td></tr>' in page
    low, high = (report_page.fmt(summary["vtt"][k]) for k in ("equivalence_ci_low", "equivalence_ci_high"))
    assert f"Equivalence to chance within 0.5 ± 0.1 (pooled 90% CI [{low}, {high}]):\nnot shown." in page
