"""Image helpers (common/images.py): [-1, 1] to uint8 and the sample grid."""
import torch

from common.images import tile, to_uint8


def test_tile_and_uint8_edges():
    x = torch.tensor([-1.0, 0.0, 1.0])
    assert to_uint8(x).tolist() == [0, 128, 255]
    grid = tile(torch.zeros(5, 1, 4, 4), ncol=3, pad=1)
    assert grid.shape == (2 * 5 + 1, 3 * 5 + 1) and grid.dtype.name == "uint8"
