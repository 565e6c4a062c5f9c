"""Samples for standard FID at any count (FID-50k included): drawn in chunks, each chunk written with its
Inception features as soon as it is done, so an interrupted evaluation continues where it stopped and the
same command run twice does the work once.

A chunk's noise comes from a generator seeded by the evaluation seed and the chunk's index, so chunks are
the same whichever evaluation made them, and a larger ``--n`` reuses the chunks a smaller one left. Samples
are kept as uint8 (50,000 3x32x32 images are 150 MB) and never all held as float tensors; only the features
(float32, 2048 + 1008 per image) are gathered for the metrics.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import SampleConfig
from ..images import to_uint8
from ..io import load_tensors, torch_save_atomic
from ..metrics.fidelity import StandardInception
from .experiment import Experiment, generate, sample_labels

CHUNK = 1000


@dataclass(frozen=True)
class FidSamples:
    images: torch.Tensor  # uint8 [N, C, H, W]
    pool: torch.Tensor  # float32 [N, 2048]
    logits: torch.Tensor  # float32 [N, 1008]
    seconds: float  # sampling time of the chunks made in this call (0 when all were cached)
    made: int  # images sampled in this call


def same_labels(saved: torch.Tensor | None, wanted: torch.Tensor | None) -> bool:
    """Whether a chunk on disk was drawn for the classes wanted (a conditional chunk made before its labels
    were kept is made again, since it may have been drawn for other classes)."""
    if wanted is None:
        return saved is None
    return saved is not None and torch.equal(saved, wanted)


def chunk_folder(
    root: Path, cfg: SampleConfig, seed: int, use_ema: bool, weights_hash: str, train_step: int
) -> Path:
    """Where one sampler setting's chunks of the model at ``train_step`` live (``n`` is not part of the name:
    counts share chunks; the step is, so a run trained further never reuses its earlier samples)."""
    weights = "ema" if use_ema else "raw"
    return root / f"fid-step{train_step}-{cfg.label()}-seed{seed}-{weights}-{weights_hash}"


def chunked_samples(
    exp: Experiment,
    model: nn.Module,
    cfg: SampleConfig,
    n: int,
    *,
    seed: int,
    folder: Path,
    extractor: StandardInception,
    chunk: int = CHUNK,
    progress: bool = True,
) -> FidSamples:
    """The first ``n`` samples of the setting ``cfg`` with their features, making the chunks not on disk."""
    folder.mkdir(parents=True, exist_ok=True)
    images, pools, logits, seconds, made = [], [], [], 0.0, 0
    chunk = min(chunk, n)  # a small evaluation makes no more than it needs (its chunks are named apart)
    chunks = math.ceil(n / chunk)
    for c in tqdm(range(chunks), desc="fid samples", unit="chunk", disable=not progress):
        path = folder / f"chunk-{chunk}-{c:05d}.pt"
        labels = sample_labels(exp, cfg, chunk, first=c * chunk)
        saved = load_tensors(path) if path.is_file() else None
        if saved is None or not same_labels(saved.get("labels"), labels):
            start = time.perf_counter()
            batch = replace(cfg, batch_size=min(cfg.batch_size, chunk))
            x, _ = generate(
                exp, model, batch, chunk, seed=seed * 1_000_003 + c, progress=False, first=c * chunk
            )
            seconds += time.perf_counter() - start
            made += chunk
            pool, logit = extractor.features(x)
            saved = {"images": to_uint8(x), "pool": pool, "logits": logit}
            if labels is not None:
                saved["labels"] = labels
            torch_save_atomic(path, saved)
        images.append(saved["images"])
        pools.append(saved["pool"])
        logits.append(saved["logits"])
    return FidSamples(torch.cat(images)[:n], torch.cat(pools)[:n], torch.cat(logits)[:n], seconds, made)
