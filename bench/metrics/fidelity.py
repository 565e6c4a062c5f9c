"""The numbers the field compares: FID (Heusel et al. 2017), Inception Score and KID in the space of the
TensorFlow Inception graph, through torch-fidelity.

torch-fidelity's ``inception-v3-compat`` extractor is the patched Inception-V3 with the
``pt_inception-2015-12-05`` weights that pytorch-fid, torch-fidelity and clean-fid share, fed uint8 images
and resized inside as the TensorFlow graph does, so its FID matches published numbers; the metrics are its
own functions applied to its features. A hand-written port would have to reproduce every patched block and
the resize to match, which is what the library already does and tests.

The weights are never fetched silently: they come from ``--inception-weights PATH``, the
``BENCH_FID_WEIGHTS`` environment variable, or a copy downloaded once into the cache on request. A weight
file is read with ``weights_only=True`` and its shapes checked before the library loads it. Features of a
dataset's training split, the reference, are computed once and cached, keyed by dataset, image size and the
weight file's hash.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..io import UnreadableTensorFile, cache_root, load_tensors, torch_save_atomic

WEIGHTS_ENV = "BENCH_FID_WEIGHTS"
WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
"""torch-fidelity's name for the ``pt_inception-2015-12-05`` weights, as its download writes them."""
WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{WEIGHTS_FILE}"
EXPECTED_SHAPES = {"Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3), "fc.weight": (1008, 2048)}
ISC_SPLITS, KID_SUBSETS, KID_SUBSET_SIZE, RNG_SEED = 10, 100, 1000, 2020  # torch-fidelity's defaults


class InceptionWeightsError(ValueError):
    """The Inception weights are missing or are not an Inception-V3 state dict."""


def weights_cache() -> Path:
    return cache_root() / "inception" / WEIGHTS_FILE


def find_weights(path: str | Path | None = None, *, download: bool = False) -> Path:
    """The weight file: ``path``, else ``$BENCH_FID_WEIGHTS``, else the cached download; with ``download``
    a missing cache is fetched once (internet needed). Otherwise an error that says both ways."""
    given = path or os.environ.get(WEIGHTS_ENV)
    if given:
        given = Path(given).expanduser()
        if not given.is_file():
            raise InceptionWeightsError(f"no Inception weight file at {str(given)!r}")
        return given
    cached = weights_cache()
    if cached.is_file():
        return cached
    if download:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(WEIGHTS_URL, str(cached))  # writes a temporary file, then renames
        return cached
    raise InceptionWeightsError(
        f"standard FID, IS and KID need the pt_inception-2015-12-05 Inception weights ({WEIGHTS_FILE}, the "
        f"file pytorch-fid, torch-fidelity and clean-fid use): give --inception-weights PATH or set "
        f"{WEIGHTS_ENV}=PATH, or fetch them once into {cached.parent} with --download-inception (bench "
        "eval) or --download (bench run; needs internet)"
    )


def check_weights(path: Path) -> str:
    """The file's SHA-256 (16 hex digits), after checking it holds an Inception-V3 state dict of tensors."""
    try:
        state = load_tensors(path)
    except (UnreadableTensorFile, OSError) as exc:
        raise InceptionWeightsError(
            f"{exc}; expected the Inception weights {WEIGHTS_FILE} (pt_inception-2015-12-05, as "
            "--download-inception fetches them)"
        ) from None
    for key, shape in EXPECTED_SHAPES.items():
        found = getattr(state.get(key) if isinstance(state, dict) else None, "shape", None)
        if found is None or tuple(found) != shape:
            raise InceptionWeightsError(
                f"{str(path)!r} is not the Inception-V3 state dict torch-fidelity expects: {key} should have "
                f"shape {shape}, found {tuple(found) if found is not None else 'nothing'}"
            )
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def to_uint8_rgb(images: Tensor) -> Tensor:
    """[-1, 1] floats (or uint8) of 1 or 3 channels to the uint8 RGB batch the extractor takes."""
    if images.dtype != torch.uint8:
        images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    if images.shape[1] != 3:
        raise ValueError(f"images must have 1 or 3 channels, got {images.shape[1]}")
    return images.contiguous()


class StandardInception:
    """torch-fidelity's Inception-V3 with checked weights: pool features (2048) and unbiased logits."""

    def __init__(self, weights: Path, *, device: torch.device | str = "cpu", batch_size: int = 64) -> None:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.weights_hash = check_weights(weights)  # before the library unpickles the file
        self.net = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(weights)
        ).to(device)
        self.device, self.batch_size = torch.device(device), batch_size

    @torch.inference_mode()
    def features(self, images: Tensor, *, progress: bool = False) -> tuple[Tensor, Tensor]:
        """Pool features [N, 2048] and logits [N, 1008] (float32, on CPU) of images, a batch at a time."""
        pools, logits = [], []
        for i in tqdm(range(0, images.shape[0], self.batch_size), desc="inception", disable=not progress):
            batch = to_uint8_rgb(images[i : i + self.batch_size]).to(self.device)
            pool, logit = self.net(batch)
            pools.append(pool.float().cpu())
            logits.append(logit.float().cpu())
        return torch.cat(pools), torch.cat(logits)


def reference_features(
    extractor: StandardInception, dataset: str, train_images: Tensor, *, progress: bool = False
) -> Tensor:
    """Pool features of a dataset's training split, computed once per dataset, size, weight file and data
    (an image folder's name says nothing of its content, so the images' bytes are part of the key)."""
    size = "x".join(map(str, train_images.shape[1:]))
    data = hashlib.sha256(train_images.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:12]
    path = cache_root() / "fid-reference" / f"{dataset}-{size}-{data}-{extractor.weights_hash}.pt"
    if path.is_file():
        return load_tensors(path)["features"]
    features, _ = extractor.features(train_images, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch_save_atomic(path, {"features": features, "n": train_images.shape[0]})
    return features


def standard_metrics(pool: Tensor, logits: Tensor, reference: Tensor) -> dict:
    """``fid``, ``inception_score`` (mean, std over 10 splits) and ``kid_inception`` (mean, std) of samples'
    features against the reference's, by torch-fidelity's own functions with its default settings."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    fid = fid_statistics_to_metric(
        fid_features_to_statistics(pool), fid_features_to_statistics(reference), False
    )["frechet_inception_distance"]
    isc = isc_features_to_metric(logits, splits=ISC_SPLITS, shuffle=True, rng_seed=RNG_SEED)
    subset = min(KID_SUBSET_SIZE, pool.shape[0], reference.shape[0])
    kid = kid_features_to_metric(
        pool, reference, kid_subsets=KID_SUBSETS, kid_subset_size=subset, rng_seed=RNG_SEED, verbose=False
    )
    return {
        "fid": float(fid),
        "inception_score": {"mean": isc["inception_score_mean"], "std": isc["inception_score_std"]},
        "kid_inception": {
            "mean": kid["kernel_inception_distance_mean"],
            "std": kid["kernel_inception_distance_std"],
        },
        "fid_settings": {
            "n_samples": pool.shape[0],
            "n_reference": reference.shape[0],
            "kid_subset_size": subset,
        },
    }
