"""Fidelity of a synthetic image set, staged as images -> features -> metrics, through torch-fidelity.

Two feature extractors, both registered with torch-fidelity: its Inception-v3 (``inception-v3-compat``,
for comparison with the literature; the weights come from a file or torch's hub cache) and our domain
extractor (``medaug-domain``, evaluation/features.py, trained on the real training split). Metrics: FID,
KID (subset size adapted to small sets), precision/recall (Kynkäänniemi et al. 2019), relative FID
(Woodland et al. 2024: FID to the real data divided by the FID between two random halves of the real
data, with equal sample sizes) and a memorisation audit (nearest real training image of each synthetic
image, against the same distance for held-out real images).
"""
from __future__ import annotations

import numpy as np
import torch

from common.images import to_uint8
from common.torchvision_guard import ensure_torchvision
from evaluation.features import DomainNet, ExtractorConfig, check_images

ensure_torchvision()
import torch_fidelity  # noqa: E402
from torch_fidelity.feature_extractor_base import FeatureExtractorBase  # noqa: E402
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric  # noqa: E402
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric  # noqa: E402
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric  # noqa: E402
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY  # noqa: E402
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset  # noqa: E402

DOMAIN = "medaug-domain"
INCEPTION = "inception-v3-compat"
FEATURE_LAYER = {DOMAIN: "features", INCEPTION: "2048"}
# result keys
FID, KID, KID_STD, KID_SUBSET, PRECISION, RECALL = "fid", "kid", "kid_std", "kid_subset_size", "precision", "recall"
N_SYNTHETIC, N_REAL = "n_synthetic", "n_real"


class ExtractorUnavailable(RuntimeError):
    """The extractor cannot be built here (for instance, Inception weights that cannot be downloaded)."""


def extractor_state(net: DomainNet, **extra) -> dict:
    """The domain extractor as a self-describing dict (for torch.save and ``domain_state=``)."""
    return {"format": 1, "config": net.cfg.to_dict(), "state_dict": net.state_dict(), **extra}


def domain_net_from_state(state: dict) -> DomainNet:
    if state.get("format") != 1:
        raise ValueError(f"unknown domain extractor format {state.get('format')}")
    net = DomainNet(ExtractorConfig(**state["config"]))
    net.load_state_dict(state["state_dict"])
    return net.eval()


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


def _as_tensor(f) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(f, dtype=np.float64) if not torch.is_tensor(f) else f).double().cpu()
    if t.ndim != 2 or len(t) < 2:
        raise ValueError(f"expected (N>=2, D) features, got {tuple(t.shape)}")
    return t


def fid(f_synthetic, f_real) -> float:
    s1 = fid_features_to_statistics(_as_tensor(f_synthetic))
    s2 = fid_features_to_statistics(_as_tensor(f_real))
    return float(fid_statistics_to_metric(s1, s2, verbose=False)[KEY_METRIC_FID])


def fidelity_metrics(f_synthetic, f_real, kid_subsets: int = 100, prc_neighborhood: int = 3,
                     seed: int = 2020) -> dict:
    """FID, KID and precision/recall between two feature sets, with the sample counts.

    KID's subset size is min(1000, n_synthetic, n_real), so small sets still get a value; precision and
    recall need more than ``prc_neighborhood`` samples on each side (else null).
    """
    a, b = _as_tensor(f_synthetic), _as_tensor(f_real)
    subset = min(1000, len(a), len(b))
    kid = kid_features_to_metric(a, b, kid_subsets=kid_subsets, kid_subset_size=subset, rng_seed=seed, verbose=False)
    out = {FID: fid(a, b), KID: kid[KEY_METRIC_KID_MEAN], KID_STD: kid[KEY_METRIC_KID_STD], KID_SUBSET: subset,
           PRECISION: None, RECALL: None, N_SYNTHETIC: len(a), N_REAL: len(b)}
    if min(len(a), len(b)) > prc_neighborhood:
        prc = prc_features_to_metric(a.float(), b.float(), prc_neighborhood=prc_neighborhood, verbose=False,
                                     save_cpu_ram=True)
        out[PRECISION], out[RECALL] = float(prc[KEY_METRIC_PRECISION]), float(prc[KEY_METRIC_RECALL])
    return out


def relative_fid(f_synthetic, f_real, rng: np.random.Generator) -> dict:
    """FID(synthetic, real half B) / FID(real half A, real half B), all three sets of the same size n/2,
    so the ratio is ~1 for a generator as close to the data as an independent real sample is."""
    a, b = _as_tensor(f_synthetic), _as_tensor(f_real)
    half = len(b) // 2
    if half < 2:
        raise ValueError(f"relative FID needs at least 4 real images, got {len(b)}")
    perm = rng.permutation(len(b))
    real_a, real_b = b[perm[:half]], b[perm[half:2 * half]]
    syn = a[rng.choice(len(a), min(half, len(a)), replace=False)]
    between_real = fid(real_a, real_b)
    to_real = fid(syn, real_b)
    return {"relative_fid": to_real / between_real if between_real > 0 else None,
            "fid_synthetic_vs_real_half": to_real, "fid_real_halves": between_real, "n_half": half,
            "n_synthetic_used": len(syn)}


def nearest(query, base, batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distance from each query row to its nearest base row, and that row's index."""
    q, b = torch.as_tensor(np.asarray(query), dtype=torch.float32), torch.as_tensor(np.asarray(base), dtype=torch.float32)
    q, b = q.flatten(1), b.flatten(1)
    dists, idx = [], []
    for i in range(0, len(q), batch):
        d = torch.cdist(q[i:i + batch], b)
        m = d.min(dim=1)
        dists.append(m.values)
        idx.append(m.indices)
    return torch.cat(dists).numpy(), torch.cat(idx).numpy()


def memorisation_audit(synthetic, train, heldout, percentile: float = 1.0) -> dict:
    """For each synthetic image, the distance to its nearest real training image, against the same
    distance for held-out real images (which the generator never saw). Inputs: one representation per
    image (features or pixels), (N, ...) arrays. Reports the fraction of synthetic images closer to a
    training image than the ``percentile``-th percentile of the held-out distances, next to the same
    fraction for the held-out images themselves (``percentile``/100 by construction)."""
    d_syn, i_syn = nearest(synthetic, train)
    d_real, _ = nearest(heldout, train)
    thr = float(np.percentile(d_real, percentile))
    return {"threshold": thr, "percentile": percentile,
            "fraction_synthetic_below": float(np.mean(d_syn < thr)),
            "fraction_heldout_below": float(np.mean(d_real < thr)),
            "median_synthetic_distance": float(np.median(d_syn)), "median_heldout_distance": float(np.median(d_real)),
            "n_synthetic": len(d_syn), "n_heldout": len(d_real), "n_train": len(train),
            "distances": d_syn, "nearest_train": i_syn}
