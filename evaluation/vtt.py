"""Visual Turing test: blinded real/synthetic image sets for readers, and the scoring of their answers.

Blinding: real and synthetic images go through one rendering path (resample to the display size, 8-bit, PNG without
compression or metadata chunks, so every file of a set has the same byte size), get random opaque ids, and are
listed in shuffled order. The answer key lives outside the blinded folder; the manifest carries its SHA-256, so the
key can be shown later unchanged (each key row has its own random salt, so the hash reveals nothing). Ids, order
and salts are drawn from a generator seeded by the caller's ``entropy`` and by the rendered images and their truth:
the same inputs give the same set byte for byte (an export is reproducible, as every pipeline output), and any
other image gives other ids and salts. Whoever lacks the entropy cannot predict them.

Scoring: accuracy, sensitivity for synthetic, specificity, an exact binomial test against 50%, accuracy by
confidence, Cohen's (two readers) or Fleiss' (more) kappa, and a Mann-Whitney U test of a 10-point realism score
between real and synthetic images. Pooled over several readers, who all rate the same images, the accuracy's CI
resamples readers and images and realism is compared per image (``_pooled``). Realism comes from the answer and its
1-5 confidence: "synthetic, confidence 5" -> 1 ... "synthetic, confidence 1" -> 5, "real, confidence 1" -> 6 ...
"real, confidence 5" -> 10. A CI of the accuracy that includes 50% means the study could not show that readers tell
real from synthetic, not that they cannot; its width bounds the difference that could have been missed. Showing
that they cannot, within a margin fixed before they answer, takes an equivalence test (TOST, Schuirmann 1987;
``score``'s ``margin``): equivalent to chance when the 90% CI (exact per reader) lies inside 0.5 +- margin; pooled
over readers, when the bootstrap's 90% interval does and every reader's own test shows it (a pooled 0.5 can hide
one reader at 0.4 and one at 0.6). Kappa is None (with the reason) when every answer is the same: agreement beyond
chance is then undefined.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
from importlib import resources
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import stats

from common.images import to_uint8

REAL, SYNTHETIC = "real", "synthetic"
KEY_COLUMNS = ("id", "truth", "label_name", "origin", "salt")
RESPONSE_COLUMNS = ("reader", "key_version", "id", "answer", "confidence", "comment")


# ---- export ---------------------------------------------------------------------------------------------
def stratified_pick(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n indices, split over classes in proportion to ``labels`` (largest remainders), without replacement."""
    classes, counts = np.unique(labels, return_counts=True)
    if n > len(labels):
        raise ValueError(f"asked for {n} images, only {len(labels)} available")
    share = counts / counts.sum() * n
    take = np.floor(share).astype(int)
    for i in np.argsort(-(share - take))[: n - take.sum()]:
        take[i] += 1
    return np.concatenate([rng.choice(np.flatnonzero(labels == c), k, replace=False)
                           for c, k in zip(classes, take)]).astype(int)


def render_png(image, size: int) -> bytes:
    """One [-1,1] (1,H,W) or (H,W) image -> an 8-bit greyscale PNG of ``size`` x ``size``: bicubic
    resampling, no compression (the byte size depends on the pixel count alone), no text or time chunks."""
    a = to_uint8(np.asarray(image, dtype=np.float32).reshape(np.shape(image)[-2:]))
    img = Image.fromarray(a)
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=0)
    return buf.getvalue()


def key_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=KEY_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def commitment(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class BlindedItem:
    id: str
    png: bytes
    truth: str
    label_name: str
    origin: str


def blind(real: np.ndarray, real_names: list[str], real_origin: list[str], synthetic: np.ndarray,
          synthetic_names: list[str], synthetic_origin: list[str], size: int,
          entropy: bytes) -> tuple[list[BlindedItem], np.random.Generator]:
    """Render both sets through one path, give them random ids and a random order. Returns the items and the
    blinding generator (for the key's salts and version): seeded by ``entropy`` (at least 16 bytes) and a hash
    of every rendered image with its truth, name and origin."""
    if len(entropy) < 16:
        raise ValueError(f"blinding entropy must be at least 16 bytes, got {len(entropy)}")
    # render_png resamples only images that are not size x size already: with two sizes, one class alone
    # would be resampled, and its smoothing would tell the classes apart
    real_hw, synthetic_hw = tuple(np.shape(real)[-2:]), tuple(np.shape(synthetic)[-2:])
    if real_hw != synthetic_hw:
        raise ValueError(f"real images are {real_hw[0]}x{real_hw[1]} but synthetic images are "
                         f"{synthetic_hw[0]}x{synthetic_hw[1]}: both sets must have one size, or the resampling "
                         "of one set alone tells them apart")
    rendered = [(render_png(x, size), REAL, n, o) for x, n, o in zip(real, real_names, real_origin)]
    rendered += [(render_png(x, size), SYNTHETIC, n, o) for x, n, o in zip(synthetic, synthetic_names, synthetic_origin)]
    digest = hashlib.sha256(entropy)
    for png, truth, name, origin in rendered:
        digest.update(hashlib.sha256(png).digest() + f"|{truth}|{name}|{origin}\n".encode())
    rng = np.random.default_rng(np.frombuffer(digest.digest(), dtype=np.uint32))
    ids: list[str] = []
    while len(ids) < len(rendered):  # 48-bit ids: a clash is astronomically rare; redraw
        new = rng.bytes(6).hex()
        if new not in ids:
            ids.append(new)
    items = [BlindedItem(i, *r) for i, r in zip(ids, rendered)]
    return [items[i] for i in rng.permutation(len(items))], rng


def key_rows(items: list[BlindedItem], rng: np.random.Generator) -> list[dict]:
    """The answer key's rows in id order, each with its own salt from the blinding generator."""
    return [{"id": it.id, "truth": it.truth, "label_name": it.label_name, "origin": it.origin,
             "salt": rng.bytes(8).hex()} for it in sorted(items, key=lambda it: it.id)]


def reader_page(ids: list[str], key_version: str, image_dir: str = "images") -> str:
    """The self-contained, offline reader page (evaluation/vtt_reader.html) for these ids. The page shows each
    reader the images in an order of their own (seeded by the reader's name) and keeps progress per reader."""
    template = resources.files("evaluation").joinpath("vtt_reader.html").read_text(encoding="utf-8")
    data = json.dumps({"ids": list(ids), "key_version": key_version, "image_dir": image_dir})
    return template.replace("__STUDY_JSON__", data.replace("</", "<\\/"))


# ---- scoring ----------------------------------------------------------------------------------------------
class ResponseError(ValueError):
    """A response file that cannot be scored; the message names the file and rows."""


def read_key(text: str) -> dict[str, dict]:
    return {r["id"]: r for r in csv.DictReader(io.StringIO(text))}


def check_responses(name: str, rows: list[dict], key: dict[str, dict], key_version: str) -> list[dict]:
    """Validate one reader's rows (line numbers as in the file: header = line 1); returns normalised rows."""
    problems = []
    missing_cols = [c for c in ("reader", "key_version", "id", "answer", "confidence") if rows and c not in rows[0]]
    if missing_cols:
        raise ResponseError(f"{name}: missing columns {missing_cols}; expected {list(RESPONSE_COLUMNS)}")
    seen: dict[str, int] = {}
    out = []
    for line, r in enumerate(rows, start=2):
        # a row with fewer fields than the header has None (csv.DictReader's restval) for the ones it lacks
        short = [c for c in ("reader", "key_version", "id", "answer", "confidence") if r.get(c) is None]
        if short:
            problems.append(f"line {line}: too few fields (no {', '.join(short)})")
            continue
        rid = (r.get("id") or "").strip()
        if (r.get("key_version") or "").strip() != key_version:
            problems.append(f"line {line}: key version {r.get('key_version')!r} is not this export's {key_version!r}")
            continue
        if rid not in key:
            problems.append(f"line {line}: unknown id {rid!r}")
            continue
        if rid in seen:
            problems.append(f"line {line}: id {rid} already answered on line {seen[rid]}")
            continue
        seen[rid] = line
        answer = (r.get("answer") or "").strip().lower()
        if answer not in (REAL, SYNTHETIC):
            problems.append(f"line {line}: answer {r.get('answer')!r} for {rid} is not 'real' or 'synthetic'")
            continue
        try:
            conf = int(r.get("confidence"))
            if not 1 <= conf <= 5:
                raise ValueError
        except (TypeError, ValueError):
            problems.append(f"line {line}: confidence {r.get('confidence')!r} for {rid} is not 1-5")
            continue
        out.append({"reader": (r.get("reader") or "").strip(), "id": rid, "answer": answer, "confidence": conf,
                    "truth": key[rid]["truth"], "comment": r.get("comment") or ""})
    missing = sorted(set(key) - set(seen))
    if missing and not problems:
        problems.append(f"{len(missing)} of {len(key)} images have no answer: {', '.join(missing[:10])}"
                        + (" ..." if len(missing) > 10 else ""))
    readers = {r["reader"] for r in out}
    if len(readers) > 1:
        problems.append(f"one file holds several readers {sorted(readers)}: one file per reader")
    if problems:
        raise ResponseError(f"{name}: " + "; ".join(problems))
    return out


def realism(answer: str, confidence: int) -> int:
    return 5 + confidence if answer == REAL else 6 - confidence


EQUIVALENCE_ALPHA = 0.05  # each one-sided test of the TOST; its CI is therefore the 90% (1 - 2 alpha) one


def _equivalence(margin: float, ci_90: list[float] | None, p: float | None, equivalent: bool, method: str) -> dict:
    """One equivalence result; ``smallest_margin`` is the margin these answers would just miss (any larger one
    they show): a description of the data, not a margin to choose after the fact."""
    return {"margin": margin, "alpha": EQUIVALENCE_ALPHA, "ci_90": ci_90, "p": p, "method": method,
            "equivalent": bool(equivalent),
            "smallest_margin": max(abs(ci_90[0] - 0.5), abs(ci_90[1] - 0.5)) if ci_90 else None}


def equivalence_exact(correct: int, n: int, margin: float) -> dict:
    """Exact binomial TOST that the accuracy lies within 0.5 +- margin: p_low = P(X >= correct | 0.5 - margin)
    tests H0 accuracy <= 0.5 - margin, p_high = P(X <= correct | 0.5 + margin) tests H0 accuracy >= 0.5 + margin;
    p is the larger. p < alpha exactly when the exact (Clopper-Pearson) 90% CI lies inside the margin. No
    answers: not equivalent, p and CI None."""
    method = "two one-sided exact binomial tests (TOST), exact 90% CI"
    if not n:
        return _equivalence(margin, None, None, False, method)
    p_low = stats.binomtest(correct, n, 0.5 - margin, alternative="greater").pvalue
    p_high = stats.binomtest(correct, n, 0.5 + margin, alternative="less").pvalue
    p = float(max(p_low, p_high))
    ci = stats.binomtest(correct, n, 0.5).proportion_ci(1 - 2 * EQUIVALENCE_ALPHA, method="exact")
    return _equivalence(margin, [float(ci.low), float(ci.high)], p, p < EQUIVALENCE_ALPHA, method)


def _rates(rows: list[dict], margin: float | None = None) -> dict:
    n = len(rows)
    correct = sum(r["answer"] == r["truth"] for r in rows)
    syn = [r for r in rows if r["truth"] == SYNTHETIC]
    real = [r for r in rows if r["truth"] == REAL]
    test = stats.binomtest(correct, n, 0.5, alternative="two-sided") if n else None
    by_conf = {}
    for c in range(1, 6):
        sel = [r for r in rows if r["confidence"] == c]
        by_conf[str(c)] = {"n": len(sel), "accuracy": sum(r["answer"] == r["truth"] for r in sel) / len(sel)
                           if sel else None}
    rs = [realism(r["answer"], r["confidence"]) for r in real]
    ss = [realism(r["answer"], r["confidence"]) for r in syn]
    mw = stats.mannwhitneyu(rs, ss, alternative="two-sided") if rs and ss else None
    equivalence = {"equivalence": equivalence_exact(correct, n, margin)} if margin is not None else {}
    return {"n": n, "correct": correct, "accuracy": correct / n if n else None,
            "sensitivity_synthetic": sum(r["answer"] == SYNTHETIC for r in syn) / len(syn) if syn else None,
            "specificity": sum(r["answer"] == REAL for r in real) / len(real) if real else None,
            "binomial_p_vs_chance": float(test.pvalue) if test else None,
            "accuracy_95ci": list(test.proportion_ci(0.95, method="exact")) if test else None,
            "accuracy_95ci_method": "exact binomial (Clopper-Pearson)",
            "accuracy_by_confidence": by_conf,
            "realism_real_median": float(np.median(rs)) if rs else None,
            "realism_synthetic_median": float(np.median(ss)) if ss else None,
            "realism_mann_whitney_u": float(mw.statistic) if mw else None,
            "realism_mann_whitney_p": float(mw.pvalue) if mw else None, **equivalence}


def cohen_kappa(a: list[str], b: list[str]) -> float | None:
    """Cohen's kappa (scikit-learn's); None when both readers gave one and the same answer throughout: chance
    agreement is then 1 and kappa 0/0, undefined (the answers say nothing about agreement beyond chance)."""
    from sklearn.metrics import cohen_kappa_score

    if len(set(a) | set(b)) == 1:
        return None
    return float(cohen_kappa_score(a, b))


def fleiss_kappa(table: np.ndarray) -> float | None:
    """table: (items, categories) counts of raters per category; every item rated by the same number.
    Written here: neither scipy nor scikit-learn has Fleiss' kappa (statsmodels does, a large dependency
    for five lines); a test checks it on the textbook worked example (kappa 0.210). None when every rating is
    in one category: chance agreement is then 1 and kappa 0/0, undefined."""
    table = np.asarray(table, dtype=float)
    n = table.sum(axis=1)[0]
    p_j = table.sum(axis=0) / table.sum()
    p_i = (np.square(table).sum(axis=1) - n) / (n * (n - 1))
    p_bar, p_e = p_i.mean(), np.square(p_j).sum()
    return None if p_e == 1 else float((p_bar - p_e) / (1 - p_e))


POOLED_BOOTSTRAP = 2000   # resamples of readers and images for the pooled accuracy's CI


def _pooled(readers: dict[str, list[dict]], margin: float | None = None) -> dict:
    """Every reader's answers together. All readers rate the same images, so their answers are not independent:
    an image that fools one reader tends to fool the others, and a reader's leaning runs through all of theirs.
    With several readers, the accuracy's CI therefore comes from resampling readers and images together (a
    two-way bootstrap, seeded: the same answers give the same CI); the binomial test, which takes every answer
    as independent, is left out (each reader's own is in ``readers``), and so is the exact equivalence test (the
    pooled one asks the bootstrap's 90% interval to lie inside the margin); and realism is compared between real
    and synthetic images on each image's mean over the readers."""
    rows = [r for answers in readers.values() for r in answers]
    out = _rates(rows, margin)
    if len(readers) < 2:
        return out
    names, ids = sorted(readers), sorted({r["id"] for r in rows})
    by = {(n, r["id"]): r for n, answers in readers.items() for r in answers}
    correct = np.array([[by[n, i]["answer"] == by[n, i]["truth"] for i in ids] for n in names], dtype=float)
    rng = np.random.default_rng(0)
    draws = [correct[np.ix_(rng.integers(0, len(names), len(names)), rng.integers(0, len(ids), len(ids)))].mean()
             for _ in range(POOLED_BOOTSTRAP)]
    realism_of = {i: float(np.mean([realism(by[n, i]["answer"], by[n, i]["confidence"]) for n in names]))
                  for i in ids}
    rs = [realism_of[i] for i in ids if by[names[0], i]["truth"] == REAL]
    ss = [realism_of[i] for i in ids if by[names[0], i]["truth"] == SYNTHETIC]
    mw = stats.mannwhitneyu(rs, ss, alternative="two-sided") if rs and ss else None
    if margin is not None:
        # the pooled mean can sit at 0.5 while readers tell the images apart (one at 0.4, one at 0.6), and a few
        # readers resampled give too narrow an interval: equivalence pooled also needs every reader's own
        ci_90 = [float(np.percentile(draws, q)) for q in (100 * EQUIVALENCE_ALPHA, 100 * (1 - EQUIVALENCE_ALPHA))]
        each = sum(equivalence_exact(int(row.sum()), len(row), margin)["equivalent"] for row in correct)
        inside = 0.5 - margin < ci_90[0] and ci_90[1] < 0.5 + margin
        out["equivalence"] = _equivalence(margin, ci_90, None, inside and each == len(names),
                                          f"bootstrap over readers and images ({POOLED_BOOTSTRAP} resamples): "
                                          "90% percentile interval inside 0.5 +- margin, and every reader's exact "
                                          "TOST equivalent") | {"readers_equivalent": each}
    return out | {"binomial_p_vs_chance": None,
                  "accuracy_95ci": [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))],
                  "accuracy_95ci_method": f"bootstrap over readers and images ({POOLED_BOOTSTRAP} resamples)",
                  "realism_real_median": float(np.median(rs)) if rs else None,
                  "realism_synthetic_median": float(np.median(ss)) if ss else None,
                  "realism_mann_whitney_u": float(mw.statistic) if mw else None,
                  "realism_mann_whitney_p": float(mw.pvalue) if mw else None,
                  "realism_unit": "image (mean over readers)"}


def score(readers: dict[str, list[dict]], margin: float | None = None) -> dict:
    """``readers``: reader name -> validated rows (check_responses). Per reader, pooled, and agreement; an
    undefined kappa is None, with ``kappa_undefined`` saying why. ``margin``: the pre-registered equivalence
    margin; each block then has an ``equivalence`` test against 0.5 +- margin (None: no test, none was fixed)."""
    if margin is not None and not 0 < margin < 0.5:
        raise ValueError(f"the equivalence margin must be in (0, 0.5), got {margin!r} (e.g. 0.1: 0.4-0.6 is chance)")
    out = {"readers": {name: _rates(rows, margin) for name, rows in readers.items()},
           "pooled": _pooled(readers, margin)}
    names = sorted(readers)
    if len(names) >= 2:
        answers = {n: {r["id"]: r["answer"] for r in readers[n]} for n in names}
        ids = sorted(set.intersection(*(set(a) for a in answers.values())))
        if len(names) == 2:
            out["agreement"] = {"method": "cohen_kappa", "kappa": cohen_kappa(
                [answers[names[0]][i] for i in ids], [answers[names[1]][i] for i in ids]), "items": len(ids)}
        else:
            table = np.array([[sum(answers[n][i] == c for n in names) for c in (REAL, SYNTHETIC)] for i in ids])
            out["agreement"] = {"method": "fleiss_kappa", "kappa": fleiss_kappa(table), "items": len(ids),
                                "readers": len(names)}
        if out["agreement"]["kappa"] is None:  # only when every answer is the same one
            out["agreement"]["kappa_undefined"] = f"every answer was {answers[names[0]][ids[0]]!r}"
    return out


def group_by_reader(rows: list[dict]) -> dict[str, list[dict]]:
    g = defaultdict(list)
    for r in rows:
        g[r["reader"]].append(r)
    return dict(g)
