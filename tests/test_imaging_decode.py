"""Decoding: every transfer syntax real archives use gives the stored values back; bad files quarantine."""
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from imaging.decode import Quarantined, read_any, read_dicom
from imaging.demo import BROKEN
from imaging.dicom_write import SYNTAXES, encode, grey_dataset
from imaging.ingest import ingest_file
from imaging.pixels import PixelConfig
from imaging.sources import Item


def stored_image(bits, shape=(70, 90), seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    img = (np.sin(x / 7.0) * np.cos(y / 5.0) + 1) / 2 * (2**bits - 1) * 0.9 + rng.integers(0, 8, shape)
    return np.clip(img, 0, 2**bits - 1).astype(np.uint8 if bits == 8 else np.uint16)


@pytest.mark.parametrize("syntax", [s for s in SYNTAXES if s != "jpeg-baseline"])
@pytest.mark.parametrize("bits", [8, 12, 16])
def test_lossless_syntaxes_decode_to_the_stored_values(tmp_path, syntax, bits):
    arr = stored_image(bits)
    ds = encode(grey_dataset(arr.copy(), bits_stored=bits, PatientID="P1"), syntax)
    ds.save_as(tmp_path / "x.dcm", enforce_file_format=True)
    dec = read_dicom(tmp_path / "x.dcm")
    np.testing.assert_array_equal(dec.stored, arr)
    assert dec.meta["patient_id"] == "P1" and dec.meta["bits_stored"] == bits


def test_jpeg_baseline_decodes_close(tmp_path):
    arr = stored_image(8)
    encode(grey_dataset(arr.copy(), bits_stored=8), "jpeg-baseline").save_as(tmp_path / "x.dcm")
    dec = read_dicom(tmp_path / "x.dcm")
    assert dec.meta["transfer_syntax"].startswith("JPEG Baseline")
    assert np.abs(dec.stored.astype(int) - arr).mean() < 3


def _gdcm_encode(tmp_path, arr, bits, ts_name):
    gdcm = pytest.importorskip("gdcm")
    grey_dataset(arr, bits_stored=bits).save_as(tmp_path / "in.dcm", enforce_file_format=True)
    r = gdcm.ImageReader()
    r.SetFileName(str(tmp_path / "in.dcm"))
    assert r.Read()
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, ts_name)))
    change.SetInput(r.GetImage())
    assert change.Change()
    w = gdcm.ImageWriter()
    w.SetFileName(str(tmp_path / "out.dcm"))
    w.SetFile(r.GetFile())
    w.SetImage(change.GetOutput())
    assert w.Write()
    return tmp_path / "out.dcm"


@pytest.mark.parametrize("bits", [8, 12, 16])
def test_jpeg_lossless_process14(tmp_path, bits):
    arr = stored_image(bits)
    path = _gdcm_encode(tmp_path, arr, bits, "JPEGLosslessProcess14_1")
    dec = read_dicom(path)
    assert "Lossless" in dec.meta["transfer_syntax"]
    np.testing.assert_array_equal(dec.stored, arr)


def test_jpeg_extended_12bit():
    # A 12-bit JPEG Extended (process 2 & 4) file from a real encoder, shipped with pydicom.
    path = get_testdata_file("JPGExtended.dcm")
    dec = read_dicom(path)
    assert dec.meta["transfer_syntax"] == "JPEG Extended (Process 2 and 4)" and dec.meta["bits_stored"] == 12
    assert dec.stored.shape == (1024, 256) and 0 < dec.stored.max() < 4096


def test_big_endian_and_no_preamble_files_read(tmp_path):
    ref = pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array
    np.testing.assert_array_equal(read_dicom(get_testdata_file("MR_small_bigendian.dcm")).stored, ref)
    # An old ACR-NEMA style file: a bare implicit-VR data set, no preamble, no 'DICM', no file meta.
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    arr = stored_image(12)
    ds = grey_dataset(arr, bits_stored=12)
    del ds.file_meta
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True
    write_dataset(fp, ds)
    (tmp_path / "raw").write_bytes(fp.getvalue())
    np.testing.assert_array_equal(read_dicom(tmp_path / "raw").stored, arr)


@pytest.mark.parametrize("bits, signed", [(8, False), (12, False), (16, False), (12, True), (10, True)])
def test_fast_native_path_matches_pydicom(tmp_path, bits, signed):
    arr = stored_image(bits if bits != 10 else 12)
    ds = grey_dataset(arr, bits_stored=16 if bits > 8 else 8)
    raw = arr.astype(np.uint16 if bits > 8 else np.uint8)
    if bits < 16 and bits != 8:
        raw = raw | np.uint16(0xF000)  # garbage above the high bit must be masked/sign-extended away
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, int(signed)
    ds.PixelData = raw.tobytes()
    ds.save_as(tmp_path / "x.dcm", enforce_file_format=True)
    np.testing.assert_array_equal(read_dicom(tmp_path / "x.dcm").stored,
                                  pydicom.dcmread(tmp_path / "x.dcm").pixel_array)


def test_rgb_png_and_16bit_png(tmp_path):
    g = stored_image(8)
    Image.fromarray(np.repeat(g[..., None], 3, 2)).save(tmp_path / "c.png")
    dec = read_any(tmp_path / "c.png")
    np.testing.assert_array_equal(dec.stored, g)
    assert dec.intensity.value_range == (0, 255)
    g16 = stored_image(16)
    Image.fromarray(g16).save(tmp_path / "d.png")
    dec = read_any(tmp_path / "d.png")
    np.testing.assert_array_equal(dec.stored, g16)
    assert dec.intensity.value_range == (0, 65535)


def test_dicom_intensity_attributes(tmp_path):
    ds = grey_dataset(stored_image(12), bits_stored=12, photometric="MONOCHROME1", RescaleSlope=2,
                      RescaleIntercept=-100, WindowCenter=[1000, 2000], WindowWidth=[500, 800],
                      VOILUTFunction="LINEAR_EXACT")
    ds.save_as(tmp_path / "x.dcm", enforce_file_format=True)
    t = read_dicom(tmp_path / "x.dcm").intensity
    assert t.invert and t.slope == 2 and t.intercept == -100
    assert t.windows == [(1000, 500), (2000, 800)] and t.voi_function == "LINEAR_EXACT"


# unlabelled.dcm decodes fine: its missing label is caught at assembly (tests/test_prepare.py).
@pytest.mark.parametrize("name, code", sorted((n, c) for n, c in BROKEN.items() if c != "no_label"))
def test_each_broken_demo_file_has_its_reason(demo_archive, name, code):
    got = ingest_file(Item(demo_archive / "BROKEN" / name, f"BROKEN/{name}"), PixelConfig(size=32))
    assert isinstance(got, tuple), f"{name} was not quarantined"
    assert got[1].startswith(code + ":"), got


def test_truncated_image_file(tmp_path):
    Image.fromarray(stored_image(8)).save(tmp_path / "a.jpg")
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "b.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(Quarantined, match="truncated"):
        read_any(tmp_path / "b.jpg")
    (tmp_path / "c.png").write_text("not a png")
    with pytest.raises(Quarantined, match="not_an_image"):
        read_any(tmp_path / "c.png")


def test_exif_orientation_is_applied(tmp_path):
    g = stored_image(16, shape=(20, 30))
    exif = Image.Exif()
    exif[274] = 6  # Orientation: rotate 90 degrees clockwise to display
    Image.fromarray(g).save(tmp_path / "o.png", exif=exif)
    np.testing.assert_array_equal(read_any(tmp_path / "o.png").stored, np.rot90(g, -1))


def test_white_is_zero_tiff_is_inverted_once_at_any_depth(tmp_path):
    cfg = PixelConfig(size=32)
    g16, g8 = stored_image(16, shape=(32, 32)), stored_image(8, shape=(32, 32))
    for name, arr, photometric in (("b16", g16, 1), ("w16", g16, 0), ("b8", g8, 1), ("w8", g8, 0)):
        Image.fromarray(arr).save(tmp_path / f"{name}.tif", tiffinfo={262: photometric})

    def prepared(name):
        return ingest_file(Item(tmp_path / f"{name}.tif", f"{name}.tif"), cfg).image.astype(np.float32)

    # 16 bits: the same stored values under WhiteIsZero show as the negative
    np.testing.assert_allclose(prepared("w16"), -prepared("b16"), atol=1e-3)
    assert read_any(tmp_path / "w16.tif").intensity.invert
    # 8 bits: Pillow writes the WhiteIsZero file inverted and inverts it back as it reads; not once more here
    np.testing.assert_array_equal(prepared("w8"), prepared("b8"))
    assert not read_any(tmp_path / "w8.tif").intensity.invert


def test_multi_page_tiff_is_quarantined_like_multi_frame_dicom(tmp_path):
    pages = [Image.fromarray(stored_image(8, seed=s)) for s in range(2)]
    pages[0].save(tmp_path / "m.tif", save_all=True, append_images=pages[1:])
    got = ingest_file(Item(tmp_path / "m.tif", "m.tif"), PixelConfig(size=32))
    assert isinstance(got, tuple) and got[1].startswith("multi_frame:") and "2 pages" in got[1]


def _prepared(tmp_path, ds, name="x.dcm", voi="window"):
    ds.save_as(tmp_path / name, enforce_file_format=True)
    got = ingest_file(Item(tmp_path / name, name), PixelConfig(size=32, voi=voi))
    assert not isinstance(got, tuple), got
    return got


def test_presentation_lut_shape_inverse_inverts_monochrome2_and_not_monochrome1_twice(tmp_path):
    arr = stored_image(12, shape=(64, 64))   # square: no pad margin, every pixel is image
    plain = _prepared(tmp_path, grey_dataset(arr.copy(), bits_stored=12), "m2.dcm")
    inverse = _prepared(tmp_path, grey_dataset(arr.copy(), bits_stored=12, PresentationLUTShape="INVERSE"), "m2i.dcm")
    np.testing.assert_allclose(inverse.image.astype(np.float32), -plain.image.astype(np.float32), atol=1e-3)
    assert inverse.meta["photometric"] == "MONOCHROME2 INVERSE" and plain.meta["photometric"] == "MONOCHROME2"
    mono1 = _prepared(tmp_path, grey_dataset(arr.copy(), bits_stored=12, photometric="MONOCHROME1"), "m1.dcm")
    mono1_inverse = _prepared(tmp_path, grey_dataset(arr.copy(), bits_stored=12, photometric="MONOCHROME1",
                                                     PresentationLUTShape="INVERSE"), "m1i.dcm")
    np.testing.assert_array_equal(mono1_inverse.image, mono1.image)   # the DX pairing: one inversion
    np.testing.assert_array_equal(mono1.image, inverse.image)


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize("voi", ["minmax", "percentile"])
def test_pixel_padding_shows_darkest_and_counts_in_no_voi(tmp_path, photometric, voi):
    """A radiograph in a frame of Pixel Padding Value 4095 (12 bits): prepared as the unframed image with a
    black frame, not squeezed by a VOI stretched to the padding value."""
    content = (stored_image(12, shape=(64, 64)) // 4 + 600).astype(np.uint16)   # values about 600..1630
    framed = np.full((64, 64), 4095, np.uint16)
    framed[16:48, 16:48] = content[16:48, 16:48]
    bare = np.full((64, 64), 0, np.uint16)
    bare[16:48, 16:48] = content[16:48, 16:48]
    inner = np.s_[8:24, 8:24]   # the content at 32 px
    pad = _prepared(tmp_path, grey_dataset(framed, bits_stored=12, photometric=photometric,
                                           PixelPaddingValue=4095), "pad.dcm", voi)
    no_pad = _prepared(tmp_path, grey_dataset(framed, bits_stored=12, photometric=photometric), "nopad.dcm", voi)
    assert pad.meta["padding_pixels"] == 64 * 64 - 32 * 32 and no_pad.meta["padding_pixels"] == 0
    span = np.ptp(pad.image[inner].astype(np.float32))
    assert span > 1.5 > 2 * np.ptp(no_pad.image[inner].astype(np.float32))   # the old squeeze
    assert (pad.image[:8] == -1).all()   # the frame shows black
    # the frame takes the content's darkest stored value: the content reads as it would alone
    alone = content[16:48, 16:48]
    lo, hi = (alone.min(), alone.max()) if photometric == "MONOCHROME2" else (alone.max(), alone.min())
    bare[:] = lo
    bare[16:48, 16:48] = alone
    ref = _prepared(tmp_path, grey_dataset(bare, bits_stored=12, photometric=photometric), "ref.dcm", voi)
    np.testing.assert_array_equal(pad.image, ref.image)


def test_pixel_padding_range_limit_signed(tmp_path):
    """Signed stored values with a padding range (-2000..-1000) read through implicit VR, where the padding
    value's VR (US or SS) comes from Pixel Representation."""
    content = stored_image(12, shape=(48, 48)).astype(np.int16)
    framed = content.copy()
    framed[:, :12] = np.linspace(-2000, -1000, 48 * 12).reshape(48, 12).astype(np.int16)
    ds = grey_dataset(np.zeros((48, 48), np.uint16), bits_stored=16, PixelRepresentation=1)
    ds.PixelData = framed.tobytes()
    ds.PixelPaddingValue, ds.PixelPaddingRangeLimit = -2000, -1000
    encode(ds, "implicit")
    got = _prepared(tmp_path, ds, voi="minmax")
    assert got.meta["padding_pixels"] == 48 * 12
    dec = read_dicom(tmp_path / "x.dcm")
    assert dec.stored[:, :12].min() == content[:, 12:].min() and (dec.stored[:, 12:] == content[:, 12:]).all()


def _png(path, arr, color_type, bit_depth=16):
    """A minimal PNG writer: Pillow cannot write 16-bit colour or grey+alpha PNGs."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    be = np.ascontiguousarray(arr).astype(">u2" if bit_depth == 16 else "u1")
    raw = b"".join(b"\0" + row.tobytes() for row in be)
    ihdr = struct.pack(">IIBBBBB", arr.shape[1], arr.shape[0], bit_depth, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) +
                     chunk(b"IEND", b""))


def _tiff(path, arr, photometric=1):
    """A minimal uncompressed little-endian TIFF writer with SampleFormat from the dtype (tags 256..339)."""
    import struct

    arr = np.ascontiguousarray(arr)
    spp, bps = (1 if arr.ndim == 2 else arr.shape[2]), arr.dtype.itemsize * 8
    data = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    tags = [(256, 4, [arr.shape[1]]), (257, 4, [arr.shape[0]]), (258, 3, [bps] * spp), (259, 3, [1]),
            (262, 3, [photometric]), (273, 4, [8]), (277, 3, [spp]), (278, 4, [arr.shape[0]]),
            (279, 4, [len(data)]), (284, 3, [1]), (339, 3, [{"u": 1, "i": 2, "f": 3}[arr.dtype.kind]] * spp)]
    ifd = 8 + len(data) + len(data) % 2
    extra, entries = b"", b""
    for tag, typ, vals in tags:
        vb = struct.pack("<" + {3: "H", 4: "I"}[typ] * len(vals), *vals)
        if len(vb) <= 4:
            entries += struct.pack("<HHI", tag, typ, len(vals)) + vb.ljust(4, b"\0")
        else:
            entries += struct.pack("<HHII", tag, typ, len(vals), ifd + 2 + 12 * len(tags) + 4 + len(extra))
            extra += vb
    path.write_bytes((b"II*\0" + struct.pack("<I", ifd) + data).ljust(ifd, b"\0") +
                     struct.pack("<H", len(tags)) + entries + b"\0\0\0\0" + extra)


@pytest.mark.parametrize("name, color_type, channels, found", [
    ("rgb.png", 2, 3, "16-bit colour PNG (RGB, 16 bits per sample)"),
    ("la.png", 4, 2, "16-bit grey+alpha PNG (LA, 16 bits per sample)"),
    ("rgba.png", 6, 4, "16-bit colour+alpha PNG (RGBA, 16 bits per sample)"),
    ("rgb.tif", None, 3, "16-bit colour TIFF (RGB, 16 bits per sample)")])
def test_16bit_colour_png_and_tiff_are_quarantined_not_reduced_to_8_bits(tmp_path, name, color_type, channels, found):
    g = stored_image(12, shape=(16, 16))
    arr = np.repeat(g[..., None], channels, 2)
    if channels in (2, 4):
        arr[..., -1] = 65535  # opaque alpha
    if color_type is None:
        _tiff(tmp_path / name, arr, photometric=2)
    else:
        _png(tmp_path / name, arr, color_type)
    with pytest.raises(Quarantined, match="unsupported") as e:
        read_any(tmp_path / name)
    assert found in str(e.value) and "Pillow reads it as 8 bits" in str(e.value)
    # 8-bit colour and 16-bit grey still read
    _png(tmp_path / "c8.png", np.repeat((g >> 4).astype(np.uint8)[..., None], 3, 2), 2, bit_depth=8)
    np.testing.assert_array_equal(read_any(tmp_path / "c8.png").stored, g >> 4)
    _png(tmp_path / "g16.png", g, 0)
    np.testing.assert_array_equal(read_any(tmp_path / "g16.png").stored, g)


def test_signed_8bit_and_unsigned_32bit_tiff_read_right(tmp_path):
    g = stored_image(12, shape=(16, 16)).astype(np.int64)
    cases = {"i8.tif": (g // 16 - 128).astype(np.int8), "u32.tif": (g * 1_000_000).astype(np.uint32),
             "i16.tif": (g - 1000).astype(np.int16), "u16.tif": g.astype(np.uint16)}   # the last two already right
    for name, arr in cases.items():
        _tiff(tmp_path / name, arr)
        dec = read_any(tmp_path / name)
        assert dec.stored.min() < 0 if arr.dtype.kind == "i" else dec.stored.min() >= 0
        np.testing.assert_array_equal(dec.stored, arr, err_msg=name)
    assert (g * 1_000_000).max() >= 2**31   # values that wrapped negative through Pillow's int32
    assert read_any(tmp_path / "i8.tif").intensity.value_range == (-128, 127)


def test_dicom_high_bit_not_bits_stored_minus_one_is_quarantined(tmp_path):
    # 12 bits at the top of the 16-bit word (HighBit 15): PS3.3 C.7.6.3 requires HighBit = BitsStored - 1
    arr = stored_image(12)
    ds = grey_dataset(arr, bits_stored=12)
    ds.HighBit, ds.PixelData = 15, (arr << 4).tobytes()
    ds.save_as(tmp_path / "x.dcm", enforce_file_format=True)
    with pytest.raises(Quarantined, match="unsupported: HighBit 15 with BitsStored 12"):
        read_dicom(tmp_path / "x.dcm")


def test_big_endian_file_without_meta_reads_right_not_byte_swapped(tmp_path):
    # An ACR-NEMA style bare data set in explicit VR big endian: no 'DICM', no Transfer Syntax UID
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    ref = pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array
    ds = pydicom.dcmread(get_testdata_file("MR_small_bigendian.dcm"))
    del ds.file_meta
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = False, False
    write_dataset(fp, ds)
    (tmp_path / "raw").write_bytes(fp.getvalue())
    dec = read_dicom(tmp_path / "raw")
    np.testing.assert_array_equal(dec.stored, ref)
    assert dec.meta["transfer_syntax"] == "Explicit VR Big Endian (no meta)"


@pytest.mark.parametrize("groups", ["SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"])
def test_enhanced_rescale_and_window_come_from_the_functional_groups(tmp_path, groups):
    # PS3.3 C.7.6.16.2.9/.10: a single-frame enhanced CT keeps them in Pixel Value Transformation / Frame VOI LUT
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = grey_dataset(stored_image(12), bits_stored=12, modality="CT", sop_class="1.2.840.10008.5.1.4.1.1.2.1")
    ds.NumberOfFrames = 1
    pvt, voi, fg = Dataset(), Dataset(), Dataset()
    pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = 1, -1024, "HU"
    voi.WindowCenter, voi.WindowWidth, voi.VOILUTFunction = -600, 1500, "SIGMOID"
    fg.PixelValueTransformationSequence, fg.FrameVOILUTSequence = Sequence([pvt]), Sequence([voi])
    setattr(ds, groups, Sequence([fg]))
    ds.save_as(tmp_path / "x.dcm", enforce_file_format=True)
    t = read_dicom(tmp_path / "x.dcm").intensity
    assert (t.slope, t.intercept, t.windows, t.voi_function) == (1, -1024, [(-600, 1500)], "SIGMOID")
    # top-level values, where an ordinary file has them, still win
    ds.RescaleIntercept, ds.WindowCenter, ds.WindowWidth = -1000, 40, 400
    ds.save_as(tmp_path / "y.dcm", enforce_file_format=True)
    t = read_dicom(tmp_path / "y.dcm").intensity
    assert (t.intercept, t.windows, t.voi_function) == (-1000, [(40, 400)], "LINEAR")
