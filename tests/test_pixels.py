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
