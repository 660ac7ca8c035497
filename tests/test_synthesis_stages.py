"""extractor, train_gan with FID checks, synthesize and fidelity stages on the small demo set."""
import argparse
import csv
import hashlib
import json

import numpy as np
import pydicom
import pytest
import torch
import yaml

from conftest import stage_args, tiny_params
from dcgan.models import latents
from dcgan.models import load_generator
from evaluation.fidelity import DOMAIN, INCEPTION, ExtractorUnavailable
from imaging.dicom_write import SECONDARY_CAPTURE
from pipeline import fidelity, outputs, prepare, synthesize, train_extractor, train_gan


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_archive):
    """Prepared demo data at 32x32, a domain extractor and a GAN trained with FID checks."""
    project = tiny_params(tmp_path_factory.mktemp("synth"), demo_archive,
                          extractor=dict(width=4, dim=16, steps=10, batch=16),
                          gan=dict(width=0.25, steps=8, batch=8, log_every=2, checkpoint_every=4, grid_every=0,
                                   fid_every=2, fid_samples=40))
    prepare.main(stage_args(project))
    extractor = train_extractor.main(stage_args(project))
    gan = train_gan.main(stage_args(project))
    return project, extractor, gan


def test_extractor_stage(trained):
    project, summary, _ = trained
    state = torch.load(project / "models/extractor/extractor.pt", weights_only=True)
    assert state["config"]["dim"] == 16 and state["classes"] == ["normal", "pneumonia"]
    # the reported accuracies are the saved network's, on the validation split
    from evaluation.features import rotate_quarters
    from evaluation.features import domain_net_from_state
    from pipeline.prepared import load_split

    net, val = domain_net_from_state(state), load_split(project / "data/prepared", "val")
    assert summary["val_images"] == len(val.images) and summary["train_images"] > len(val.images)
    with torch.no_grad():
        x = torch.as_tensor(val.images, dtype=torch.float32)
        label_accuracy = (net(x)[0].argmax(1).numpy() == val.labels).mean()
        turns = torch.arange(len(x)) % 4
        rotation_accuracy = (net(rotate_quarters(x, turns))[1].argmax(1) == turns).float().mean()
    assert summary["val_label_accuracy"] == pytest.approx(float(label_accuracy), abs=1e-4)
    assert summary["val_rotation_accuracy"] == pytest.approx(float(rotation_accuracy), abs=1e-4)


def test_train_gan_keeps_the_lowest_fid_generator(trained):
    project, _, summary = trained
    with open(project / "reports/gan/fid.csv", newline="") as f:
        rows = [(int(r["step"]), float(r["fid_domain"])) for r in csv.DictReader(f)]
    epoch = -(-summary["train_images"] // 8)
    assert [s for s, _ in rows] == sorted({*range(2 * epoch, 9, 2 * epoch), 8})
    best_step, best_fid = min(rows, key=lambda r: r[1])
    assert summary["generator_step"] == best_step and summary["fid_domain_best"] == pytest.approx(best_fid, abs=1e-5)
    assert torch.load(project / "models/gan/generator.pt", weights_only=True)["step"] == best_step


def test_synthesize_counts_seeds_and_copies(trained):
    project, _, gan = trained
    s = synthesize.main(stage_args(project, "synthesize.ratio=0.5", "synthesize.png=true", "synthesize.dicom=true"))
    out = project / "data/synthetic"
    train_counts = {k: v for k, v in json.loads((project / "data/prepared/summary.json").read_text())["splits"]
                    ["train"].items() if k in ("normal", "pneumonia")}
    assert s["per_class"] == {c: max(1, round(n * 0.5)) for c, n in train_counts.items()}
    images = np.load(out / "images.npy")
    with open(out / "index.csv", newline="") as f:
        index = list(csv.DictReader(f))
    assert images.shape == (s["images"], 1, 32, 32) and len(index) == s["images"]
    assert len({r["seed"] for r in index}) == len(index)
    # any image regenerates from its seed alone
    g = load_generator(torch.load(project / "models/gan/generator.pt", weights_only=True))
    r = index[-1]
    with torch.no_grad():
        again = g(latents([int(r["seed"])], 100), torch.tensor([int(r["label"])]))
    np.testing.assert_allclose(again[0].numpy(), images[-1].astype(np.float32), atol=2e-3)
    assert len(list((out / "png").rglob("*.png"))) == s["images"] and (out / "contact_sheet.png").is_file()
    dcms = sorted((out / "dicom").rglob("*.dcm"))
    assert len(dcms) == s["images"]
    ds = pydicom.dcmread(dcms[0])
    assert ds.SOPClassUID == SECONDARY_CAPTURE and list(ds.ImageType) == ["DERIVED", "SECONDARY"]
    assert ds.ConversionType == "SYN" and "SYNTHETIC" in ds.SeriesDescription and "not" in ds.ImageComments
    assert ds.PatientID == "SYNTHETIC" and "BirthDate" not in str(ds.get("PatientBirthDate", ""))
    uids = {pydicom.dcmread(d).SOPInstanceUID for d in dcms}
    assert len(uids) == len(dcms)
    counts = synthesize.main(stage_args(project, "synthesize.count=5"))
    assert counts["per_class"] == {"normal": 5, "pneumonia": 5} and counts["images"] == 10


def test_contact_sheet_rows_are_the_first_of_each_label():
    """The sheet's rows (vtt_export leaves them out): the first 16 of each label in label order, none for a class
    with no images, the first 16 of all for an unconditional set (labels -1)."""
    from pipeline.prepared import contact_sheet_rows

    labels = np.array([1] * 20 + [0] * 3 + [3] * 17)             # class 2 has no images
    assert contact_sheet_rows(labels).tolist() == [20, 21, 22, *range(16), *range(23, 39)]
    assert contact_sheet_rows(np.full(40, -1)).tolist() == list(range(16))
    assert contact_sheet_rows(np.array([], dtype=np.int64)).tolist() == []


def test_an_unavailable_extractor_gets_a_fixed_reason_in_the_out():
    """The reason goes into metrics/fidelity.json (a DVC out) and the report: the same on every machine, whatever
    the error said (a DNS message, a path); the error itself goes to stderr as a warning."""
    error = ExtractorUnavailable("inception-v3-compat: URLError: <urlopen error [Errno -3] Temporary failure in "
                                 "name resolution> (/home/someone/.cache/torch/hub)")
    with pytest.warns(UserWarning, match="name resolution"):
        out = fidelity.unavailable(INCEPTION, error)
    assert out["unavailable"] == fidelity.INCEPTION_UNAVAILABLE and out["overall"]["fid"] is None
    assert "fidelity.inception_weights" in out["unavailable"]
    with pytest.warns(UserWarning, match="bad state"):
        other = fidelity.unavailable(DOMAIN, ExtractorUnavailable("bad state at /tmp/x"))["unavailable"]
    assert other.startswith(DOMAIN) and "/tmp" not in other and "bad state" not in other


def test_inception_weights_other_than_torch_fidelitys_are_refused(tmp_path, monkeypatch):
    """A weights file that is not torch-fidelity's (by SHA-256) would give FIDs on another scale: refused, naming
    its hash, whether set in fidelity.inception_weights or found in torch's hub cache; the reference file passes
    (its prefix stood in by this file's)."""
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"not the reference weights")
    args = argparse.Namespace(path=lambda p: tmp_path / p)
    with pytest.raises(SystemExit, match="not torch-fidelity's Inception weights.*SHA-256 is [0-9a-f]{64}"):
        fidelity.extractor_kwargs(args, {"inception_weights": "inception.pth"}, INCEPTION, {})
    monkeypatch.setattr(fidelity.fd, "hub_weights", lambda: weights)              # the same file in torch's hub cache
    with pytest.raises(SystemExit, match="not torch-fidelity's Inception weights"):
        fidelity.extractor_kwargs(args, {"inception_weights": None}, INCEPTION, {})
    monkeypatch.setattr(fidelity.fd, "INCEPTION_SHA256_PREFIX", hashlib.sha256(weights.read_bytes()).hexdigest()[:8])
    kwargs = fidelity.extractor_kwargs(args, {"inception_weights": "inception.pth"}, INCEPTION, {})
    assert kwargs == {"feature_extractor_weights_path": str(weights)}
    assert fidelity.extractor_kwargs(args, {"inception_weights": None}, INCEPTION, {}) == kwargs
    monkeypatch.setattr(fidelity.fd, "hub_weights", lambda: tmp_path / "absent.pth")  # not cached: a download
    assert fidelity.extractor_kwargs(args, {"inception_weights": None}, INCEPTION, {}) == {}


def test_fidelity_stage_stops_at_no_relative_fid_draws(tmp_path, demo_archive):
    with pytest.raises(SystemExit, match="relative_fid_draws must be at least 1, got 0"):
        fidelity.main(stage_args(tiny_params(tmp_path, demo_archive), "fidelity.relative_fid_draws=0"))


def test_fidelity_stage_metrics(trained):
    project, _, _ = trained
    synthesize.main(stage_args(project, "synthesize.count=12"))
    with pytest.warns(UserWarning, match="inception-v3-compat unavailable.*missing.pth"):   # the error: stderr
        r = fidelity.main(stage_args(project, "fidelity.inception_weights=missing.pth", "fidelity.kid_subsets=5"))
    saved = json.loads((project / "metrics/fidelity.json").read_text())
    assert saved["reference_split"] == "val" and saved["n_synthetic"] == 24
    inc = saved["extractors"]["inception-v3-compat"]
    assert inc["overall"]["fid"] is None and inc["unavailable"] == fidelity.INCEPTION_UNAVAILABLE   # the out: fixed
    dom = saved["extractors"]["medaug-domain"]
    assert dom["overall"]["fid"] > 0 and dom["overall"]["n_synthetic"] == 24
    assert dom["overall"]["n_real"] == r["n_reference"]
    assert set(dom["per_class"]) == {"normal", "pneumonia"}
    assert dom["per_class"]["normal"]["n_synthetic"] == 12
    draws = yaml.safe_load((project / "params.yaml").read_text())["fidelity"]["relative_fid_draws"]
    for part in (dom["overall"], *dom["per_class"].values()):   # relative FID: medians over the draws, with a range
        if "note" in part:   # a class with too few val images for two halves
            assert part["relative_fid"] is None and "relative FID needs" in part["note"]
            continue
        low, high = part["relative_fid_range"]
        assert part["relative_fid_draws"] == draws > 1 and low <= part["relative_fid"] <= high and low < high
    assert "note" not in dom["overall"]
    for space in ("features", "pixels"):
        assert saved["memorisation"][space]["n_synthetic"] == 24
    # the pixel-space audit against a plain SciPy nearest-neighbour reference: synthetic images closer to a
    # training image than the given percentile of the held-out (reference split) images' distances
    from scipy.spatial.distance import cdist
    from pipeline.prepared import load_split

    flat = lambda a: np.asarray(a, dtype=np.float32).reshape(len(a), -1).astype(np.float64)  # noqa: E731
    train, ref = (load_split(project / "data/prepared", split).images for split in ("train", "val"))
    to_train_syn = cdist(flat(np.load(project / "data/synthetic/images.npy")), flat(train)).min(1)
    to_train_ref = cdist(flat(ref), flat(train)).min(1)
    m = saved["memorisation"]["pixels"]
    threshold = np.percentile(to_train_ref, m["percentile"])
    assert m["threshold"] == pytest.approx(threshold, rel=1e-4)
    assert m["fraction_synthetic_below"] == np.mean(to_train_syn < threshold)
    # the synthetic rows the pairs figure shows (vtt_export leaves them out): the ones closest to a training image
    shown = m[outputs.PAIRS_SHOWN]
    pairs = yaml.safe_load((project / "params.yaml").read_text())["fidelity"]["pairs"]
    assert len(shown) == min(pairs, 24) < 24 and shown == sorted(set(shown))
    assert to_train_syn[shown].max() <= to_train_syn[np.setdiff1d(np.arange(24), shown)].min() * (1 + 1e-4)
    assert m["median_synthetic_distance"] == pytest.approx(np.median(to_train_syn), rel=1e-4)
    assert m["n_heldout"] == len(ref) == r["n_reference"] and m["n_train"] == len(train)
    assert (project / "reports/fidelity/nearest_pairs_features.png").is_file()
