import numpy as np
import pytest

from imaging.pixels import (BlankImage, Intensity, PixelConfig, apply_intensity, area_resize, prepare_pixels,
                            prepare_pixels_span, window)


@pytest.mark.parametrize("shape, out", [((64, 64), (16, 16)), ((100, 70), (33, 21)), ((37, 53), (64, 64)),
                                        ((1024, 1000), (64, 62))])
def test_area_resize_preserves_mean_and_constants(shape, out):
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 4095, shape)
    small = area_resize(img, *out)
    assert small.shape == out and small.dtype == np.float32
    assert small.mean() == pytest.approx(img.mean(), rel=1e-4)
    assert np.allclose(area_resize(np.full(shape, 7.0), *out), 7.0, atol=1e-4)


def test_area_resize_integer_factor_is_block_mean():
    img = np.random.default_rng(1).integers(0, 65535, (96, 64)).astype(np.uint16)
    expected = img.reshape(24, 4, 16, 4).mean(axis=(1, 3))
    np.testing.assert_allclose(area_resize(img, 24, 16), expected, rtol=1e-5)


def test_linear_window_follows_the_standard():
    # PS3.3 C.11.2.1.2: c=2048, w=4096 maps x <= c-0.5-(w-1)/2 to 0 and x > c-0.5+(w-1)/2 to 1
    c, w = 2048.0, 4096.0
    x = np.array([-10.0, c - 0.5 - (w - 1) / 2, c - 0.5, c - 0.5 + (w - 1) / 2 + 1e-3, 99999])
    np.testing.assert_allclose(window(x, c, w), [0, 0, 0.5, 1, 1], atol=1e-6)
    np.testing.assert_allclose(window(np.array([c]), c, w, "LINEAR_EXACT"), [0.5])
    np.testing.assert_allclose(window(np.array([c]), c, w, "SIGMOID"), [0.5])


def ramp():
    return np.tile(np.arange(0, 4096, 16, dtype=np.uint16), (256, 1))  # (256, 256): 0..4080 left to right


def test_monochrome1_inverts():
    cfg = PixelConfig(size=32, voi="minmax")
    a, _ = prepare_pixels(ramp(), Intensity(), cfg)
    b, _ = prepare_pixels(ramp(), Intensity(invert=True), cfg)
    np.testing.assert_allclose(a, -b, atol=1e-6)
    assert a[0, 0] == pytest.approx(-1, abs=0.05) and a[0, -1] == pytest.approx(1, abs=0.05)


def test_rescale_is_applied_before_the_window():
    cfg = PixelConfig(size=32)
    # stored 0..4080 with slope 2, intercept -1000 -> modality -1000..7160; window centred on modality 3000
    t = Intensity(slope=2.0, intercept=-1000.0, windows=[(3000.0, 2000.0)])
    out, used = prepare_pixels(ramp(), t, cfg)
    stored = area_resize(ramp().astype(np.float64), 32, 32)
    expected = window(stored * 2 - 1000, 3000, 2000) * 2 - 1
    assert used == "window"
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert (out == -1).any() and (out == 1).any()  # the window clips at both ends of this ramp


def test_window_mode_falls_back_and_says_so():
    cfg = PixelConfig(size=32)
    assert prepare_pixels(ramp(), Intensity(), cfg)[1] == "minmax"
    assert prepare_pixels(ramp().astype(np.uint8), Intensity(value_range=(0, 255)), cfg)[1] == "full_range"
    lut = (np.arange(0, 4096.0), np.sqrt(np.arange(0, 4096.0)))
    assert prepare_pixels(ramp(), Intensity(voi_lut=lut), cfg)[1] == "voi_lut"


def test_percentile_clips_outliers():
    img = ramp().astype(np.float64)
    img[:8, :8] = 1e6  # a hot corner
    out, used = prepare_pixels(img, Intensity(), PixelConfig(size=32, voi="percentile", percentiles=(1, 95)))
    assert used == "percentile"
    assert out.max() == 1 and np.median(out) < 0.5  # the corner no longer squashes the rest


@pytest.mark.parametrize("geometry", ["pad", "crop"])
@pytest.mark.parametrize("shape", [(200, 100), (100, 200), (128, 128)])
def test_output_range_shape_and_geometry(geometry, shape):
    img = np.random.default_rng(2).integers(0, 4096, shape).astype(np.uint16)
    out, _ = prepare_pixels(img, Intensity(), PixelConfig(size=48, geometry=geometry))
    assert out.shape == (48, 48) and out.dtype == np.float32
    assert out.min() >= -1 and out.max() <= 1
    if geometry == "pad" and shape[0] != shape[1]:
        margin = out[:, :10] if shape[0] > shape[1] else out[:10, :]
        assert (margin == -1).all()  # letterbox margin is black
    if geometry == "crop":
        assert (out > -1).mean() > 0.9


def test_blank_image_raises():
    with pytest.raises(BlankImage):
        apply_intensity(np.full((8, 8), 3.0), Intensity(), PixelConfig(size=8))


def test_config_is_checked():
    with pytest.raises(ValueError, match="geometry"):
        PixelConfig(geometry="stretch")
    with pytest.raises(ValueError, match="voi"):
        PixelConfig(voi="auto")


def test_wide_containers_use_the_image_range_not_the_container_range():
    """A 16-bit PNG holding 12-bit values: the container's full range would squeeze it into [-1, -0.88]."""
    twelve = (np.random.default_rng(2).uniform(300, 3800, (96, 96))).astype(np.uint16)
    cfg = PixelConfig(size=32)
    out, used, span = prepare_pixels_span(twelve, Intensity(value_range=(0.0, 65535.0)), cfg)
    assert used == "minmax" and out.min() == pytest.approx(-1, abs=1e-6) and out.max() == pytest.approx(1, abs=1e-6)
    assert span == pytest.approx(2.0, abs=1e-5)
    eight = (twelve // 16).astype(np.uint8)  # 8-bit containers keep their full range (display values)
    out8, used8, span8 = prepare_pixels_span(eight, Intensity(value_range=(0.0, 255.0)), cfg)
    assert used8 == "full_range" and out8.min() > -0.9 and span8 < 2.0


def test_span_leaves_the_pad_margin_out():
    wide = np.tile(np.linspace(1000, 1100, 120), (40, 1))  # 40x120: a letterbox with a -1 margin
    t = Intensity(windows=[(2048.0, 4096.0)])
    out, _, span = prepare_pixels_span(wide, t, PixelConfig(size=32))
    assert (out == -1).any()  # the margin
    assert span < 0.1 and out.max() - out.min() > 0.5  # the content is flat; with the margin it would pass


# ---- the whole intensity chain against pydicom's own modality LUT and VOI ------------------------------
# Files from pydicom's test data (those not shipped with pydicom are skipped when they cannot be read
# offline), and variants of them that carry what no shipped file does: a Modality LUT Sequence, a VOI LUT
# Sequence, the SIGMOID and LINEAR_EXACT functions, MONOCHROME1. The module reads each file with
# imaging.decode.read_dicom and runs prepare_pixels at the image's own size (no resampling); the reference
# is pydicom.pixels.apply_modality_lut then apply_windowing / apply_voi on ds.pixel_array, scaled to [0, 1]
# by the output range pydicom gives the extreme inputs.

def _with_modality_lut(ds):
    """A Modality LUT Sequence (a square-root curve over the stored range) in place of the rescale."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    first, n = int(ds.pixel_array.min()), int(ds.pixel_array.max() - ds.pixel_array.min()) + 1
    item = Dataset()
    item.LUTDescriptor = [n, first, 16]
    item.ModalityLUTType = "US"
    item.add_new("LUTData", "US", [int(round(4000 * np.sqrt(i / (n - 1)))) for i in range(n)])
    ds.ModalityLUTSequence = Sequence([item])
    for key in ("RescaleSlope", "RescaleIntercept", "RescaleType", "WindowCenter", "WindowWidth"):
        ds.pop(key, None)
    ds.WindowCenter, ds.WindowWidth = 2500, 2000
    return ds


def _with_voi_lut(ds):
    """A VOI LUT Sequence (a gamma curve that is not monotone at its top end) in place of the window."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    n, first = 1200, 100
    curve = 65535 * (np.arange(n) / (n - 1)) ** 0.5
    curve[-50:] = curve[-50:][::-1]  # the table's maximum is not its last entry
    item = Dataset()
    item.LUTDescriptor = [n, first, 16]
    item.add_new("LUTData", "US", [int(v) for v in curve])
    ds.VOILUTSequence = Sequence([item])
    return ds


def _voi_function(name):
    def change(ds):
        ds.VOILUTFunction = name
        return ds
    return change


def _ct_window(ds):  # CT_small has a rescale (intercept -1024) but no window: give it a soft-tissue one
    ds.WindowCenter, ds.WindowWidth = 40, 400
    return ds


def _monochrome1(ds):
    ds.PhotometricInterpretation = "MONOCHROME1"
    return ds


VOI_CASES = {  # id: (pydicom test file, change to the data set or None)
    "CT_small-rescale-minmax": ("CT_small.dcm", None),
    "CT_small-rescale-window": ("CT_small.dcm", _ct_window),
    "CT_small-monochrome1": ("CT_small.dcm", lambda ds: _monochrome1(_ct_window(ds))),
    "CT_small-modality-lut": ("CT_small.dcm", _with_modality_lut),
    "MR_small-window": ("MR_small.dcm", None),
    "MR_small-big-endian": ("MR_small_bigendian.dcm", None),
    "MR_small-sigmoid": ("MR_small.dcm", _voi_function("SIGMOID")),
    "MR_small-linear-exact": ("MR_small.dcm", _voi_function("LINEAR_EXACT")),
    "MR_small-voi-lut": ("MR_small.dcm", _with_voi_lut),
    "overlay-first-of-two-windows": ("examples_overlay.dcm", None),
    "j2k-rescale-window": ("693_J2KI.dcm", None),
    "mlut_18": ("mlut_18.dcm", None),
    "vlut_04": ("vlut_04.dcm", None),
    "RG1_UNCI": ("RG1_UNCI.dcm", None),
}


def _voi_file(tmp_path, name, change):
    """The test file (or its changed copy in tmp_path) and its data set; skips files not available offline."""
    import pydicom
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not in pydicom's offline test data")
    if change is None:
        return path, pydicom.dcmread(path)
    ds = change(pydicom.dcmread(path))
    ds.save_as(tmp_path / name)
    return tmp_path / name, pydicom.dcmread(tmp_path / name)


def pydicom_display(ds) -> np.ndarray:
    """pydicom's modality LUT and VOI, scaled to [0, 1] by the output range pydicom gives the extreme inputs
    (the container's for a window, the table's for a VOI LUT); min-max when the file has no VOI."""
    from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing

    modality = apply_modality_lut(ds.pixel_array, ds)
    if ds.get("VOILUTSequence"):
        first, n = int(ds.VOILUTSequence[0].LUTDescriptor[1]), int(ds.VOILUTSequence[0].LUTDescriptor[0]) or 65536
        table = apply_voi(np.arange(first, first + n), ds).astype(np.float64)
        out, low, high = apply_voi(np.rint(modality).astype(np.int64), ds).astype(np.float64), table.min(), table.max()
    elif "WindowCenter" in ds:
        with np.errstate(over="ignore"):
            low, high = apply_windowing(np.array([-1e12, 1e12]), ds)
        out = apply_windowing(modality, ds)
    else:
        out, low, high = modality.astype(np.float64), modality.min(), modality.max()
    display = (out - low) / (high - low)
    return 1 - display if ds.PhotometricInterpretation == "MONOCHROME1" else display


@pytest.mark.parametrize("case", VOI_CASES)
def test_intensity_chain_agrees_with_pydicom(tmp_path, case):
    from imaging.decode import read_dicom

    path, ds = _voi_file(tmp_path, *VOI_CASES[case])
    decoded = read_dicom(path)
    h, w = decoded.stored.shape
    side = max(h, w)  # pad geometry at the image's own size: no resampling, the content centred
    out, used = prepare_pixels(decoded.stored, decoded.intensity, PixelConfig(size=side, voi="window"))
    top, left = (side - h) // 2, (side - w) // 2
    ours = (out[top:top + h, left:left + w].astype(np.float64) + 1) / 2
    reference = pydicom_display(ds)
    assert used == ("voi_lut" if ds.get("VOILUTSequence") else "window" if "WindowCenter" in ds else "minmax")
    np.testing.assert_allclose(ours, reference, atol=2e-4)
    assert reference.std() > 0.05  # the comparison is between images with content, not two flat fields
