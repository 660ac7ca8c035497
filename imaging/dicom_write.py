"""Build and encode greyscale DICOM data sets (demo archive now, synthetic copies later)."""
from __future__ import annotations

import io

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    JPEG2000Lossless,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    PYDICOM_IMPLEMENTATION_UID,
    RLELossless,
    generate_uid,
)

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
SYNTAXES = ("explicit", "implicit", "rle", "jpeg-ls", "jpeg2000", "jpeg-baseline")


def grey_dataset(stored: np.ndarray, *, bits_stored: int, photometric: str = "MONOCHROME2",
                 modality: str = "CR", sop_class: str | None = None, sop_uid: str | None = None,
                 **attrs) -> Dataset:
    """An uncompressed single-frame greyscale data set around ``stored`` (uint8 or uint16, 2-D).

    ``sop_uid`` defaults to a fresh random UID; pass one (see :func:`seeded_uid`) for reproducible files.
    """
    if stored.ndim != 2 or stored.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected a 2-D uint8/uint16 array, got {stored.dtype} {stored.shape}")
    if int(stored.max()) >= 2**bits_stored:
        raise ValueError(f"values up to {int(stored.max())} do not fit in {bits_stored} bits")
    sop_class = sop_class or (DX_IMAGE_STORAGE if modality == "DX" else CR_IMAGE_STORAGE)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if stored.dtype == np.uint8 else 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def seeded_uid(rng: np.random.Generator) -> str:
    """A UID drawn from ``rng`` (deterministic for a seeded generator), under pydicom's root."""
    return generate_uid(entropy_srcs=[str(int(rng.integers(0, 2**63)))])


def encode(ds: Dataset, syntax: str) -> Dataset:
    """Re-encode ``ds`` (uncompressed) in place with one of :data:`SYNTAXES`; returns it."""
    if syntax == "explicit":
        return ds
    if syntax == "implicit":
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        return ds
    if syntax == "rle":
        ds.compress(RLELossless, generate_instance_uid=False)
    elif syntax == "jpeg-ls":
        ds.compress(JPEGLSLossless, generate_instance_uid=False)
    elif syntax == "jpeg2000":
        ds.compress(JPEG2000Lossless, generate_instance_uid=False)
    elif syntax == "jpeg-baseline":  # pydicom has no JPEG baseline encoder: Pillow, then encapsulate
        from PIL import Image

        if ds.BitsAllocated != 8:
            raise ValueError("JPEG baseline holds 8-bit samples only")
        arr = np.frombuffer(ds.PixelData, np.uint8).reshape(ds.Rows, ds.Columns)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=95)
        ds.PixelData = encapsulate([buf.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.LossyImageCompression = "01"
    else:
        raise ValueError(f"unknown syntax {syntax!r}; expected one of {SYNTAXES}")
    return ds
