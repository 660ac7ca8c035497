"""The built-in demo archive: phantom radiographs written as a real DICOM tree plus a labels CSV.

It exercises what real archives contain: CR and DX, 8/12/16 bits stored, MONOCHROME1 and 2, rescale
slope/intercept, window tags, uncompressed (explicit and implicit VR) and compressed (RLE, JPEG-LS,
JPEG 2000 lossless, JPEG baseline) transfer syntaxes, an RGB secondary capture, sizes from 256 to
1024 px, several images per patient; and a handful of broken inputs that prepare must quarantine.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom

from imaging.dicom_write import SECONDARY_CAPTURE, SYNTAXES, encode, grey_dataset, seeded_uid
from imaging.phantoms import Anatomy, chest_phantom

CLASSES = ("normal", "pneumonia")
BITS = (8, 12, 16)
# Broken inputs: file name -> the quarantine code prepare must give it.
BROKEN = {
    "truncated.dcm": "truncated",
    "empty.dcm": "empty_file",
    "export_log.txt": "not_dicom",
    "no_pixels.dcm": "no_pixel_data",
    "multiframe.dcm": "multi_frame",
    "blank.dcm": "blank_image",
    "unlabelled.dcm": "no_label",
}


def _stored(img: np.ndarray, bits: int, photometric: str, slope: float, intercept: float):
    """Display image in [0,1] -> stored integers and the window (in modality units) that shows it."""
    top = 2**bits - 1
    value = img * top * 0.9 + top * 0.03  # modality-space value, MONOCHROME2 sense
    if photometric == "MONOCHROME1":
        value = top - value
    stored = np.clip(np.round((value - intercept) / slope), 0, top)
    lo, hi = np.percentile(value, [0.5, 99.5])
    dtype = np.uint8 if bits == 8 else np.uint16
    return stored.astype(dtype), (float((lo + hi) / 2), float(max(hi - lo, 2.0)))


def _image_dataset(rng, img, *, bits, photometric, modality, rescale, windowed, patient_id, study_uid, idx):
    slope, intercept = (2.0, -float(2 ** (bits - 2))) if rescale else (1.0, 0.0)
    stored, (wc, ww) = _stored(img, bits, photometric, slope, intercept)
    attrs = dict(PatientID=patient_id, PatientName=f"PHANTOM^{patient_id}", StudyInstanceUID=study_uid,
                 SeriesInstanceUID=seeded_uid(rng), InstanceNumber=idx + 1, BodyPartExamined="CHEST",
                 ViewPosition="PA", ImageType=["ORIGINAL", "PRIMARY"],
                 SeriesDescription="demo phantom (synthetic, not a patient)")
    if rescale:
        attrs.update(RescaleSlope=slope, RescaleIntercept=intercept, RescaleType="US")
    if windowed:
        attrs.update(WindowCenter=round(wc, 1), WindowWidth=round(ww, 1))
    return grey_dataset(stored, bits_stored=bits, photometric=photometric, modality=modality,
                        sop_uid=seeded_uid(rng), **attrs)


def write_demo_archive(out: Path, rng: np.random.Generator, *, patients: int = 30,
                       images_per_patient: tuple[int, int] = (2, 4),
                       sizes: tuple[int, ...] = (256, 384, 512, 768, 1024),
                       pneumonia_fraction: float = 0.5, broken: bool = True) -> dict:
    """Write the archive under ``out`` (an existing empty folder); returns counts for the summary."""
    out = Path(out)
    size_p = np.array([0.4, 0.3, 0.15, 0.1, 0.05][: len(sizes)])
    size_p = size_p / size_p.sum()
    labels: list[tuple[str, str]] = []
    counts = {"images": 0, "patients": patients, **{f"class_{c}": 0 for c in CLASSES},
              **{f"syntax_{s}": 0 for s in SYNTAXES}}
    k = 0  # running image index: cycles syntaxes, bit depths and photometrics so every one appears
    n_pneu = int(round(patients * pneumonia_fraction))
    for p in range(patients):
        pid = f"DEMO{p:04d}"
        label = CLASSES[1] if p < n_pneu else CLASSES[0]
        anatomy = Anatomy.sample(rng)
        study = seeded_uid(rng)
        modality = "DX" if p % 2 else "CR"
        for i in range(int(rng.integers(images_per_patient[0], images_per_patient[1] + 1))):
            syntax = SYNTAXES[k % len(SYNTAXES)]
            bits = 8 if syntax == "jpeg-baseline" else BITS[k % len(BITS)]
            photometric = "MONOCHROME2" if syntax == "jpeg-baseline" or k % 4 != 1 else "MONOCHROME1"
            size = int(rng.choice(sizes, p=size_p))
            img = chest_phantom(rng, size, anatomy, label == "pneumonia", aspect=float(rng.uniform(0.8, 1.0)))
            ds = _image_dataset(rng, img, bits=bits, photometric=photometric, modality=modality,
                                rescale=k % 5 == 2, windowed=k % 3 != 0, patient_id=pid, study_uid=study, idx=i)
            encode(ds, syntax)
            rel = f"{pid}/{study[-8:]}/IMG{i:04d}" + (".dcm" if k % 2 else "")  # many archives use no suffix
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(out / rel, enforce_file_format=True)
            labels.append((rel, label))
            counts["images"] += 1
            counts[f"class_{label}"] += 1
            counts[f"syntax_{syntax}"] += 1
            k += 1
    # One RGB secondary capture (identical channels, as a screenshot of a greyscale image): it is usable,
    # and exercises the colour-to-grey path.
    img = (chest_phantom(rng, 256, Anatomy.sample(rng), False) * 255).astype(np.uint8)
    rgb = grey_dataset(img, bits_stored=8, sop_class=SECONDARY_CAPTURE, modality="OT", sop_uid=seeded_uid(rng),
                       PatientID="DEMO-SC", StudyInstanceUID=seeded_uid(rng), ConversionType="WSD")
    rgb.SamplesPerPixel, rgb.PhotometricInterpretation, rgb.PlanarConfiguration = 3, "RGB", 0
    rgb.PixelData = np.repeat(img[..., None], 3, axis=2).tobytes()
    (out / "DEMO-SC").mkdir()
    rgb.save_as(out / "DEMO-SC/capture.dcm", enforce_file_format=True)
    labels.append(("DEMO-SC/capture.dcm", CLASSES[0]))
    counts["images"] += 1
    counts[f"class_{CLASSES[0]}"] += 1
    if broken:
        _write_broken(out / "BROKEN", rng, labels)
        counts["broken"] = len(BROKEN)
    with open(out / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        w.writerows(labels)
    return counts


def _write_broken(folder: Path, rng: np.random.Generator, labels: list[tuple[str, str]]) -> None:
    folder.mkdir()
    good = lambda: chest_phantom(rng, 256, Anatomy.sample(rng), False)  # noqa: E731
    ds = _image_dataset(rng, good(), bits=12, photometric="MONOCHROME2", modality="CR", rescale=False,
                        windowed=True, patient_id="DEMO-BROKEN", study_uid=seeded_uid(rng), idx=0)
    ds.save_as(folder / "full.dcm", enforce_file_format=True)
    data = (folder / "full.dcm").read_bytes()
    (folder / "full.dcm").unlink()
    (folder / "truncated.dcm").write_bytes(data[: int(len(data) * 0.6)])
    (folder / "empty.dcm").write_bytes(b"")
    (folder / "export_log.txt").write_text("PACS export finished: 132 objects\n")
    nopix = grey_dataset(np.zeros((4, 4), np.uint8), bits_stored=8, sop_uid=seeded_uid(rng), PatientID="DEMO-BROKEN")
    del nopix.PixelData  # e.g. a presentation state or report saved beside the images
    nopix.save_as(folder / "no_pixels.dcm", enforce_file_format=True)
    frames = np.stack([(good() * 4095).astype(np.uint16) for _ in range(3)])
    multi = grey_dataset(frames[0], bits_stored=12, sop_uid=seeded_uid(rng), PatientID="DEMO-BROKEN")
    multi.NumberOfFrames = 3
    multi.PixelData = frames.tobytes()
    multi.save_as(folder / "multiframe.dcm", enforce_file_format=True)
    blank = grey_dataset(np.full((256, 256), 1000, np.uint16), bits_stored=12, sop_uid=seeded_uid(rng), PatientID="DEMO-BROKEN")
    blank.save_as(folder / "blank.dcm", enforce_file_format=True)
    ds2 = _image_dataset(rng, good(), bits=12, photometric="MONOCHROME2", modality="CR", rescale=False,
                         windowed=True, patient_id="DEMO-NOLABEL", study_uid=seeded_uid(rng), idx=0)
    ds2.save_as(folder / "unlabelled.dcm", enforce_file_format=True)
    for name in BROKEN:
        if name != "unlabelled.dcm":
            labels.append((f"BROKEN/{name}", CLASSES[0]))
    assert pydicom.dcmread(folder / "multiframe.dcm").NumberOfFrames == 3
