"""Public chest X-ray datasets as they are downloaded, in miniature: the real folder nesting, file names and
CSV columns, a few generated images. Each is read with the params the README gives for it."""
import csv
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, stage_args
from imaging.dicom_write import grey_dataset
from imaging.phantoms import Anatomy, chest_phantom
from pipeline import inspect, prepare

NIH_COLUMNS = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
               "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]"]
CHEXPERT_COLUMNS = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Enlarged Cardiomediastinum",
                    "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis",
                    "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices"]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def phantom(rng, sick, size=48):
    return (chest_phantom(rng, size, Anatomy.sample(rng), sick) * 255).astype(np.uint8)


def run(project, *overrides):
    return prepare.main(stage_args(project, "prepare.size=32", "mlflow.enabled=false", *overrides))


def plan(project, *overrides):
    return inspect.main(stage_args(project, *overrides))


def quarantine(project):
    return {r["path"]: r["reason"] for r in read_csv(project / "data/prepared/quarantine.csv")}


def index(project):
    return read_csv(project / "data/prepared/index.csv")


# ---------------------------------------------------------------- Kermany: chest_xray/{train,val,test}/{CLASS}

def kermany(root: Path, rng, train=(10, 14), test=(4, 6), val=(2, 2)) -> Path:
    """chest_xray/ as unpacked from the Mendeley/Kaggle archive, with .DS_Store and __MACOSX junk."""
    cx = root / "chest_xray"
    counter = {"p": 1, "n": 1}
    for split, (n_normal, n_pneu) in (("train", train), ("val", val), ("test", test)):
        for cls, n in (("NORMAL", n_normal), ("PNEUMONIA", n_pneu)):
            (cx / split / cls).mkdir(parents=True)
            i = 0
            while i < n:
                if cls == "PNEUMONIA":
                    pid = counter["p"]
                    counter["p"] += 1
                    names = [f"person{pid}_bacteria_{pid * 3}.jpeg", f"person{pid}_virus_{pid * 3 + 1}.jpeg"][: n - i]
                else:
                    pid = counter["n"]
                    counter["n"] += 1
                    names = [f"{'NORMAL2-' if pid % 2 else ''}IM-{pid:04d}-0001.jpeg"]
                for name in names:
                    Image.fromarray(np.repeat(phantom(rng, cls == "PNEUMONIA")[..., None], 3, 2)).save(cx / split / cls / name)
                i += len(names)
    (cx / "train" / "NORMAL" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "__MACOSX" / "chest_xray").mkdir(parents=True)
    (root / "__MACOSX" / "chest_xray" / "._train").write_bytes(b"\0")
    return cx


@pytest.fixture
def kermany_project(project):
    cx = kermany(project / "download", np.random.default_rng(0))
    return project, cx


def test_kermany_download_keeps_its_published_test_split(kermany_project):
    project, cx = kermany_project
    s = run(project, f"data.source={cx}")
    assert s["kind"] == "folders" and s["classes"] == ["NORMAL", "PNEUMONIA"]
    assert s["class_counts"] == {"NORMAL": 16, "PNEUMONIA": 22}
    # test is exactly the test folder; the 4-image val folder is below data.min_val_images, so it joins
    # train and val is carved from that pool by patient
    rows = index(project)
    official = sorted(f"test/{c}/{f.name}" for c in ("NORMAL", "PNEUMONIA") for f in (cx / "test" / c).iterdir())
    assert sorted(r["path"] for r in rows if r["split"] == "test") == official
    assert s["splits"]["test"] == {"images": 10, "patients": s["splits"]["test"]["patients"], "NORMAL": 4, "PNEUMONIA": 6}
    assert s["split_origin"]["test"] == "published" and s["split_origin"]["val"].startswith("carved")
    assert {r["path"].split("/")[0] for r in rows if r["split"] in ("train", "val")} == {"train", "val"}
    assert s["splits"]["val"]["images"] > 0 and s["splits"]["val"]["NORMAL"] > 0 and s["splits"]["val"]["PNEUMONIA"] > 0
    carved = {}
    for r in rows:
        if r["split"] != "test":
            assert carved.setdefault(r["patient_id"], r["split"]) == r["split"], "a patient straddles train and val"
    assert {r["patient_id"] for r in rows} >= {"person1", "IM-0002", "NORMAL2-IM-0001"}
    assert s["patient_id_from"] == {"regex": 38} and s["skipped_hidden_files"] == 1  # .DS_Store
    assert s["quarantined"] == 0 and "published (split folders test/, train/, val/)" in s["split_from"]
    # with data.min_val_images below 4, the published val folder is kept as it is
    s = run(project, f"data.source={cx}", "data.min_val_images=2")
    assert s["split_origin"] == {"train": "published", "val": "published", "test": "published"}
    assert sorted(r["path"] for r in index(project) if r["split"] == "val") == sorted(
        f"val/{c}/{f.name}" for c in ("NORMAL", "PNEUMONIA") for f in (cx / "val" / c).iterdir())
    # split_from=patients ignores the published split, and says so
    s = run(project, f"data.source={cx}", "data.split_from=patients")
    assert s["split_from"].startswith("patients") and any("ignored" in w for w in s["warnings"])
    assert sorted(r["path"] for r in index(project) if r["split"] == "test") != official


def test_patients_in_two_published_splits_are_counted(project):
    cx = project / "cx"
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for cls in ("NORMAL", "PNEUMONIA"):
            (cx / split / cls).mkdir(parents=True)
            for p in range(6):
                name = f"person{p}_bacteria_{split}.jpeg" if cls == "PNEUMONIA" else f"IM-{p + (0 if split == 'train' else 100):04d}-0001.jpeg"
                Image.fromarray(phantom(rng, cls == "PNEUMONIA")).save(cx / split / cls / name)
    s = run(project, f"data.source={cx}")
    assert s["patients_in_several_published_splits"] == 6  # person0..5 in train and test
    assert any("6 patient ids appear in more than one published split" in w for w in s["warnings"])
    assert "6 patient ids in more than one published split" in s["split_from"]  # the report shows split_from
    assert s["splits"]["test"]["images"] == 12


def test_shapes_that_cannot_be_meant_stop_with_what_was_found(kermany_project):
    project, cx = kermany_project
    # pointed one level too high: chest_xray/ would be read as one class holding train/ and test/
    with pytest.raises(SystemExit, match=r"class folder chest_xray/ holds folders named like splits \['test', 'train', "
                                         r"'val'\].*Point data.source at chest_xray/"):
        run(project, f"data.source={cx.parent}")
    # the Kaggle copy unpacks a second chest_xray/ inside the first, beside train/ val/ test/
    (cx / "chest_xray" / "train" / "NORMAL").mkdir(parents=True)
    with pytest.raises(SystemExit, match=r"split folders \['test', 'train', 'val'\] beside other folders \['chest_xray'\]"):
        run(project, f"data.source={cx}")
    with pytest.raises(SystemExit) as e:
        plan(project, f"data.source={cx}")
    assert e.value.code == 1
    # a split folder holding split folders
    (cx / "chest_xray").rename(cx.parent / "moved")
    (cx / "test" / "test").mkdir()
    with pytest.raises(SystemExit, match=r"split folder test/ holds folders named like splits \['test'\]"):
        run(project, f"data.source={cx}")


def test_inspect_tells_the_kermany_plan_without_decoding(kermany_project, monkeypatch, capsys):
    project, cx = kermany_project
    prepared = run(project, f"data.source={cx}")
    import imaging.decode

    def no_decoding(*a, **k):
        raise AssertionError("inspect decoded an image")

    monkeypatch.setattr(imaging.decode, "read_any", no_decoding)
    monkeypatch.setattr(Image, "open", no_decoding)
    p = plan(project, f"data.source={cx}")
    out = capsys.readouterr().out
    assert p["classes"] == ["NORMAL", "PNEUMONIA"] and p["kind"] == "folders"
    assert p["splits"]["test"] == prepared["splits"]["test"]  # the published part is exact
    assert sum(p["splits"][s]["images"] for s in ("train", "val", "test")) == 38
    assert p["split_origin"] == prepared["split_origin"]
    assert p["patients"]["count"] == prepared["patients"] and p["patients"]["images_per_patient"]["max"] == 2
    assert "published: split folders test/, train/, val/" in out and "val: carved from the published train" in out
    assert "NORMAL" in out and "PNEUMONIA" in out and "warnings" in out


def test_train_fraction_keeps_a_share_of_training_patients_only(kermany_project):
    project, cx = kermany_project
    full = run(project, f"data.source={cx}")
    rows_full = index(project)
    s = run(project, f"data.source={cx}", "data.train_fraction=0.5")
    rows = index(project)
    held = lambda rs: sorted((r["path"], r["split"]) for r in rs if r["split"] != "train")  # noqa: E731
    assert held(rows) == held(rows_full)  # val and test untouched
    kept = {r["patient_id"] for r in rows if r["split"] == "train"}
    all_train = {r["patient_id"] for r in rows_full if r["split"] == "train"}
    assert kept < all_train and abs(len(kept) - len(all_train) / 2) <= 1
    assert {r["label_name"] for r in rows if r["split"] == "train"} == {"NORMAL", "PNEUMONIA"}
    dropped = [p for p, r in quarantine(project).items() if r.startswith("train_fraction:")]
    assert len(dropped) == s["train_fraction"]["train_images_dropped"] == full["prepared"] - s["prepared"]
    assert s["found"] == full["found"]  # every file is either prepared or listed with its reason
    again = run(project, f"data.source={cx}", "data.train_fraction=0.5")
    assert again["splits"] == s["splits"]


# ---------------------------------------------------------------- NIH ChestX-ray14

NIH_PARAMS = ("data.labels=Data_Entry_2017.csv", "data.labels_key=Image Index", "data.labels_column=Finding Labels",
              "data.patient_column=Patient ID", "++data.label_map={Pneumonia: pneumonia, No Finding: normal}")


def nih(root: Path, rng) -> Path:
    findings = {  # (patient, follow-up): Finding Labels
        (1, 0): "No Finding", (1, 1): "Pneumonia|Effusion", (2, 0): "Effusion", (3, 0): "Infiltration|Pneumonia",
        (4, 0): "No Finding", (4, 1): "No Finding", (5, 0): "Pneumonia", (6, 0): "No Finding", (7, 0): "Atelectasis",
        (8, 0): "No Finding", (9, 0): "Pneumonia", (10, 0): "No Finding", (11, 0): "Pneumonia", (12, 0): "No Finding",
    }
    rows = []
    for (p, fu), finding in findings.items():
        name = f"{p:08d}_{fu:03d}.png"
        folder = root / f"images_{1 + p // 7:03d}" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(phantom(rng, "Pneumonia" in finding)).save(folder / name)
        rows.append([name, finding, fu, p, 40 + p, "M", "PA", 2500, 2048, 0.168, 0.168])
    rows.append(["00099999_000.png", "Pneumonia", 0, 99999, 50, "F", "AP", 2500, 2048, 0.168, 0.168])  # not downloaded
    with open(root / "Data_Entry_2017.csv", "w", newline="") as f:
        csv.writer(f).writerows([NIH_COLUMNS, *rows])
    (root / "README_CHESTXRAY.pdf").write_bytes(b"%PDF-1.4")
    return root


def test_nih_data_entry_csv(project):
    src = nih(project / "nih", np.random.default_rng(2))
    s = run(project, f"data.source={src}", *NIH_PARAMS)
    assert s["kind"] == "csv" and s["classes"] == ["normal", "pneumonia"]
    assert s["class_counts"] == {"normal": 7, "pneumonia": 5}
    assert s["labels_from"]["key_matches"] == "name"  # bare file names; the images sit in images_NNN/images/
    assert s["patient_id_from"] == {"csv": 12} and s["patients"] == 10  # patients 2 and 7: other findings only
    q = quarantine(project)
    assert q["images_001/images/00000002_000.png"].startswith("unmapped_label: Finding Labels 'Effusion'")
    assert q["images_002/images/00000007_000.png"].startswith("unmapped_label:")
    assert q["README_CHESTXRAY.pdf"].startswith("no_label:")
    assert s["quarantine_reasons"] == {"no_label": 1, "unmapped_label": 2}
    rows = {r["path"]: r for r in index(project)}
    assert rows["images_001/images/00000001_001.png"]["label_name"] == "pneumonia"  # Pneumonia|Effusion
    assert rows["images_001/images/00000003_000.png"]["label_name"] == "pneumonia"  # Infiltration|Pneumonia
    assert rows["images_001/images/00000001_000.png"]["patient_id"] == "1"
    assert rows["images_001/images/00000001_000.png"]["split"] == rows["images_001/images/00000001_001.png"]["split"]
    assert any("1 of the 15 keys in the labels CSV name no file" in w for w in s["warnings"])
    # a map that matches nothing, or a column that is not there, stops with what was found
    with pytest.raises(SystemExit, match=r"data.label_map \(keys \['pneumonia'\]\) matches none of the .* values of "
                                         r"column 'Finding Labels'; found: 'No Finding' \(7\)"):
        run(project, f"data.source={src}", *NIH_PARAMS[:-1], "++data.label_map={pneumonia: pneumonia}")
    with pytest.raises(SystemExit, match=r"data.labels_column is 'Finding'.*its columns are \['Image Index', "
                                         r"'Finding Labels', "):
        run(project, f"data.source={src}", *NIH_PARAMS[:2], "data.labels_column=Finding")


def test_nih_split_lists_are_the_published_split(project, capsys):
    """NIH's train_val_list.txt and test_list.txt (file names, by patient) are its official split: kept as
    published when both are in the source, in inspect as in prepare; an image in neither is quarantined, one in
    both stops, names of images not downloaded are counted in a warning."""
    src = nih(project / "nih", np.random.default_rng(3))
    names = sorted(p.name for p in src.glob("images_*/images/*.png"))
    test = [n for n in names if int(n[:8]) >= 10] + ["00099999_000.png"]   # not downloaded
    (src / "test_list.txt").write_text("\n".join(test) + "\n")
    (src / "train_val_list.txt").write_text("\n".join(n for n in names if int(n[:8]) < 10 and n != "00000006_000.png"))
    p = plan(project, f"data.source={src}", *NIH_PARAMS, "data.min_val_images=1")
    s = run(project, f"data.source={src}", *NIH_PARAMS, "data.min_val_images=1")
    assert p["published_split"] == "split lists train_val_list.txt (train), test_list.txt (test)"
    assert s["split_from"].startswith("published (split lists train_val_list.txt (train), test_list.txt (test))")
    assert s["split_origin"]["test"] == "published" and p["splits"] == s["splits"]
    assert {r["path"].split("/")[-1] for r in index(project) if r["split"] == "test"} == \
        {"00000010_000.png", "00000011_000.png", "00000012_000.png"}
    q = quarantine(project)
    assert q["images_001/images/00000006_000.png"].startswith("not_in_split_lists: in none of ['test_list.txt', ")
    assert not any(path.endswith(".txt") for path in q)
    # listed images the CSV leaves out (other findings: unmapped_label) are no missing download
    assert [w for w in s["warnings"] if "_list.txt" in w] == \
        ["1 names in test_list.txt match no image under the source (e.g. '00099999_000.png')"]
    assert run(project, f"data.source={src}", *NIH_PARAMS, "data.split_from=patients")["split_origin"]["test"] \
        != "published"
    (src / "test_list.txt").write_text("images/00000010_000.png\n")   # a prefix the files do not have
    with pytest.raises(SystemExit, match=r"name none of the .* labelled images \(lines like \['images/00000010_0"):
        run(project, f"data.source={src}", *NIH_PARAMS, "++data.split_lists={test: test_list.txt}")
    (src / "test_list.txt").write_text("00000010_000.png\n00000001_000.png\n")   # 00000001_000.png in both lists
    with pytest.raises(SystemExit, match=r"images_001/images/00000001_000.png is in two split lists "
                                         r"\(train_val_list.txt:1, test_list.txt:2\)"):
        run(project, f"data.source={src}", *NIH_PARAMS)
    (src / "train_val_list.txt").unlink()   # one list alone is no split, and the summary says it is there
    assert any(w.startswith("one of NIH's split lists ['train_val_list.txt', 'test_list.txt'] is in the source")
               for w in plan(project, f"data.source={src}", *NIH_PARAMS, "data.min_val_images=1")["warnings"])


def test_split_lists_beside_split_folders_must_agree(project, capsys):
    """data.split_lists names other list files; split folders beside them must agree image for image."""
    src = project / "tree"
    rng = np.random.default_rng(19)
    for split in ("train", "test"):
        for cls in ("normal", "sick"):
            pngs(src / split / cls, [f"{split}{cls}{i}.png" for i in range(3)], rng)
    rels = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.png"))
    (src / "tr.txt").write_text("\n".join(r for r in rels if r.startswith("train/")))
    (src / "te.txt").write_text("\n".join(r for r in rels if r.startswith("test/")))
    lists = "++data.split_lists={train: tr.txt, test: te.txt}"
    assert plan(project, f"data.source={src}", lists, "data.min_val_images=1")["published_split"] == \
        "split folders test/, train/ (agrees with split lists tr.txt (train), te.txt (test))"
    moved = "train/sick/trainsick0.png"   # in the train folder, listed as a test image
    (src / "tr.txt").write_text("\n".join(r for r in rels if r.startswith("train/") and r != moved))
    (src / "te.txt").write_text("\n".join(r for r in rels if r.startswith("test/")) + "\n" + moved)
    with pytest.raises(SystemExit):
        plan(project, f"data.source={src}", lists)
    assert ("disagree for 1 images (1 train by the split folders test/, train/ and test by the lists; "
            "e.g. 'train/sick/trainsick0.png')") in capsys.readouterr().err
    with pytest.raises(SystemExit):
        plan(project, f"data.source={src}", "++data.split_lists={test: ../te.txt}")
    assert "split list(s) ['../te.txt'] (data.split_lists) lie outside data.source" in capsys.readouterr().err


# ---------------------------------------------------------------- CheXpert

CHEXPERT_PARAMS = ("data.labels=[train.csv, valid.csv]", "data.labels_column=Pneumonia",
                   '++data.label_map={1.0: pneumonia, 0.0: normal}', r"data.patient_regex='(patient\d+)'")


def chexpert(root: Path, rng) -> Path:
    """CheXpert-v1.0-small/: train.csv, valid.csv (Path carries the dataset prefix), patientNNNNN/studyN/."""
    top = root / "CheXpert-v1.0-small"
    values = {"train": ["1.0", "0.0", "0.0", "-1.0", "", "1.0", "0.0", "1.0", "0.0", "1.0", "0.0", "1.0"],
              "valid": ["1.0", "0.0", "1.0", "0.0"]}
    pid = 1
    for split, vals in values.items():
        rows = []
        for i, v in enumerate(vals):
            if split == "train" and i % 3 == 2:  # a second study of the previous patient
                p, study = pid - 1, 2
            else:
                p, study = pid, 1
                pid += 1
            rel = f"{split}/patient{p:05d}/study{study}/view1_frontal.jpg"
            (top / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(phantom(rng, v == "1.0")).save(top / rel)
            row = dict.fromkeys(CHEXPERT_COLUMNS, "")
            row.update({"Path": f"CheXpert-v1.0-small/{rel}", "Sex": "Female", "Age": "60",
                        "Frontal/Lateral": "Frontal", "AP/PA": "AP", "Pneumonia": v, "Support Devices": "1.0"})
            rows.append(row)
        with open(top / f"{split}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CHEXPERT_COLUMNS)
            w.writeheader()
            w.writerows(rows)
    return top


def test_chexpert_csvs(project):
    src = chexpert(project / "dl", np.random.default_rng(3))
    s = run(project, f"data.source={src}", *CHEXPERT_PARAMS, "data.min_val_images=2")
    assert s["labels_from"]["key_matches"] == "suffix"  # Path = CheXpert-v1.0-small/<path relative to the source>
    assert s["class_counts"] == {"normal": 7, "pneumonia": 7}
    assert s["quarantine_reasons"] == {"unmapped_label": 2}  # -1.0 (uncertain) and blank: never guessed
    q = quarantine(project)
    assert sorted(r.split(":")[1].strip() for r in q.values()) == ["Pneumonia '' is not covered by data.label_map "
                                                                   "(keys ['1.0', '0.0'])",
                                                                   "Pneumonia '-1.0' is not covered by data.label_map "
                                                                   "(keys ['1.0', '0.0'])"]
    rows = index(project)
    # valid/ is the published val split; CheXpert publishes no test split here, so test is carved from train
    assert sorted(r["path"] for r in rows if r["split"] == "val") == sorted(
        f"valid/patient{p:05d}/study1/view1_frontal.jpg" for p in range(9, 13))
    assert {r["path"].split("/")[0] for r in rows if r["split"] == "test"} == {"train"}
    assert s["split_origin"]["test"].startswith("carved") and any("no test split" in w for w in s["warnings"])
    assert {r["patient_id"] for r in rows} == {f"patient{p:05d}" for p in range(1, 13)} - {
        "patient00003"}  # patient00003's only study is the blank label
    assert s["patient_id_from"] == {"regex": 14}
    by_patient = {}
    for r in rows:
        assert by_patient.setdefault(r["patient_id"], r["split"]) == r["split"]



def test_chexpert_from_the_folder_above_keeps_the_published_split(project):
    """data.source one level above CheXpert-v1.0-small/ (its CSV paths then match exactly): the split folders
    train/, valid/ sit below a folder that holds everything, and valid/ stays the val split (it was split anew)."""
    dl = project / "dl"
    chexpert(dl, np.random.default_rng(3))
    labels = "data.labels=[CheXpert-v1.0-small/train.csv, CheXpert-v1.0-small/valid.csv]"
    s = run(project, f"data.source={dl}", labels, *CHEXPERT_PARAMS[1:], "data.min_val_images=2")
    assert s["labels_from"]["key_matches"] == "path"
    assert s["split_origin"]["val"] == "published" and s["class_counts"] == {"normal": 7, "pneumonia": 7}
    assert sorted(r["path"] for r in index(project) if r["split"] == "val") == sorted(
        f"CheXpert-v1.0-small/valid/patient{p:05d}/study1/view1_frontal.jpg" for p in range(9, 13))

# ---------------------------------------------------------------- RSNA pneumonia detection

RSNA_PARAMS = ("data.labels=stage_2_train_labels.csv", "++data.label_map={0: normal, 1: pneumonia}")


def rsna(root: Path, rng) -> Path:
    """stage_2_train_images/<patientId>.dcm, stage_2_train_labels.csv (one row per box), unlabelled test images."""
    rows = []
    for i in range(12):
        pid = f"{i:08x}-{i:04x}-4e49-80ba-63a80b6bddd6"
        target = i % 2
        (root / "stage_2_train_images").mkdir(parents=True, exist_ok=True)
        grey_dataset(phantom(rng, bool(target)), bits_stored=8, PatientID=pid, photometric="MONOCHROME2").save_as(
            root / "stage_2_train_images" / f"{pid}.dcm", enforce_file_format=True)
        if target:
            rows += [[pid, 264, 152, 213, 379, 1], [pid, 562, 152, 256, 453, 1]]  # two boxes: two rows that agree
        else:
            rows.append([pid, "", "", "", "", 0])
    rows.append(["0000000a-000a-4e49-80ba-63a80b6bddd6", 264, 152, 213, 379, 1])  # disagrees with its Target 0 row
    (root / "stage_2_test_images").mkdir()
    grey_dataset(phantom(rng, False), bits_stored=8, PatientID="00000013-test").save_as(
        root / "stage_2_test_images" / "00000013-test.dcm", enforce_file_format=True)
    with open(root / "stage_2_train_labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["patientId", "x", "y", "width", "height", "Target"], *rows])
    (root / "stage_2_detailed_class_info.csv").write_text("patientId,class\n")
    return root


def test_rsna_labels(project):
    src = rsna(project / "rsna", np.random.default_rng(4))
    s = run(project, f"data.source={src}", *RSNA_PARAMS)
    assert s["labels_from"]["key_column"] == "patientId" and s["labels_from"]["key_matches"] == "stem"
    assert s["labels_from"]["label_column"] == "Target"
    assert s["class_counts"] == {"normal": 5, "pneumonia": 6}  # two agreeing rows per pneumonia image are fine
    q = quarantine(project)
    assert q["stage_2_train_images/0000000a-000a-4e49-80ba-63a80b6bddd6.dcm"].startswith(
        "conflicting_labels: 2 rows for '0000000a-000a-4e49-80ba-63a80b6bddd6' disagree: '0'")
    assert q["stage_2_test_images/00000013-test.dcm"].startswith("no_label:")
    assert q["stage_2_detailed_class_info.csv"].startswith("no_label:")
    assert s["quarantine_reasons"] == {"conflicting_labels": 1, "no_label": 2}
    assert s["patient_id_from"] == {"dicom": 11} and s["split_from"].startswith("patients")


def test_csv_split_column_is_kept(project):
    """Split values in any case, MIMIC-CXR's 'validate' among them."""
    src = project / "tree"
    src.mkdir()
    rng = np.random.default_rng(5)
    rows = []
    for i in range(16):
        Image.fromarray(phantom(rng, i // 4 % 2 == 1)).save(src / f"img{i}.png")   # both classes in every split
        rows.append([f"img{i}.png", "sick" if i // 4 % 2 else "well", f"P{i // 2}",
                     ["TRAIN", "Validate", "Test", "train"][i % 4]])
    with open(src / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["file", "diagnosis", "patient", "split"], *rows])
    s = run(project, f"data.source={src}", "data.patient_column=patient", "data.min_val_images=1")
    assert s["split_origin"] == {"train": "published", "val": "published", "test": "published"}
    assert {s2: v["images"] for s2, v in s["splits"].items()} == {"train": 8, "val": 4, "test": 4}
    assert s["patients_in_several_published_splits"] == 8  # P0 = img0 (train) + img1 (val), ...
    (src / "labels.csv").write_text("file,diagnosis,split\nimg0.png,well,holdout\n")
    with pytest.raises(SystemExit, match=r"column 'split' holds 'holdout'.*expected train, val or test"):
        run(project, f"data.source={src}")


def test_a_path_ending_two_keys_share_is_quarantined_not_given_the_first_row(project):
    """The CSV names files of two sites (siteA/p0/img.png, siteB/p0/img.png) and the source holds one site: the
    files of the patients both sites have are not labelled by whichever row comes first."""
    src = project / "siteA"
    rng = np.random.default_rng(6)
    rows = []
    for i in range(16):
        (src / f"p{i}").mkdir(parents=True)
        Image.fromarray(phantom(rng, i % 2 == 1)).save(src / f"p{i}" / "img.png")
        rows.append([f"archive/siteA/p{i}/img.png", "sick" if i % 2 else "well"])
        if i < 2:
            rows.append([f"archive/siteB/p{i}/img.png", "well" if i % 2 else "sick"])   # another patient, another label
    with open(src / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["file", "diagnosis"], *rows])
    s = run(project, f"data.source={src}", "data.min_val_images=1")
    assert s["labels_from"]["key_matches"] == "suffix"
    q = quarantine(project)
    assert sorted(q) == ["p0/img.png", "p1/img.png"]
    assert q["p0/img.png"].startswith("ambiguous_key: 2 values of 'file' end with this path "
                                      "(['archive/siteA/p0/img.png', 'archive/siteB/p0/img.png'])")
    assert s["prepared"] == 14


def uid_keyed(root: Path, rng, splits=("train", "train", "test"), split_column: bool = False) -> Path:
    """DICOM files in <split>/ folders, a labels CSV keyed by SOPInstanceUID (the header resolves it), two
    patients per split entry, two images each; with ``split_column`` the split is a CSV column instead."""
    rows = []
    for p in range(2 * len(splits)):
        split = splits[p // 2]
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            ds = grey_dataset(phantom(rng, p % 2 == 1), bits_stored=8, PatientID=f"PAT{p}")
            ds.save_as(root / split / f"p{p}_{i}.dcm", enforce_file_format=True)
            rows.append([ds.SOPInstanceUID, "sick" if p % 2 else "well"] + ([split] if split_column else []))
    with open(root / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["SOPInstanceUID", "label"] + (["split"] if split_column else []), *rows])
    (root / "README.txt").write_text("not an image")  # an unlabelled extra outside the split folders
    return root


def test_split_folders_are_kept_when_labels_are_keyed_by_a_dicom_header_field(project):
    src = uid_keyed(project / "uid", np.random.default_rng(7))
    p = plan(project, f"data.source={src}")
    s = run(project, f"data.source={src}")
    for got in (p, s):
        assert got["split_origin"]["test"] == "published" and got["split_origin"]["val"].startswith("carved")
        assert got["splits"]["test"]["images"] == 4 and got["splits"]["train"]["images"] > 0
    assert s["split_from"].startswith("published (split folders test/, train/)")
    assert {r["path"] for r in index(project) if r["split"] == "test"} == {f"test/p{p}_{i}.dcm" for p in (4, 5)
                                                                          for i in (0, 1)}
    assert quarantine(project)["README.txt"].startswith("not_dicom:")


def test_split_column_values_read_alike_whatever_the_csv_key(project, capsys):
    src = uid_keyed(project / "uid", np.random.default_rng(8), split_column=True)
    (src / "README.txt").unlink()
    with open(src / "labels.csv", newline="") as f:
        rows = list(csv.reader(f))
    rows[1][2] = "fold1"
    (src / "labels.csv").write_text("\n".join(",".join(r) for r in rows) + "\n")
    message = r"column 'split' holds 'fold1' \(labels.csv:2\); expected train, val or test"
    with pytest.raises(SystemExit, match=message):
        run(project, f"data.source={src}")
    with pytest.raises(SystemExit):
        plan(project, f"data.source={src}")
    assert re.search(message, capsys.readouterr().err)
    # two rows for one image that name different splits quarantine it, in inspect as in prepare
    rows[1][2] = "train"
    rows.append([rows[1][0], rows[1][1], "TEST"])
    (src / "labels.csv").write_text("\n".join(",".join(r) for r in rows) + "\n")
    p = plan(project, f"data.source={src}")
    s = run(project, f"data.source={src}")
    reason = quarantine(project)["train/p0_0.dcm"]
    assert reason.startswith("conflicting_splits: rows for sop_instance_uid") and "['TEST', 'train']" in reason
    assert p["quarantine_before_decoding"] == s["quarantine_reasons"] == {"conflicting_splits": 1}
    assert p["splits"] == s["splits"] and s["splits"]["test"]["images"] == 4

def test_a_header_keyed_split_column_is_compared_with_the_split_folders(project, capsys):
    """Labels keyed by SOPInstanceUID with a split column, the files in train/ and test/: the rows are matched
    after decoding, and there the column is compared with the folders, in inspect as in prepare."""
    src = uid_keyed(project / "uid", np.random.default_rng(9), split_column=True)
    (src / "README.txt").unlink()
    assert plan(project, f"data.source={src}")["published_split"] == \
        "column 'split' (agrees with split folders test/, train/)"
    assert run(project, f"data.source={src}")["split_from"].startswith(
        "published (column 'split' (agrees with split folders test/, train/))")
    with open(src / "labels.csv", newline="") as f:
        rows = list(csv.reader(f))
    rows[1][2] = "test"   # train/p0_0.dcm said to be a test image
    (src / "labels.csv").write_text("\n".join(",".join(r) for r in rows) + "\n")
    message = (r"column 'split' and the split folders \['test', 'train'\] disagree for 1 of 12 labelled images "
               r"\(1 in the train folder marked 'test'; e.g. 'train/p0_0.dcm'\)")
    with pytest.raises(SystemExit, match=message):
        run(project, f"data.source={src}")
    with pytest.raises(SystemExit):
        plan(project, f"data.source={src}")
    assert re.search(message, capsys.readouterr().err)
    assert run(project, f"data.source={src}", "data.split_from=patients")["split_origin"]["test"] != "published"

# ---------------------------------------------------------------- more than 8 bits

def test_16_bit_png_with_12_bit_values_uses_most_of_the_range_and_the_guard_fires_when_mis_windowed(project):
    rng = np.random.default_rng(6)
    png, bad = project / "png16", project / "miswindowed"
    for cls in ("normal", "pneumonia"):
        (png / cls).mkdir(parents=True)
        (bad / cls).mkdir(parents=True)
        for i in range(3):
            vals = (chest_phantom(rng, 96, Anatomy.sample(rng), cls == "pneumonia") * 4095).astype(np.uint16)
            Image.fromarray(vals).save(png / cls / f"{cls}{i}.png")
            assert Image.open(png / cls / f"{cls}{i}.png").mode == "I;16"
            grey_dataset(vals, bits_stored=16, PatientID=f"{cls}{i}", WindowCenter=32768, WindowWidth=65536).save_as(
                bad / cls / f"{cls}{i}.dcm", enforce_file_format=True)
    s = run(project, f"data.source={png}")
    images = np.load(project / "data/prepared/images.npy").astype(np.float32)
    spans = images.max(axis=(1, 2, 3)) - images.min(axis=(1, 2, 3))
    assert spans.min() > 1.6 and s["low_contrast_share"] == 0 and s["voi"] == {"minmax": 6}
    assert not any("prepare.voi" in w for w in s.get("warnings", []))
    s = run(project, f"data.source={bad}")
    assert s["voi"] == {"window": 6} and s["low_contrast_images"] == 6 and s["low_contrast_share"] == 1.0
    assert any("span less than a quarter of [-1, 1]" in w and "prepare.voi" in w for w in s["warnings"])
    s = run(project, f"data.source={bad}", "prepare.voi=percentile")
    assert s["low_contrast_share"] == 0


# ---------------------------------------------------------------- inspect on the other layouts, bench smoke

def test_inspect_on_csv_layouts_matches_prepare(project):
    src = nih(project / "nih", np.random.default_rng(2))
    p = plan(project, f"data.source={src}", *NIH_PARAMS)
    s = run(project, f"data.source={src}", *NIH_PARAMS)
    assert p["quarantine_before_decoding"] == s["quarantine_reasons"]
    assert p["classes"] == s["classes"] and p["patients"]["count"] == s["patients"]
    assert {k: v["images"] for k, v in p["splits"].items()} == {k: v["images"] for k, v in s["splits"].items()}
    src = rsna(project / "rsna", np.random.default_rng(4))
    p = plan(project, f"data.source={src}", *RSNA_PARAMS)
    assert p["quarantine_before_decoding"] == {"conflicting_labels": 1, "no_label": 2}
    assert p["patients"]["id_from"] == {"dicom": 11}  # PatientID from the header, pixels left alone


def test_bench_published_layouts_smoke(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import published_layouts
    finally:
        sys.path.remove(str(ROOT / "bench"))
    res = published_layouts.main(["--smoke", "--work", str(tmp_path / "work"), "--results", str(tmp_path)])
    assert json.loads((tmp_path / "published_layouts.json").read_text()) == res
    k = res["kermany"]
    assert k["classes"] == ["NORMAL", "PNEUMONIA"] and k["test_is_exactly_the_published_test_folder"]
    assert k["splits"]["test"]["images"] == 6 and k["split_origin"]["val"].startswith("carved")
    assert res["nih"]["class_counts"] == {"cardiomegaly": 1, "normal": 2, "pneumonia": 1}
    assert res["png16_12bit"]["median_span"] > 1.5 and res["miswindowed"]["low_contrast_share"] == 1.0


# ---------------------------------------------------------------- layouts that must not be mis-read

def pngs(folder: Path, names, rng, mask=False):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        a = np.zeros((48, 48), np.uint8) if mask else phantom(rng, False)
        if mask:
            a[8:40, 6:20] = a[8:40, 28:42] = 255  # two lung fields
        Image.fromarray(a).save(folder / name)


def test_segmentation_masks_beside_the_images_are_quarantined_not_read_as_the_class(project):
    rng = np.random.default_rng(10)
    # COVID-19 Radiography Database (Kaggle): <CLASS>/images/*.png beside <CLASS>/masks/*.png
    src = project / "COVID-19_Radiography_Dataset"
    for cls in ("COVID", "Normal"):
        names = [f"{cls}-{i}.png" for i in range(1, 5)]
        pngs(src / cls / "images", names, rng)
        pngs(src / cls / "masks", names, rng, mask=True)
    s = run(project, f"data.source={src}", "data.min_val_images=1")
    assert s["class_counts"] == {"COVID": 4, "Normal": 4} and s["quarantine_reasons"] == {"segmentation_mask": 8}
    q = quarantine(project)
    assert q["COVID/masks/COVID-1.png"].startswith("segmentation_mask: in the folder COVID/masks/")
    assert not any("/masks/" in r["path"] for r in index(project))
    # COVID-QU-Ex: <Split>/<CLASS>/images beside "lung masks" (and "infection masks")
    qu = project / "Lung Segmentation Data"
    for split in ("Train", "Val", "Test"):
        for cls in ("COVID-19", "Normal"):
            names = [f"{split}_{cls}_{i}.png" for i in range(3)]
            pngs(qu / split / cls / "images", names, rng)
            pngs(qu / split / cls / ("lung masks" if split != "Test" else "Infection Masks"), names, rng, mask=True)
    p = plan(project, f"data.source={qu}", "data.min_val_images=1")
    assert p["quarantine_before_decoding"] == {"segmentation_mask": 18} and p["usable_before_decoding"] == 18
    assert p["splits"]["test"]["images"] == 6


def test_symlinked_folders_inside_the_source_are_read(project, capsys):
    """A layout assembled with links to avoid copying a download: chest_xray/test -> elsewhere, a class folder
    linked; a link back to an ancestor (a loop) is not followed."""
    rng = np.random.default_rng(11)
    store, cx = project / "store", project / "chest_xray"
    for split, first in (("train", 1), ("test", 101)):
        pngs(store / split / "NORMAL", [f"IM-{i:04d}-0001.png" for i in range(first, first + 4)], rng)
        pngs(store / split / "PNEUMONIA", [f"person{i}_virus_{i}.png" for i in range(first, first + 4)], rng)
    (cx / "train").mkdir(parents=True)
    (cx / "train" / "NORMAL").symlink_to(store / "train" / "NORMAL")
    (cx / "train" / "PNEUMONIA").symlink_to(store / "train" / "PNEUMONIA")
    (cx / "test").symlink_to(store / "test")
    (store / "test" / "NORMAL" / "loop").symlink_to(store / "test")
    (store / "test" / "NORMAL" / "up").symlink_to(project)   # a folder above the source: not walked
    p = plan(project, f"data.source={cx}")
    assert p["classes"] == ["NORMAL", "PNEUMONIA"] and p["files"] == 16
    assert p["splits"]["test"] == {"images": 8, "patients": 8, "NORMAL": 4, "PNEUMONIA": 4}
    # a link to a folder inside the source would read its images twice (here as two classes): it stops
    (cx / "train" / "PNEUMONIA" / "more").symlink_to(cx / "train" / "NORMAL")
    with pytest.raises(SystemExit):
        plan(project, f"data.source={cx}")
    assert "the folders train/NORMAL/ and train/PNEUMONIA/more/ are one folder" in capsys.readouterr().err


def test_a_published_split_missing_a_class_stops_naming_it(project, capsys):
    """test/NORMAL/ there but empty (a partial extraction): the test split kept as published would hold no NORMAL
    image. Not where the published split is not kept as it is (split_from patients; a val below min_val_images)."""
    rng = np.random.default_rng(12)
    cx = project / "chest_xray"
    pngs(cx / "train" / "NORMAL", [f"IM-{i:04d}-0001.png" for i in range(1, 9)], rng)
    pngs(cx / "train" / "PNEUMONIA", [f"person{i}_virus_{i}.png" for i in range(1, 9)], rng)
    pngs(cx / "test" / "PNEUMONIA", [f"person{i}_virus_{i}.png" for i in range(101, 104)], rng)
    (cx / "test" / "NORMAL").mkdir()
    with pytest.raises(SystemExit):
        plan(project, f"data.source={cx}")
    err = capsys.readouterr().err
    assert "the published test split has no image of class NORMAL, which train has" in err
    assert "data.split_from: patients" in err
    assert plan(project, f"data.source={cx}", "data.split_from=patients")["split_from"] == "patients"
    # Kermany's val/ (16 images, below data.min_val_images) joins train: one class missing there does not matter
    pngs(cx / "test" / "NORMAL", [f"IM-{i:04d}-0001.png" for i in range(101, 104)], rng)
    pngs(cx / "val" / "PNEUMONIA", [f"person{i}_virus_{i}.png" for i in range(201, 203)], rng)
    assert plan(project, f"data.source={cx}")["split_origin"]["val"].startswith("carved")


def test_class_names_differing_only_in_case_stop(project, capsys):
    rng = np.random.default_rng(13)
    cx = project / "chest_xray"  # train/NORMAL beside test/Normal
    for split, names in (("train", ("NORMAL", "PNEUMONIA")), ("test", ("Normal", "PNEUMONIA"))):
        for cls in names:
            pngs(cx / split / cls, [f"{split}{cls}{i}.png" for i in range(3)], rng)
    with pytest.raises(SystemExit):
        plan(project, f"data.source={cx}")
    assert "class folders name one class in several spellings: 'NORMAL' vs 'Normal'" in capsys.readouterr().err
    src = project / "tree"  # CSV label values, no data.label_map
    pngs(src, [f"{i}.png" for i in range(4)], rng)
    (src / "labels.csv").write_text("path,label\n0.png,Normal\n1.png,normal\n2.png,Pneumonia\n3.png,PNEUMONIA \n")
    with pytest.raises(SystemExit):
        plan(project, f"data.source={src}")
    err = capsys.readouterr().err
    assert "'Normal' vs 'normal'; 'PNEUMONIA' vs 'Pneumonia'" in err and "data.label_map" in err


def test_a_csv_row_with_more_fields_than_the_header_stops(project, capsys):
    """An unquoted multi-label cell: '0.png,Effusion,Pneumonia' under 'path,label' is not read as 'Effusion'."""
    src = project / "tree"
    pngs(src, [f"{i}.png" for i in range(4)], np.random.default_rng(14))
    (src / "labels.csv").write_text("path,label\n0.png,No Finding\n1.png,Effusion,Pneumonia\n2.png,No Finding\n")
    with pytest.raises(SystemExit):
        plan(project, f"data.source={src}")
    assert "labels.csv line 3 has 3 fields, its header 2: ['1.png', 'Effusion', 'Pneumonia']" in capsys.readouterr().err
    (src / "labels.csv").write_text("path,label\n0.png,No Finding,\n1.png,Effusion,\n2.png,No Finding,\n")
    assert plan(project, f"data.source={src}")["classes"] == ["Effusion", "No Finding"]  # a trailing comma is empty


def test_a_labels_csv_not_in_utf8_stops_naming_the_line(project, capsys):
    """Excel's "CSV" on Windows is cp1252 and its "Unicode text" UTF-16: a stop naming file and line, not a bare
    codec error and not a guess; UTF-8 with a byte-order mark (Excel's "CSV UTF-8") is read."""
    src = project / "tree"
    pngs(src, ["0.png", "1.png", "Müller.png"], np.random.default_rng(16))
    text = "path,label\n0.png,well\n1.png,sick\nMüller.png,sick\n"
    (src / "labels.csv").write_bytes(text.encode("cp1252"))
    with pytest.raises(SystemExit):
        plan(project, f"data.source={src}")
    err = capsys.readouterr().err
    assert "labels.csv is not UTF-8: byte b'\\xfc' on line 4" in err and "CSV UTF-8" in err
    (src / "labels.csv").write_text(text, encoding="utf-16")
    with pytest.raises(SystemExit):
        plan(project, f"data.source={src}")
    assert "labels.csv is UTF-16 text" in capsys.readouterr().err
    (src / "labels.csv").write_text(text, encoding="utf-8-sig")
    assert plan(project, f"data.source={src}")["classes"] == ["sick", "well"]


def test_a_labels_csv_outside_the_source_stops(project, capsys):
    """DVC tracks data.source: a labels CSV beside it (../labels.csv) or elsewhere could change unseen."""
    src = project / "tree"
    pngs(src, ["0.png", "1.png"], np.random.default_rng(18))
    (project / "labels.csv").write_text("path,label\n0.png,well\n1.png,sick\n")
    for name in ("../labels.csv", str(project / "labels.csv")):
        with pytest.raises(SystemExit):
            plan(project, f"data.source={src}", f"data.labels={name}", "data.kind=csv")
        assert f"labels file(s) ['{name}'] (data.labels) lie outside data.source" in capsys.readouterr().err


def test_a_split_column_that_disagrees_with_the_split_folders_stops(project, capsys):
    """train/ and test/ folders with a CSV split column: agreeing, the column is kept and the summary says they
    agree; disagreeing, the source stops (which is the published split is the user's call), unless the split is
    drawn anew by patient."""
    src = project / "tree"
    rng = np.random.default_rng(17)
    rows = []
    for split in ("train", "test"):
        for i in range(8):
            pngs(src / split, [f"{split}{i}.png"], rng)
            rows.append(f"{split}/{split}{i}.png,{'sick' if i % 2 else 'well'},{split}")
    (src / "labels.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    p = plan(project, f"data.source={src}", "data.min_val_images=1")
    assert p["published_split"] == "column 'split' (agrees with split folders test/, train/)"
    rows[0] = rows[0].replace(",train", ",test")   # train/train0.png said to be a test image
    rows[9] = rows[9].replace(",test", ",val")
    (src / "labels.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    with pytest.raises(SystemExit):
        plan(project, f"data.source={src}")
    err = capsys.readouterr().err
    assert "column 'split' and the split folders ['test', 'train'] disagree for 2 of 16 labelled images" in err
    assert "(1 in the test folder marked 'val'; 1 in the train folder marked 'test'; e.g. 'test/test1.png')" in err
    assert plan(project, f"data.source={src}", "data.split_from=patients")["classes"] == ["sick", "well"]


def test_mendeley_v3_names_give_the_patient_by_default(project):
    """Kermany on Mendeley v3 / Kaggle 'labeled-chest-xray-images': <CLASS>-<patient>-<image>.jpeg."""
    rng = np.random.default_rng(15)
    cx = project / "chest_xray"
    for split, pids in (("train", range(1000001, 1000007)), ("test", range(2000001, 2000003))):
        pngs(cx / split / "NORMAL", [f"NORMAL-{p}-000{k}.jpeg" for p in pids for k in (1, 2)], rng)
        pngs(cx / split / "PNEUMONIA", [f"{'BACTERIA' if p % 2 else 'VIRUS'}-{p + 50}-000{k}.jpeg"
                                        for p in pids for k in (1, 2)], rng)
    p = plan(project, f"data.source={cx}", "data.min_val_images=1")
    assert p["patients"]["count"] == 16 and p["patients"]["id_from"] == {"regex": 32}


def test_an_image_published_in_train_and_test_is_counted_and_warned(project):
    """The same image in the published train and test folders (a copy in a download) is kept as published,
    counted in the summary and warned about: a test image the classifiers may have trained on."""
    rng = np.random.default_rng(16)
    cx = project / "chest_xray"
    for split, first in (("train", 1), ("test", 101)):
        pngs(cx / split / "NORMAL", [f"IM-{i:04d}-0001.png" for i in range(first, first + 4)], rng)
        pngs(cx / split / "PNEUMONIA", [f"person{i}_virus_{i}.png" for i in range(first, first + 4)], rng)
    shutil.copy(cx / "train/NORMAL/IM-0001-0001.png", cx / "test/NORMAL/IM-0200-0001.png")
    s = run(project, f"data.source={cx}", "data.min_val_images=1")
    assert s["duplicate_groups_across_splits"] == 1
    assert "1 groups of identical images sit in more than one split (kept as published)" in s["warnings"]


def test_an_anonymisers_constant_patient_id_gives_way_to_the_path_when_asked(project, capsys):
    """A folder of DICOMs whose anonymiser wrote one PatientID for all, the patient left in the file names: by
    default PatientID comes first, so all 60 are one patient and the split stops saying how to change it;
    data.patient_id_from [csv, regex, dicom] reads the 12 patients from the names, in prepare and inspect alike. An order
    with another source stops."""
    rng = np.random.default_rng(14)
    src = project / "anon"
    for cls in ("NORMAL", "PNEUMONIA"):
        (src / cls).mkdir(parents=True)
        for p in range(6):
            for i in range(5):
                grey_dataset(phantom(rng, cls == "PNEUMONIA"), bits_stored=8, PatientID="ANONYMOUS").save_as(
                    src / cls / f"person{p + 10 * (cls == 'PNEUMONIA')}_{i}.dcm", enforce_file_format=True)
    stops = r"the most frequent 'ANONYMOUS' on 60 images.*list it first in data.patient_id_from"
    with pytest.raises(SystemExit, match=stops):
        run(project, f"data.source={src}", "data.split_from=patients")
    with pytest.raises(SystemExit):   # inspect tells the same before decoding
        plan(project, f"data.source={src}", "data.split_from=patients")
    assert re.search(stops, capsys.readouterr().err)
    order = "data.patient_id_from=[csv,regex,dicom]"
    s = run(project, f"data.source={src}", "data.split_from=patients", order)
    assert s["patient_id_from"] == {"regex": 60} and s["patients"] == 12
    assert {r["patient_id"] for r in index(project)} == {f"person{p}" for p in (*range(6), *range(10, 16))}
    assert plan(project, f"data.source={src}", "data.split_from=patients", order)["patients"]["count"] == 12
    for wrong, got in (("[dicom,pixels]", r"\['dicom', 'pixels'\]"), ("regex", "'regex'")):   # not a list
        with pytest.raises(SystemExit, match=r"data.patient_id_from must be a list of some of \['csv', 'dicom', "
                                             rf"'regex'\], each once.*got {got}"):
            run(project, f"data.source={src}", f"data.patient_id_from={wrong}")


def test_inspect_reads_patient_id_where_the_csv_leaves_the_patient_empty(project):
    """A labels CSV whose patient column is empty on some rows, csv before dicom: prepare takes those files'
    DICOM PatientID, and inspect reads those headers too (it read none, and showed each such file as a patient)."""
    src = project / "partial"
    src.mkdir()
    rng = np.random.default_rng(11)
    rows = []
    for i in range(24):   # 12 patients, 2 images each; the CSV names the patient of the first 12 images only
        grey_dataset(phantom(rng, i % 4 >= 2), bits_stored=8, PatientID=f"P{i // 2}").save_as(
            src / f"img{i}.dcm", enforce_file_format=True)
        rows.append([f"img{i}.dcm", "sick" if i % 4 >= 2 else "well", f"P{i // 2}" if i < 12 else ""])
    with open(src / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["file", "diagnosis", "patient"], *rows])
    args = (f"data.source={src}", "data.patient_column=patient", "data.split_from=patients", "data.min_val_images=1")
    s = run(project, *args)
    assert s["patient_id_from"] == {"csv": 12, "dicom": 12} and s["patients"] == 12
    patients = plan(project, *args)["patients"]
    assert patients["count"] == 12 and patients["id_from"] == {"csv": 12, "dicom": 12}
