"""Stage smoke tests: demo_data and prepare end to end on generated data, every source kind."""
import csv
import json

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import stage_args
from imaging.demo import BROKEN
from imaging.dicom_write import encode, grey_dataset
from imaging.ingest import ingest_npz
from imaging.phantoms import Anatomy, chest_phantom
from imaging.pixels import PixelConfig
from imaging.sources import SourceError
from pipeline import demo_data, prepare


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_prepare(project, *overrides):
    return prepare.main(stage_args(project, *overrides))


def check_outputs(out, n, size=64):
    images = np.load(out / "images.npy", mmap_mode="r")
    assert images.shape == (n, 1, size, size) and images.dtype == np.float16
    assert float(images.min()) >= -1 and float(images.max()) <= 1
    index = read_csv(out / "index.csv")
    assert [int(r["row"]) for r in index] == list(range(n))
    splits = {}
    for r in index:
        assert splits.setdefault(r["patient_id"], r["split"]) == r["split"], "a patient straddles splits"
    return images, index


def test_demo_pipeline_end_to_end_with_mlflow(project):
    counts = demo_data.main(["--params", str(project / "params.yaml")])
    summary = run_prepare(project)
    out = project / "data/prepared"
    images, index = check_outputs(out, summary["prepared"])
    assert summary["prepared"] == counts["images"]  # no good file lost
    quarantine = {r["path"]: r["reason"] for r in read_csv(out / "quarantine.csv")}
    assert quarantine.keys() == {f"BROKEN/{n}" for n in BROKEN}
    for name, code in BROKEN.items():
        assert quarantine[f"BROKEN/{name}"].startswith(code + ":")
    assert summary["quarantine_reasons"] == {c: 1 for c in BROKEN.values()}
    assert json.loads((out / "summary.json").read_text())["prepared"] == summary["prepared"]
    assert {r["split"] for r in index} == {"train", "val", "test"}
    assert {r["voi"] for r in index} >= {"window", "minmax"}
    assert {r["photometric"] for r in index} >= {"MONOCHROME1", "MONOCHROME2", "RGB"}

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("medaug")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and sorted(r.info.run_name for r in children) == ["demo_data", "prepare"]
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)
    assert parents[0].data.params["prepare.size"] == "64"
    prep = next(r for r in children if r.info.run_name == "prepare")
    assert prep.data.metrics["quarantined"] == len(BROKEN)
    assert prep.data.metrics["prepared"] == summary["prepared"]
    # a variant is a new parent run
    run_prepare(project, "prepare.size=32", f"paths.prepared={project / 'p32'}")
    assert len([r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" not in r.data.tags]) == 2


def kermany_like_folders(root, rng):
    """Class folders with Kermany-style names: RGB JPEG, greyscale PNG and a DICOM, two images a patient."""
    for cls, pneu in (("NORMAL", False), ("PNEUMONIA", True)):
        (root / cls).mkdir(parents=True)
        for p in range(8):
            anat = Anatomy.sample(rng)
            for i in range(2):
                img = (chest_phantom(rng, 96, anat, pneu) * 255).astype(np.uint8)
                stem = f"person{p}_bacteria_{i}" if pneu else f"IM-{p:04d}-000{i}"
                if p % 3 == 0:
                    Image.fromarray(np.repeat(img[..., None], 3, 2)).save(root / cls / f"{stem}.jpeg", quality=95)
                elif p % 3 == 1:
                    Image.fromarray(img).save(root / cls / f"{stem}.png")
                else:
                    grey_dataset(img, bits_stored=8).save_as(root / cls / f"{stem}.dcm", enforce_file_format=True)
    (root / "README.txt").write_text("export notes")


def test_class_folders_source(project):
    src = project / "folders"
    kermany_like_folders(src, np.random.default_rng(0))
    summary = run_prepare(project, f"data.source={src}")
    assert summary["kind"] == "folders" and summary["classes"] == ["NORMAL", "PNEUMONIA"]
    assert summary["class_counts"] == {"NORMAL": 16, "PNEUMONIA": 16}
    assert summary["patients"] == 16 and summary["patient_id_from"] == {"regex": 32}
    _, index = check_outputs(project / "data/prepared", 32)
    assert {r["patient_id"] for r in index} >= {"person0", "IM-0001"}
    quarantine = read_csv(project / "data/prepared/quarantine.csv")
    assert [r["path"] for r in quarantine] == ["README.txt"]
    assert quarantine[0]["reason"].startswith("not_in_class_folder:")


def test_one_patient_id_on_many_images_is_named_in_a_warning(project):
    """A patient id on 12 of 60 images (an anonymiser's constant id on part of an archive, say) is not an error,
    but the whole group lands in one split: the summary names it and how to set the patient id."""
    rng = np.random.default_rng(1)
    src = project / "one_patient"
    for cls in ("NORMAL", "PNEUMONIA"):
        (src / cls).mkdir(parents=True)
    for i in range(60):
        cls, stem = ("PNEUMONIA", f"person1_bacteria_{i}") if i < 12 else (("NORMAL", "PNEUMONIA")[i % 2],
                                                                          f"person{i}_virus_0")
        Image.fromarray((chest_phantom(rng, 48, Anatomy.sample(rng), False) * 255).astype(np.uint8)).save(
            src / cls / f"{stem}.png")
    summary = run_prepare(project, f"data.source={src}", "prepare.size=32")
    assert any("patient id 'person1' (from regex) is on 12 of 60 images (20%)" in w
               and "set data.patient_regex to capture the real patient id" in w
               for w in summary["warnings"]), summary["warnings"]


def test_presentation_inverse_for_processing_and_pixel_padding_are_reported(project):
    """DICOM files that are inverted by their Presentation LUT Shape, and raw 'FOR PROCESSING' ones, are named
    in a warning and in index.csv; files with padding pixels are counted in the summary."""
    rng = np.random.default_rng(2)
    src = project / "dicom_classes"
    for i in range(8):
        cls = ("NORMAL", "PNEUMONIA")[i % 2]
        (src / cls).mkdir(parents=True, exist_ok=True)
        stored = (chest_phantom(rng, 48, Anatomy.sample(rng), False) * 4000).astype(np.uint16)
        attrs = {"PatientID": f"P{i}"}
        if i < 3:
            attrs["PresentationLUTShape"] = "INVERSE"
        if i in (0, 3):
            attrs["PresentationIntentType"] = "FOR PROCESSING"
        if i >= 6:
            stored[:4] = 4095
            attrs["PixelPaddingValue"] = 4095
        grey_dataset(stored, bits_stored=12, **attrs).save_as(src / cls / f"im{i}.dcm", enforce_file_format=True)
    summary = run_prepare(project, f"data.source={src}", "prepare.size=32")
    assert any(w.startswith("3 images are MONOCHROME2 with Presentation LUT Shape INVERSE") for w in summary["warnings"])
    assert summary["pixel_padding_images"] == 2
    index = read_csv(project / "data/prepared/index.csv")
    inverse = sorted(r["path"].rsplit("/", 1)[1] for r in index if r["photometric"].startswith("MONOCHROME2 INVERSE"))
    assert inverse == ["im0.dcm", "im1.dcm", "im2.dcm"]
    raw = sorted(r["path"].rsplit("/", 1)[1] for r in index if r["photometric"].endswith(" FOR PROCESSING"))
    assert raw == ["im0.dcm", "im3.dcm"]
    assert any(w.startswith("2 of 8 images are 'FOR PROCESSING' DICOMs") for w in summary["warnings"])


def test_npz_source_keeps_its_published_split(project):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 30), ("val", 6), ("test", 8)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1)
    np.savez(project / "mnist.npz", **arrays)
    summary = run_prepare(project, f"data.source={project / 'mnist.npz'}", "prepare.size=32", "data.min_val_images=5")
    assert summary["kind"] == "npz" and summary["split_from"].startswith("published")
    assert summary["split_origin"] == {"train": "published", "val": "published", "test": "published"}
    assert {s: v["images"] for s, v in summary["splits"].items()} == {"train": 30, "val": 6, "test": 8}
    assert summary["classes"] == ["0", "1"]
    _, index = check_outputs(project / "data/prepared", 44, size=32)
    assert [r["path"] for r in index if r["split"] == "test"] == [f"mnist.npz:test_images[{i}]" for i in range(8)]
    # a val split below data.min_val_images joins train, and val is carved from that pool; test is untouched
    summary = run_prepare(project, f"data.source={project / 'mnist.npz'}", "prepare.size=32")
    assert summary["split_origin"]["val"].startswith("carved") and summary["split_origin"]["test"] == "published"
    assert summary["splits"]["test"]["images"] == 8 and summary["splits"]["val"]["images"] > 0
    assert summary["splits"]["train"]["images"] + summary["splits"]["val"]["images"] == 36
    assert any("carved" in w for w in summary["warnings"])
    # without its test split, test is carved from the published train split (with a warning); or, with
    # data.split_from=patients, everything is split anew
    del arrays["test_images"], arrays["test_labels"]
    np.savez(project / "trainval.npz", **arrays)
    summary = run_prepare(project, f"data.source={project / 'trainval.npz'}", "prepare.size=32", "data.min_val_images=5")
    assert summary["split_origin"] == {"train": "published", "val": "published", "test": summary["split_origin"]["test"]}
    assert summary["split_origin"]["test"].startswith("carved") and summary["splits"]["val"]["images"] == 6
    assert summary["splits"]["test"]["images"] > 0 and any("no test split" in w for w in summary["warnings"])
    summary = run_prepare(project, f"data.source={project / 'trainval.npz'}", "prepare.size=32",
                          "data.split_from=patients")
    assert summary["split_from"].startswith("patients") and summary["splits"]["test"]["images"] > 0
    assert any("published split is ignored" in w for w in summary["warnings"])


def _npz_images(path, images):
    np.savez(path, train_images=images, train_labels=np.zeros((len(images), 1), dtype=np.uint8))
    return [r.image.astype(np.float32) for r in ingest_npz(path, PixelConfig(size=16))]


def test_npz_images_are_read_by_shape_and_dtype_or_refused(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (2, 16, 16), dtype=np.uint8)
    want = _npz_images(tmp_path / "a.npz", grey)
    # (H, W, 1) is grey; floats in [0, 1] and bool hold display values as they are
    np.testing.assert_array_equal(_npz_images(tmp_path / "b.npz", grey[..., None]), want)
    np.testing.assert_allclose(_npz_images(tmp_path / "c.npz", grey / 255.0), want, atol=2e-3)
    binary = grey > 127
    np.testing.assert_array_equal(_npz_images(tmp_path / "d.npz", binary),
                                  _npz_images(tmp_path / "e.npz", binary.astype(np.uint8) * 255))
    # (H, W, 3) is colour: grey in, the same grey out
    np.testing.assert_allclose(_npz_images(tmp_path / "f.npz", np.repeat(grey[..., None], 3, -1)), want, atol=2e-3)
    with pytest.raises(SourceError, match=r"a.npz:train_images\[0\] has shape \(16, 16, 16\).*volumes"):
        _npz_images(tmp_path / "a.npz", rng.integers(0, 256, (2, 16, 16, 16), dtype=np.uint8))
    with pytest.raises(SourceError, match=r"has shape \(3, 16, 16\).*channel-first"):
        _npz_images(tmp_path / "a.npz", rng.integers(0, 256, (2, 3, 16, 16), dtype=np.uint8))
    with pytest.raises(SourceError, match=r"is int16 with values in \[-5, 3000\]; expected uint8.*floats in \[0, 1\]"):
        _npz_images(tmp_path / "a.npz", np.array([[[-5, 3000], [0, 1]]] * 2, dtype=np.int16))
    with pytest.raises(SourceError, match=r"is float32 with values in \[0, 255\]"):
        _npz_images(tmp_path / "a.npz", grey.astype(np.float32))


@pytest.mark.parametrize("key", ["sop_instance_uid", "patient_id"])
def test_labels_csv_keyed_by_uid_or_patient(project, key):
    src = project / "tree"
    src.mkdir()
    rows = []
    rng = np.random.default_rng(1)
    for p in range(6):
        for i in range(2):
            img = (chest_phantom(rng, 64, Anatomy.sample(rng), p % 2 == 1) * 4000).astype(np.uint16)
            ds = encode(grey_dataset(img, bits_stored=12, PatientID=f"PAT{p}"), "rle")
            ds.save_as(src / f"p{p}_{i}.dcm", enforce_file_format=True)
            rows.append((ds.SOPInstanceUID if key == "sop_instance_uid" else f"PAT{p}", "pneumonia" if p % 2 else "normal"))
    with open(src / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([(key, "label"), *rows])
    summary = run_prepare(project, f"data.source={src}")
    assert summary["prepared"] == 12 and summary["quarantined"] == 0 and summary["patients"] == 6


def test_labels_csv_that_matches_nothing_fails_clearly(project, demo_archive, tmp_path):
    src = tmp_path / "tree"
    src.mkdir()
    grey_dataset(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64), bits_stored=12).save_as(src / "a.dcm")
    (src / "labels.csv").write_text("path,label\nsomewhere/else.dcm,normal\n")
    with pytest.raises(SystemExit, match=r"column 'path' of labels.csv names none of the 1 files.*values look like "
                                         r"\['somewhere/else.dcm'\], files like \['a.dcm'\]"):
        run_prepare(project, f"data.source={src}")


def test_source_with_nothing_usable_fails_clearly(project, tmp_path):
    src = tmp_path / "junk"
    (src / "NORMAL").mkdir(parents=True)
    (src / "NORMAL" / "a.png").write_text("nope")
    with pytest.raises(SystemExit, match="no usable image.*not_an_image"):
        run_prepare(project, f"data.source={src}")
    with pytest.raises(SystemExit, match="neither a folder nor an .npz"):
        run_prepare(project, f"data.source={tmp_path / 'missing'}")


def test_jpeg2000_copy_prepares_identically_and_stays_with_its_twin(project):
    src = project / "twins"
    (src / "NORMAL").mkdir(parents=True)
    (src / "PNEUMONIA").mkdir()
    rng = np.random.default_rng(3)
    for cls in ("NORMAL", "PNEUMONIA"):
        for p in range(6):
            img = (chest_phantom(rng, 200, Anatomy.sample(rng), cls == "PNEUMONIA") * 32767).astype(np.uint16)
            ds = grey_dataset(img, bits_stored=15, photometric="MONOCHROME1", PatientID=f"{cls}{p}",
                              WindowCenter=15000, WindowWidth=30000)
            ds.save_as(src / cls / f"{p}_plain.dcm", enforce_file_format=True)
            if p == 0:  # the same pixels, compressed, filed under another patient id
                ds2 = encode(grey_dataset(img, bits_stored=15, photometric="MONOCHROME1", PatientID=f"{cls}X",
                                          WindowCenter=15000, WindowWidth=30000), "jpeg2000")
                ds2.save_as(src / cls / f"{p}_j2k.dcm", enforce_file_format=True)
    summary = run_prepare(project, f"data.source={src}")
    assert summary["duplicate_groups"] == 2
    images, index = check_outputs(project / "data/prepared", 14)
    for cls in ("NORMAL", "PNEUMONIA"):
        a = next(r for r in index if r["path"] == f"{cls}/0_plain.dcm")
        b = next(r for r in index if r["path"] == f"{cls}/0_j2k.dcm")
        assert np.abs(images[int(a["row"])].astype(np.float32) - images[int(b["row"])]).max() == 0
        assert a["sha256"] == b["sha256"] and a["split"] == b["split"]


def test_parallel_decoding_matches_serial(project, demo_archive):
    serial = run_prepare(project, f"data.source={demo_archive}", "prepare.workers=1")
    a = np.load(project / "data/prepared/images.npy")
    parallel = run_prepare(project, f"data.source={demo_archive}", "prepare.workers=2")
    np.testing.assert_array_equal(a, np.load(project / "data/prepared/images.npy"))
    assert serial["splits"] == parallel["splits"]


def test_params_paths_are_used(project, demo_archive, tmp_path):
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["paths"]["prepared"] == "data/prepared"
    run_prepare(project, f"data.source={demo_archive}", f"paths.prepared={tmp_path / 'elsewhere'}", "mlflow.enabled=false")
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == [
        "images.npy", "index.csv", "quarantine.csv", "summary.json"]
    assert not (project / "data/prepared").exists()
