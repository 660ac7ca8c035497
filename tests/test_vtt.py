"""Visual Turing test stages: vtt_export leaks nothing, vtt_score scores a reader end to end and checks the key;
an undefined kappa and the accuracy's CI as the scores and the report page show them."""
import csv
import io
import json
import re
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest

from conftest import stage_args, tiny_params
from evaluation import vtt


@pytest.fixture
def exported(project, demo_archive):
    """The demo pipeline up to vtt_export (tiny GAN) in a project folder."""
    from pipeline import fidelity, prepare, synthesize, train_extractor, train_gan, vtt_export

    tiny_params(project, demo_archive, gan=dict(width=0.25, steps=2, batch=8, fid_every=0, grid_every=0),
                extractor=dict(width=4, dim=16, steps=5, batch=16),
                fidelity=dict(kid_subsets=5, inception_weights="no-such-file.pth", pairs=4),
                synthesize=dict(count=24),   # more than the contact sheet's 16 a class shows
                vtt=dict(n=4, display_size=64, dicom=True))
    a = stage_args(project)
    for stage in (prepare, train_extractor, train_gan, synthesize):
        stage.main(a)
    with pytest.warns(UserWarning, match="inception-v3-compat unavailable"):
        fidelity.main(a)
    return project, vtt_export.main(a)


def test_the_synthetic_images_the_report_shows_are_not_in_the_blinded_set(exported):
    """The report's nearest-pairs figures and the contact sheet show synthetic images (fidelity records the
    figures' rows): a reader who saw them would know them, so the export draws from the others, and says how
    many it left out. A train split, or fidelity metrics that do not list the rows, stop the export."""
    project, summary = exported
    memorisation = json.loads((project / "metrics/fidelity.json").read_text())["memorisation"]
    shown = {i for audit in memorisation.values() for i in audit["pairs_synthetic_rows"]}
    assert shown and summary["synthetic_shown_in_report"] == len(shown)
    assert summary["synthetic_in_set_shown_in_report"] == 0
    with open(project / "exports/vtt/key.csv", newline="") as fh:
        picked = {int(r["origin"].split(":")[1].removeprefix("row")) for r in csv.DictReader(fh)
                  if r["truth"] == "synthetic"}
    assert len(picked) == 4 and not picked & shown
    # nor the contact sheet's (data/synthetic and MLflow show it)
    from pipeline.prepared import contact_sheet_rows, load_synthetic

    sheet = set(contact_sheet_rows(load_synthetic(project / "data/synthetic")[1]).tolist())
    assert sheet - shown and not picked & sheet
    assert summary["synthetic_on_contact_sheet"] == len(sheet) and summary["synthetic_in_set_on_contact_sheet"] == 0
    # a train split (the report shows train images; the GAN learnt them) and fidelity metrics without the rows
    from pipeline import vtt_export

    with pytest.raises(SystemExit, match=r"vtt.real_split must be one of \('val', 'test'\), got 'train'"):
        vtt_export.main(stage_args(project, "vtt.real_split=train"))
    fidelity = json.loads((project / "metrics/fidelity.json").read_text())
    del fidelity["memorisation"]["pixels"]["pairs_synthetic_rows"]          # written before the rows were listed
    (project / "metrics/fidelity.json").write_text(json.dumps(fidelity))
    with pytest.raises(SystemExit, match="does not list the synthetic images its figures show"):
        vtt_export.main(stage_args(project))


def test_the_pick_never_takes_a_shown_synthetic_image():
    """With all but the needed synthetic images of each class shown, the pick is exactly the rest; with one more
    shown, a shown one fills the gap and is counted; too few images in all stop the export. A shown row that was
    not picked changes no pick."""
    from pipeline.vtt_export import pick_images

    real = SimpleNamespace(labels=np.array([0, 0, 1, 1]), classes=["normal", "pneumonia"])
    syn_labels = np.repeat([0, 1], 10)                               # rows 0-9 normal, 10-19 pneumonia
    shown = np.array([0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 14, 15, 16, 17])
    _, pick_syn, taken = pick_images(real, syn_labels, 4, np.random.default_rng(0), "test", shown)
    assert sorted(pick_syn) == [8, 9, 18, 19] and taken == 0
    _, pick_syn, taken = pick_images(real, syn_labels, 4, np.random.default_rng(0), "test", np.append(shown, 8))
    assert 9 in pick_syn and taken == 1 and sorted(pick_syn)[2:] == [18, 19]
    assert type(taken) is int   # it goes into summary.json: an np.int64 stopped the export (CI of stop 28)
    with pytest.raises(SystemExit, match="2 synthetic normal images needed, 1 exist"):
        pick_images(real, np.array([0] + [1] * 19), 4, np.random.default_rng(0), "test", shown)
    _, unconditional, taken = pick_images(real, np.full(20, -1), 4, np.random.default_rng(0), "test", shown)
    assert sorted(unconditional) == [8, 9, 18, 19] and taken == 0
    _, first, _ = pick_images(real, syn_labels, 4, np.random.default_rng(1), "test", np.array([0]))
    spare = next(i for i in range(1, 20) if i not in first)
    _, again, _ = pick_images(real, syn_labels, 4, np.random.default_rng(1), "test", np.array([0, spare]))
    assert list(again) == list(first)


def test_export_leaks_nothing(exported, demo_archive):
    project, summary = exported
    out = project / "exports/vtt"
    blinded = out / "blinded"
    files = [f for f in blinded.rglob("*") if f.is_file()]
    assert summary["images"] == 8 and summary["per_truth_and_class"]["real"] == summary["per_truth_and_class"]["synthetic"]
    assert not (blinded / "key.csv").exists() and (out / "key.csv").exists()
    key = (out / "key.csv").read_text()
    manifest = json.loads((blinded / "manifest.json").read_text())
    assert manifest["key_sha256"] == vtt.commitment(key) and manifest["images"] == 8
    # nothing from the sources: paths, file names, patient ids and every UID and name in the source DICOMs
    secrets_ = set()
    with open(project / "data/prepared/index.csv", newline="") as f:
        for r in csv.DictReader(f):
            secrets_ |= {r["path"], r["path"].split("/")[-1], r["patient_id"]}
    for dcm in demo_archive.rglob("*"):
        if dcm.is_file() and dcm.suffix != ".csv":
            try:
                ds = pydicom.dcmread(dcm, stop_before_pixels=True, force=True)
            except Exception:  # noqa: BLE001 - the deliberately broken files
                continue
            for tag in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID", "PatientName"):
                if str(ds.get(tag, "")):
                    secrets_.add(str(ds.get(tag)))
    key_rows = list(csv.DictReader(io.StringIO(key)))
    secrets_ |= {r["salt"] for r in key_rows} | {r["origin"] for r in key_rows}
    secrets_ = {s for s in secrets_ if len(s) >= 6}
    for f in files:
        data = f.read_bytes()
        for s in secrets_:
            assert s.encode() not in data, f"{s!r} found in {f.relative_to(blinded)}"
    # file names, sizes and DICOM tag sets are the same for real and synthetic images
    pngs = sorted((blinded / "images").glob("*.png"))
    assert len(pngs) == 8 and len({p.stat().st_size for p in pngs}) == 1
    assert len({f.stat().st_mtime for f in files}) == 1
    assert {p.stem for p in pngs} == {r["id"] for r in key_rows}
    dicoms = [pydicom.dcmread(d) for d in sorted((blinded / "dicom").glob("*.dcm"))]
    assert len({tuple(sorted(ds.keys())) for ds in dicoms}) == 1
    varying = {k for k in dicoms[0].keys() if len({str(ds[k].value) for ds in dicoms}) > 1}
    assert {pydicom.datadict.keyword_for_tag(k) for k in varying} <= {"SOPInstanceUID", "PatientID", "PixelData"}
    page = (blinded / "reader.html").read_text()
    assert "http://" not in page and "https://" not in page and "<link" not in page and "src=\"http" not in page
    for r in key_rows:
        assert r["id"] in page
    assert "truth" not in page


def test_the_blinding_secret_is_there_exactly_when_the_params_say(monkeypatch):
    from pipeline.vtt_export import SECRET_ENV, blinding_secret

    monkeypatch.delenv(SECRET_ENV, raising=False)
    assert blinding_secret({"secret": False}) == ""
    with pytest.raises(SystemExit, match="vtt.secret is true but MEDAUG_VTT_SECRET is not set"):
        blinding_secret({"secret": True})
    monkeypatch.setenv(SECRET_ENV, "a long random string")
    assert blinding_secret({"secret": True}) == "a long random string"
    with pytest.raises(SystemExit, match="MEDAUG_VTT_SECRET is set but vtt.secret is false"):
        blinding_secret({"secret": False})


def write_responses(path, reader: str, key_version: str, answers: dict[str, str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=vtt.RESPONSE_COLUMNS)
        w.writeheader()
        for i, answer in answers.items():
            w.writerow({"reader": reader, "key_version": key_version, "id": i, "answer": answer, "confidence": 3})


def test_vtt_score_command_end_to_end(exported, tmp_path, capsys):
    from pipeline import vtt_score

    project, summary = exported
    key = list(csv.DictReader(open(project / "exports/vtt/key.csv", newline="")))
    path = tmp_path / "reader.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=vtt.RESPONSE_COLUMNS)
        w.writeheader()
        for r in key:
            w.writerow({"reader": "dr a", "key_version": summary["key_version"], "id": r["id"], "answer": r["truth"],
                        "confidence": 4, "comment": "looks, \"fine\""})
    result = vtt_score.main([*stage_args(project), str(path)])
    assert result["pooled"]["accuracy"] == 1.0 and result["images"] == 8
    written = json.loads((project / "metrics/vtt.json").read_text())
    assert written["readers"]["dr a"]["n"] == 8
    # 8 of 8 right: the equivalence test against vtt.equivalence_margin is in the JSON, not shown, not inconclusive
    equivalence = written["readers"]["dr a"]["equivalence"]
    assert equivalence["margin"] == 0.1 and not equivalence["equivalent"] and equivalence["p"] == pytest.approx(1.0)
    assert written["pooled"]["equivalence"] == equivalence
    out = capsys.readouterr().out
    assert "vtt_score: equivalence to chance within 0.5 +- 0.1 not shown (90% CI 0.688-1.000, TOST p 1)" in out
    assert "inconclusive" not in out
    # two readers who answer "real" throughout: kappa undefined, written as null with the reason (and not logged)
    both = [tmp_path / "b.csv", tmp_path / "c.csv"]
    for path, reader in zip(both, ("dr b", "dr c")):
        write_responses(path, reader, summary["key_version"], {r["id"]: "real" for r in key})
    capsys.readouterr()
    vtt_score.main([*stage_args(project), *map(str, both)])
    agreement = json.loads((project / "metrics/vtt.json").read_text())["agreement"]
    assert agreement == {"method": "cohen_kappa", "kappa": None, "items": 8,
                         "kappa_undefined": "every answer was 'real'"}
    out = capsys.readouterr().out
    assert "cohen_kappa undefined (every answer was 'real')" in out
    assert "the CI includes 50%: this study could not show that readers tell real from synthetic" in out
    # pooled over the two: the bootstrap's 90% interval, too wide for 8 images: inconclusive
    assert json.loads((project / "metrics/vtt.json").read_text())["pooled"]["equivalence"]["p"] is None
    assert re.search(r"within 0\.5 \+- 0\.1 not shown \(90% CI [0-9.]+-[0-9.]+, bootstrap\); the study is "
                     r"inconclusive: too few answers to show either a difference or equivalence; 0 reader\(s\) "
                     r"equivalent on their own, every one is needed", out)
    # the margin is the one the manifest the readers got committed to: another is refused
    assert json.loads((project / "exports/vtt/blinded/manifest.json").read_text())["equivalence_margin"] == 0.1
    with pytest.raises(SystemExit, match="vtt.equivalence_margin is 0.15 but the set was exported with 0.1"):
        vtt_score.main([*stage_args(project, "vtt.equivalence_margin=0.15"), str(path)])
    (project / "exports/vtt/key.csv").write_text((project / "exports/vtt/key.csv").read_text().replace("real", "synthetic", 1))
    with pytest.raises(SystemExit, match="does not match the commitment"):
        vtt_score.main([*stage_args(project), str(path)])


def test_an_undefined_kappa_and_the_accuracy_ci_on_the_report_page(tmp_path):
    """The report's consumers of the scores: an undefined kappa (every answer "real") stays None in the summary,
    is no MLflow metric, and the page says it is undefined and why; the page reads the CI without claiming that
    readers cannot tell real from synthetic."""
    from test_report_page import page_with_vtt_export

    from pipeline import report_page
    from pipeline.reporting import mlflow_metrics, vtt_score_summary

    key = vtt.read_key(vtt.key_text([{"id": f"i{n}", "truth": "real" if n % 2 else "synthetic", "label_name": "a",
                                      "origin": "x", "salt": "00"} for n in range(4)]))
    readers = {}
    for reader in ("dr a", "dr b"):
        rows = [{"reader": reader, "key_version": "k1", "id": i, "answer": "real", "confidence": "3"} for i in key]
        readers[reader] = vtt.check_responses(f"{reader}.csv", rows, key, "k1")
    scores = {"scored": True, "key_version": "k1", "images": 4, **vtt.score(readers)}
    summary, figures = page_with_vtt_export(tmp_path, 2)
    summary["vtt"] = vtt_score_summary(scores, "k1")
    assert summary["vtt"]["kappa"] is None and summary["vtt"]["accuracy"] == 0.5
    assert not [name for name in mlflow_metrics(summary) if "kappa" in name]
    page = report_page.render(summary, figures)
    assert "Agreement between readers: cohen_kappa undefined over 4 images" in page
    assert "cannot tell" not in page and "could not tell" not in page
    assert "a CI that includes 0.5 means this study could not show that readers tell" in page
    assert "A CI that includes 50% means this study could not show that" in page


def test_response_files_as_excel_saves_them(tmp_path):
    """A sheet saved again by Excel: semicolons in a comma-decimal locale are read as the columns they are; cp1252
    ("CSV" on Windows) or UTF-16 ("Unicode text") stop naming the file, with every other file's problems."""
    from pipeline import vtt_score

    key = {"a1": {"truth": "real"}, "b2": {"truth": "synthetic"}}
    rows = ["reader;key_version;id;answer;confidence;comment", "Dr Müller;k1;a1;real;4;",
            "Dr Müller;k1;b2;real;2;\"a;b\""]
    semicolons = tmp_path / "semicolons.csv"
    semicolons.write_text("\n".join(rows) + "\n", encoding="utf-8-sig")
    readers = vtt_score.read_responses([semicolons], key, "k1")
    assert [(r["id"], r["answer"], r["confidence"], r["comment"]) for r in readers["Dr Müller"]] == \
        [("a1", "real", 4, ""), ("b2", "real", 2, "a;b")]
    cp1252, utf16 = tmp_path / "cp1252.csv", tmp_path / "utf16.csv"
    cp1252.write_bytes("\n".join(rows).replace(";", ",").encode("cp1252"))
    utf16.write_text("\n".join(rows).replace(";", "\t"), encoding="utf-16")
    with pytest.raises(SystemExit) as stop:
        vtt_score.read_responses([cp1252, utf16], key, "k1")
    assert f"response file {cp1252} is not UTF-8: byte b'\\xfc' on line 2" in str(stop.value)
    assert f"response file {utf16} is UTF-16 text" in str(stop.value)
