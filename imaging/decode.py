"""Decode one input (a DICOM file, a PNG/JPEG file) into stored values plus how to display them.

Every way an input can be unusable raises :class:`Quarantined` with a reason code and a message that
names the problem; callers list it in quarantine.csv and carry on.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imaging.pixels import Intensity

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
_NATIVE_LE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}  # Implicit / Explicit VR Little Endian
_UNCOMPRESSED = _NATIVE_LE | {"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"}  # + Deflated, Big Endian


class Quarantined(Exception):
    """An input that cannot be used. ``code`` is a short category; ``str()`` is the full reason."""

    def __init__(self, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.code = code


@dataclass
class Decoded:
    stored: np.ndarray  # (H, W) stored values, integer or float
    intensity: Intensity
    meta: dict = field(default_factory=dict)


def luma(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) colour -> (H, W) grey with ITU-R BT.601 weights (what Pillow's convert('L') uses)."""
    return rgb[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def read_dicom(path: str | os.PathLike) -> Decoded:
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    if path.stat().st_size == 0:
        raise Quarantined("empty_file", "the file is empty (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            try:
                ds = pydicom.dcmread(path)
            except InvalidDicomError:
                # Files without the 128-byte preamble (old ACR-NEMA style) still parse with force=True;
                # anything else that "parses" that way lacks the image attributes and is rejected below.
                ds = pydicom.dcmread(path, force=True)
                if "PixelData" not in ds or "Rows" not in ds:
                    raise Quarantined("not_dicom", "not a DICOM file (no 'DICM' marker and no image data set)")
        except Quarantined:
            raise
        except Exception as e:  # pydicom raises many types on a cut or corrupt header
            raise Quarantined("unreadable", f"DICOM header cannot be read (truncated or corrupt): {e}") from e
    if "PixelData" not in ds:
        sop = getattr(ds.get("SOPClassUID"), "name", ds.get("SOPClassUID", "unknown"))
        raise Quarantined("no_pixel_data", f"DICOM object without pixel data (SOP class {sop})")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise Quarantined("multi_frame", f"multi-frame image ({frames} frames): expected one radiograph per file")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    if photometric in ("PALETTE COLOR",) or spp not in (1, 3):
        raise Quarantined("unsupported", f"photometric interpretation {photometric!r} with {spp} samples "
                                         "per pixel is not a radiograph format this pipeline reads")
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if ts:
        ts_name = getattr(ts, "name", str(ts))
    else:
        ts, ts_name = _no_meta_syntax(ds)
    high, bits_stored = ds.get("HighBit"), ds.get("BitsStored")
    if high is not None and bits_stored is not None and int(high) != int(bits_stored) - 1 \
            and str(ts) in _UNCOMPRESSED:
        # PS3.3 C.7.6.3: High Bit shall be Bits Stored - 1. In native pixel data another layout (old ACR-NEMA: 12
        # bits at the top of the word) would be read as the wrong bits; a compressed stream carries its own.
        raise Quarantined("unsupported", f"HighBit {int(high)} with BitsStored {int(bits_stored)} (the standard "
                                         f"requires HighBit = {int(bits_stored) - 1}): the stored bits sit elsewhere "
                                         "in the word; re-export the file with standard pixel data")
    stored = _pixels(ds, str(ts), ts_name, spp)
    if spp == 3:
        stored = luma(stored)  # pydicom returns RGB (YBR converted); colour collapses to grey
        bits = int(ds.get("BitsStored", 8))
        intensity = Intensity(value_range=(0.0, float(2**bits - 1)))
        padding = 0
    else:
        intensity = dicom_intensity(ds)
        stored, padding = fill_padding(stored, ds, intensity)
        if intensity.invert and photometric == "MONOCHROME2":
            photometric = "MONOCHROME2 INVERSE"  # index.csv and the prepare summary say why it was inverted
    if str(ds.get("PresentationIntentType", "") or "").strip().upper() == "FOR PROCESSING":
        photometric += " FOR PROCESSING"  # raw detector data (PS3.3 C.8.11.1.1.1): named, and warned of by prepare
    meta = {
        "patient_id": str(ds.get("PatientID", "") or "").strip(),
        "sop_instance_uid": str(ds.get("SOPInstanceUID", "") or ""),
        "modality": str(ds.get("Modality", "") or ""),
        "photometric": photometric,
        "bits_stored": int(ds.get("BitsStored", 0) or 0),
        "transfer_syntax": ts_name,
        "orig_height": int(stored.shape[0]),
        "orig_width": int(stored.shape[1]),
        "padding_pixels": padding,
    }
    return Decoded(stored, intensity, meta)


def _no_meta_syntax(ds) -> tuple[str, str]:
    """The transfer syntax of a data set without file meta (ACR-NEMA style): the encoding pydicom found it in.
    A big endian one gets that syntax in its file meta, so pydicom decodes (byte-swaps) its pixel data."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID

    implicit, little = getattr(ds, "original_encoding", (True, True))
    if implicit in (True, None) and little in (True, None):
        ts = "1.2.840.10008.1.2"  # Implicit VR Little Endian: the default (PS3.5 10.1)
    elif implicit is False and little in (True, None):
        ts = "1.2.840.10008.1.2.1"
    elif implicit is False and little is False:
        ts = "1.2.840.10008.1.2.2"  # Explicit VR Big Endian
        if not hasattr(ds, "file_meta"):
            ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ts
    else:
        raise Quarantined("unsupported", "no file meta and the data set parses only as implicit VR big endian, "
                                         "which is no DICOM transfer syntax; re-export the file as standard DICOM")
    return ts, f"{UID(ts).name} (no meta)"


def _pixels(ds, ts: str, ts_name: str, spp: int) -> np.ndarray:
    rows, cols = int(ds.Rows), int(ds.Columns)
    ba, bs = int(ds.BitsAllocated), int(ds.get("BitsStored", ds.BitsAllocated))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    if ts in _NATIVE_LE and spp == 1 and ba in (8, 16):
        # Native little-endian greyscale: read the buffer directly (what pydicom does, minus its overhead;
        # tests check equality with ds.pixel_array).
        expected = rows * cols * (ba // 8)
        data = ds.PixelData
        if len(data) < expected:
            raise Quarantined("truncated", f"pixel data has {len(data)} of the {expected} bytes that "
                                           f"{rows}x{cols} at {ba} bits need (file cut short?)")
        dtype = np.dtype(f"{'i' if signed else 'u'}{ba // 8}").newbyteorder("<")
        arr = np.frombuffer(data, dtype=dtype, count=rows * cols).reshape(rows, cols)
        if bs < ba:
            if signed:  # sign-extend from the stored bit width
                shift = ba - bs
                arr = (arr << shift) >> shift
            elif arr.max() >= (1 << bs):  # bits above the high bit (old overlays): mask them off
                arr = arr & np.array((1 << bs) - 1, dtype=dtype)
        return arr
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = ds.pixel_array
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "less than" in msg or "shorter" in msg or "truncat" in msg.lower() or isinstance(e, EOFError):
            raise Quarantined("truncated", f"pixel data cut short ({ts_name}): {msg}") from e
        raise Quarantined("decode_error", f"cannot decode {ts_name} pixel data: {msg}") from e
    expect = (rows, cols, 3) if spp == 3 else (rows, cols)
    if arr.shape != expect:
        raise Quarantined("decode_error", f"decoded shape {arr.shape} differs from Rows/Columns {expect}")
    return arr


def dicom_intensity(ds) -> Intensity:
    """Modality LUT, VOI and photometric from a greyscale DICOM data set.

    Shown inverted: MONOCHROME1, and a Presentation LUT Shape of INVERSE ("output after inversion is in
    P-Values", PS3.3 C.11.6.1.2). The DX IOD pairs INVERSE with MONOCHROME1 as one and the same inversion
    (C.8.11.3), so the two together invert once; on MONOCHROME2 it is what makes the file display inverted.

    Enhanced (functional group) images keep rescale and window in the Pixel Value Transformation and Frame VOI
    LUT functional groups (PS3.3 C.7.6.16.2.9, C.7.6.16.2.10), not at the top level: read from there when the
    top level has none (the file is single-frame by now, so its one Per-Frame item is the frame's).
    """
    from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut

    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    lut_shape = str(ds.get("PresentationLUTShape", "") or "").strip().upper()
    t = Intensity(invert=photometric == "MONOCHROME1" or lut_shape == "INVERSE")
    if ds.get("ModalityLUTSequence"):
        desc = ds.ModalityLUTSequence[0].LUTDescriptor
        xs = np.arange(int(desc[1]), int(desc[1]) + (int(desc[0]) or 65536))
        t.modality_lut = (xs.astype(np.float64), apply_modality_lut(xs, ds).astype(np.float64))
    else:
        src = ds
        if "RescaleSlope" not in ds and "RescaleIntercept" not in ds:
            src = _functional_group(ds, "PixelValueTransformationSequence", "ModalityLUTSequence") or ds
        t.slope = float(src.get("RescaleSlope", 1.0) or 1.0)
        t.intercept = float(src.get("RescaleIntercept", 0.0) or 0.0)
    if ds.get("VOILUTSequence"):
        desc = ds.VOILUTSequence[0].LUTDescriptor
        first = int(desc[1])
        xs = np.arange(first, first + (int(desc[0]) or 65536))
        t.voi_lut = (xs.astype(np.float64), apply_voi_lut(xs, ds, prefer_lut=True).astype(np.float64))
    else:
        src = ds if "WindowCenter" in ds else _functional_group(ds, "FrameVOILUTSequence", "VOILUTSequence") or ds
        if "WindowCenter" in src and "WindowWidth" in src:
            centers, widths = src.WindowCenter, src.WindowWidth
            centers = list(centers) if src["WindowCenter"].VM > 1 else [centers]
            widths = list(widths) if src["WindowWidth"].VM > 1 else [widths]
            t.windows = [(float(c), float(w)) for c, w in zip(centers, widths) if float(w) > 0]
            t.voi_function = str(src.get("VOILUTFunction", "LINEAR") or "LINEAR")
    return t


def _functional_group(ds, name: str, lut: str):
    """The item of functional group ``name`` (a single-frame image's): Shared Functional Groups first, then the
    Per-Frame item (PS3.3 C.7.6.16.2: a group is in one or the other); None when neither has it. A lookup table
    ``lut`` inside it is not read here: such a file is quarantined rather than shown through the wrong curve."""
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        items = ds.get(groups)
        if items and items[0].get(name):
            item = items[0].get(name)[0]
            if item.get(lut):
                raise Quarantined("unsupported", f"{lut} inside {groups} > {name}: a lookup table in a "
                                                 "functional group is not read; re-export with rescale/window values")
            return item
    return None


def fill_padding(stored: np.ndarray, ds, t: Intensity) -> tuple[np.ndarray, int]:
    """Pixel Padding Value, and Pixel Padding Range Limit when present (PS3.3 C.7.5.1.1.2): stored values that
    are not part of the image (the frame of a collimated or rotated radiograph). They take the value the image
    proper shows darkest, so they show black and count in no VOI: min-max or percentile over a padding value far
    from the content (-2000, 65535) would squeeze the image into a few grey levels. Returns the array and how
    many pixels were padding (0: nothing changed; an image all padding is left to be refused as blank)."""
    if ds.get("PixelPaddingValue") is None or stored.dtype.kind not in "iu":
        return stored, 0
    first = int(ds.PixelPaddingValue)
    limit = ds.get("PixelPaddingRangeLimit")
    last = first if limit is None else int(limit)
    values = stored.astype(np.int64, copy=False)
    pad = (values >= min(first, last)) & (values <= max(first, last))
    n = int(pad.sum())
    if n == 0 or n == pad.size:
        return stored, 0
    rising = (t.modality_lut[1][-1] >= t.modality_lut[1][0]) if t.modality_lut is not None else t.slope >= 0
    content = stored[~pad]
    out = stored.copy()
    out[pad] = content.max() if rising == t.invert else content.min()
    return out, n


def read_image(path: str | os.PathLike) -> Decoded:
    """PNG/JPEG/TIFF/BMP through Pillow: colour collapses to grey; 8 or 16 bits keep their range.

    The EXIF Orientation is applied. A TIFF whose PhotometricInterpretation is WhiteIsZero (TIFF's
    MONOCHROME1) is shown inverted: Pillow inverts 1- and 8-bit ones as it reads them, wider ones here.
    Files of several pages or frames are quarantined (``multi_frame``), as multi-frame DICOM files are.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if path.stat().st_size == 0:
        raise Quarantined("empty_file", "the file is empty (0 bytes)")
    try:
        with Image.open(path) as im:
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                raise Quarantined("multi_frame", f"multi-page image ({frames} pages or frames): expected one "
                                                 "radiograph per file")
            white_is_zero = getattr(im, "tag_v2", {}).get(262) == 0 and im.mode not in ("1", "L")
            view = _pillow_view(im)  # before load(): Pillow's reading is what it checks
            im.load()
            ImageOps.exif_transpose(im, in_place=True)
            mode = im.mode
            if view is not None:  # Pillow's bits are right, its type is not: int8 read as L, uint32 as I
                arr = np.asarray(im).view(view)
                vrange = (float(np.iinfo(view).min), float(np.iinfo(view).max))
            elif mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im).astype(np.uint16 if mode.startswith("I;16") else np.int32)
                vrange = (0.0, 65535.0)
            elif mode == "L":
                arr, vrange = np.asarray(im), (0.0, 255.0)
            elif mode == "F":
                arr = np.asarray(im)
                vrange = None
            else:
                arr, vrange = np.asarray(im.convert("L")), (0.0, 255.0)
    except UnidentifiedImageError as e:
        raise Quarantined("not_an_image", f"not a readable image file ({path.suffix or 'no suffix'})") from e
    except OSError as e:
        code = "truncated" if "truncated" in str(e).lower() else "decode_error"
        raise Quarantined(code, f"cannot decode image: {e}") from e
    meta = {"patient_id": "", "sop_instance_uid": "", "modality": "",
            "photometric": f"PIL:{mode}" + (" WhiteIsZero" if white_is_zero else ""),
            "bits_stored": arr.dtype.itemsize * 8 if view is not None else 16 if vrange == (0.0, 65535.0) else 8,
            "transfer_syntax": "",
            "orig_height": int(arr.shape[0]), "orig_width": int(arr.shape[1])}
    return Decoded(arr, Intensity(value_range=vrange, invert=white_is_zero), meta)


def _pillow_view(im):
    """Refuse what Pillow would read wrong, before it reads: colour or alpha at more than 8 bits per sample
    (16-bit RGB/RGBA/LA PNG, TIFF BitsPerSample > 8) it reduces to 8 bits; signed TIFF samples (SampleFormat 2)
    it reads as unsigned except at 16 and 32 bits. Returns the dtype to view a plain copy as (int8 read as L,
    uint32 as int32 I), or None."""
    tile = im.tile[0][3] if im.tile else ""
    raw = str(tile[0] if isinstance(tile, tuple) else tile)  # Pillow's raw mode: how the file's samples unpack
    tags = getattr(im, "tag_v2", None)
    if tags is not None:  # TIFF
        bits = tags.get(258, (1,))
        bits = max(bits) if isinstance(bits, tuple) else int(bits)
        formats = tags.get(339, (1,))
        signed = 2 in (formats if isinstance(formats, tuple) else (formats,))
    else:
        bits, signed = (16 if im.format == "PNG" and ";16" in raw else 8), False  # PNG: bit depth 16
    layout = raw.split(";")[0]
    if bits > 8 and im.mode not in ("I;16", "I;16B", "I;16L", "I", "F"):
        kind = {"LA": "grey+alpha", "RGBA": "colour+alpha"}.get(layout, "colour")
        raise Quarantined("unsupported", f"{bits}-bit {kind} {im.format} ({layout or im.mode}, {bits} bits per "
                                         f"sample): Pillow reads it as 8 bits; save it as {bits}-bit greyscale")
    if signed and im.mode == "L" and raw == "L":
        return np.int8
    if signed and im.mode != "I":  # Pillow reads signed 16 and 32 bits right, as I (I;16S, I;32S)
        raise Quarantined("unsupported", f"signed {bits}-bit TIFF (SampleFormat 2) in Pillow mode {im.mode}: "
                                         "Pillow reads it as unsigned; save it as signed 16-bit greyscale")
    if tags is not None and im.mode == "I" and raw == "I;32N" and bits == 32 and not signed:
        return np.uint32  # unsigned 32-bit: Pillow has no such mode, values >= 2**31 would wrap negative
    return None


def read_any(path: str | os.PathLike) -> Decoded:
    """By suffix: Pillow for image formats, DICOM for everything else (DICOM files often have none)."""
    return read_image(path) if Path(path).suffix.lower() in IMAGE_SUFFIXES else read_dicom(path)
