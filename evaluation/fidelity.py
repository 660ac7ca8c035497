"""Fidelity of a synthetic image set, staged as images -> features -> metrics, through torch-fidelity.

Two feature extractors, both registered with torch-fidelity: its Inception-v3 (``inception-v3-compat``,
for comparison with the literature; the weights come from a file or torch's hub cache) and our domain
extractor (``medaug-domain``, evaluation/features.py, trained on the real training split). Metrics: FID,
KID (subset size adapted to small sets), precision/recall (Kynkäänniemi et al. 2019), relative FID
(Woodland et al. 2024: FID to the real data divided by the FID between two random halves of the real
data, with equal sample sizes; the median over draws of the halves, with their range) and a memorisation
audit (nearest real training image of each synthetic image, against the same distance for held-out real
images). This module holds the extractors, the features and FID, which the GAN trainer's checks read too;
the other metrics are in evaluation/fidelity_stats.py, which only the fidelity stage imports, so that a
change to them reruns that stage alone.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from common.images import to_uint8
from common.torchvision_guard import ensure_torchvision
from evaluation.features import check_images, domain_net_from_state

ensure_torchvision()
import torch_fidelity  # noqa: E402
from torch_fidelity.feature_extractor_base import FeatureExtractorBase  # noqa: E402
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric  # noqa: E402
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY  # noqa: E402
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset  # noqa: E402

DOMAIN = "medaug-domain"
INCEPTION = "inception-v3-compat"
FEATURE_LAYER = {DOMAIN: "features", INCEPTION: "2048"}
FID = "fid"   # result key (the others: evaluation/fidelity_stats.py)


class ExtractorUnavailable(RuntimeError):
    """The extractor cannot be built here (for instance, Inception weights that cannot be downloaded)."""


# torch-fidelity's weights-inception-2015-12-05-6726825d.pth: as in torch.hub's file names, the digits are the
# start of the file's SHA-256. Only these weights give FIDs that compare with published ones.
INCEPTION_SHA256_PREFIX = "6726825d"


def hub_weights() -> Path:
    """Where torch's hub cache keeps torch-fidelity's Inception weights once downloaded."""
    url = torch_fidelity.feature_extractor_inceptionv3.URL_INCEPTION_V3
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[1]


def check_inception_weights(path: str | Path) -> None:
    """Raise ValueError unless ``path`` holds torch-fidelity's Inception weights (by SHA-256): other weights (a
    fine-tuned copy, torchvision's, a truncated download) would load and give FIDs on another scale, silently."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if not digest.hexdigest().startswith(INCEPTION_SHA256_PREFIX):
        raise ValueError(f"{path} is not torch-fidelity's Inception weights (weights-inception-2015-12-05-"
                         f"{INCEPTION_SHA256_PREFIX}.pth): its SHA-256 is {digest.hexdigest()}; FIDs from other "
                         "weights do not compare with published FIDs")


class DomainFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity wrapper of DomainNet. Input: uint8 (B, C, H, W) images (channel 0 is used).
    The network comes from ``domain_state`` (a dict) or ``feature_extractor_weights_path`` (a file)."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, domain_state=None, **kwargs):
        super().__init__(name, features_list)
        if domain_state is None:
            if feature_extractor_weights_path is None:
                raise ExtractorUnavailable(f"{name} needs domain_state= or feature_extractor_weights_path=")
            domain_state = torch.load(feature_extractor_weights_path, map_location="cpu", weights_only=True)
        self.net = domain_net_from_state(domain_state)

    @staticmethod
    def get_provided_features_list():
        return ("features",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "features"

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 1, 64, 64, dtype=torch.uint8)

    def forward(self, x):
        if x.dtype != torch.uint8 or x.ndim != 4:
            raise ValueError(f"expected uint8 (B,C,H,W) images, got {x.dtype} {tuple(x.shape)}")
        return (self.net.features(x[:, :1].float() / 127.5 - 1),)


def register() -> None:
    if DOMAIN not in FEATURE_EXTRACTORS_REGISTRY:
        torch_fidelity.register_feature_extractor(DOMAIN, DomainFeatureExtractor)


class _UInt8RGB(torch.utils.data.Dataset):
    """[-1,1] (N,1,H,W) images as torch-fidelity's input convention: uint8 (3,H,W), grey repeated."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return torch.from_numpy(to_uint8(self.images[i])).expand(3, -1, -1).contiguous()


def features(images, extractor: str, device: torch.device | str = "cpu", batch: int = 256, **kwargs) -> torch.Tensor:
    """(N,1,H,W) images in [-1,1] -> (N, D) float32 features on the CPU, through torch-fidelity.

    ``kwargs`` go to the extractor: ``domain_state=`` for the domain extractor,
    ``feature_extractor_weights_path=`` for either. Raises ExtractorUnavailable when it cannot be built.
    """
    check_images(images)
    register()
    cuda = torch.device(device).type == "cuda"
    try:
        fe = create_feature_extractor(extractor, [FEATURE_LAYER[extractor]], cuda=cuda, verbose=False, **kwargs)
    except ExtractorUnavailable:
        raise
    except Exception as e:  # noqa: BLE001 - network, missing file, bad weights: all mean "not available here"
        raise ExtractorUnavailable(f"{extractor}: {type(e).__name__}: {e}") from e
    out = get_featuresdict_from_dataset(_UInt8RGB(images), fe, batch, cuda, save_cpu_ram=True, verbose=False)
    return out[FEATURE_LAYER[extractor]].float()


def as_features(f) -> torch.Tensor:
    """(N >= 2, D) features as a float64 CPU tensor."""
    t = torch.as_tensor(np.asarray(f, dtype=np.float64) if not torch.is_tensor(f) else f).double().cpu()
    if t.ndim != 2 or len(t) < 2:
        raise ValueError(f"expected (N>=2, D) features, got {tuple(t.shape)}")
    return t


def fid(f_synthetic, f_real) -> float:
    s1 = fid_features_to_statistics(as_features(f_synthetic))
    s2 = fid_features_to_statistics(as_features(f_real))
    return float(fid_statistics_to_metric(s1, s2, verbose=False)[KEY_METRIC_FID])
