"""Inception-V3 pool3 features (2048-d), used only when weights are already on this machine.

Standard FID (Heusel et al. 2017) is defined with the TensorFlow Inception graph, which pytorch-fid and
clean-fid reproduce with the ``pt_inception-2015-12-05`` weights *and* a patched network (different
pooling in some blocks, a TF-style resize). This module runs torchvision's ``inception_v3``; with
torchvision's ImageNet weights (``inception_v3_google-0cc3c7bd.pth``) the Fréchet distance it gives is
FID-like but not comparable to published FID numbers, so it is reported as ``fid_inception_torchvision``
and the feature space's name carries the weight file's hash. The TF-port weights use torchvision's
parameter names (with 1008 classes and no auxiliary head, both of which the loader reads from the file),
but in this unpatched network they still do not give the standard FID.

Nothing is downloaded and nothing falls back: without weights, :class:`InceptionUnavailable` says where
they were looked for and how to provide them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from torch import Tensor, nn

from ..io import UnreadableTensorFile, load_tensors
from .distances import frechet_distance

WEIGHTS_ENV = "BENCH_INCEPTION_WEIGHTS"
"""Environment variable naming an Inception-V3 state-dict file, the same as ``--inception-weights``."""

HUB_PATTERN = "inception_v3_google-*.pth"
"""torchvision's file name for its Inception-V3 weights inside ``torch.hub.get_dir()/checkpoints``."""

TORCHVISION_URL = "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"

INPUT_SIZE = 299


class InceptionUnavailable(RuntimeError):
    """No usable Inception-V3 weights; the message says where they were looked for and how to add them."""


def _hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_inception_weights(path: str | Path | None = None) -> Path | None:
    """The weight file to use: ``path``, else ``$BENCH_INCEPTION_WEIGHTS``, else torch hub's cache, else None.

    A path that is named (argument or variable) but missing is an error, not a reason to look elsewhere.
    """
    named = path if path is not None else os.environ.get(WEIGHTS_ENV) or None
    if named is not None:
        named = Path(named).expanduser()
        if not named.is_file():
            source = "--inception-weights" if path is not None else f"${WEIGHTS_ENV}"
            raise InceptionUnavailable(f"Inception-V3 weights given by {source} not found: {named}")
        return named
    found = sorted(_hub_checkpoints().glob(HUB_PATTERN))
    return found[0] if found else None


def unavailable_message() -> str:
    """Where weights were looked for and the ways to provide them, for errors and ``bench`` output."""
    return (
        "Inception-V3 weights not found, so fid_inception_torchvision is not computed. Looked for: "
        f"--inception-weights PATH (not given), ${WEIGHTS_ENV} (not set), and "
        f"{_hub_checkpoints() / HUB_PATTERN} (no match). To enable it, download {TORCHVISION_URL} on a "
        "machine with internet and pass its path with --inception-weights (or set the variable, or copy "
        "it into that folder). The classifier-feature metrics do not need it."
    )


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class InceptionFeatures:
    """torchvision Inception-V3 up to pool3: images in [-1, 1] -> [N, 2048] features.

    Images are bilinearly resized to 299x299 and grey images repeated to 3 channels. The network is built
    with ``transform_input=False`` and fed [-1, 1] directly, the range Google's weights were trained on
    (torchvision's ``transform_input=True`` exists to map ImageNet-normalised input back to it).
    """

    def __init__(self, net: nn.Module, name: str, device: torch.device | str = "cpu", batch_size: int = 50):
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.name = name
        self.batch_size = batch_size

    @classmethod
    def from_weights(cls, path: str | Path, device: torch.device | str = "cpu") -> InceptionFeatures:
        """Build from a torchvision-layout state dict; the name is ``inception-v3-torchvision-<sha8>``."""
        from torchvision.models import inception_v3

        path = Path(path).expanduser()
        try:
            state = load_tensors(path)
        except (UnreadableTensorFile, OSError) as exc:
            raise InceptionUnavailable(f"cannot read Inception-V3 weights: {exc}") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or "fc.weight" not in state:
            raise InceptionUnavailable(f"{path} is not an Inception-V3 state dict (it has no fc.weight)")
        net = inception_v3(
            weights=None,
            aux_logits=any(k.startswith("AuxLogits.") for k in state),
            init_weights=False,
            transform_input=False,
            num_classes=int(state["fc.weight"].shape[0]),
        )
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise InceptionUnavailable(f"{path} does not fit torchvision's inception_v3: {exc}") from exc
        net.fc = nn.Identity()  # the forward pass then ends at pool3 (dropout is off in eval mode)
        return cls(net, f"inception-v3-torchvision-{_file_sha256(path)[:8]}", device=device)

    @torch.inference_mode()
    def features(self, images: Tensor) -> Tensor:
        """pool3 features [N, 2048] (float32, CPU) of [N, C, H, W] images in [-1, 1], C in {1, 3}."""
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected [N, 1 or 3, H, W] images, got {tuple(images.shape)}")
        outputs = []
        for batch in images.split(self.batch_size):
            x = batch.to(self.device, torch.float32).expand(-1, 3, -1, -1)  # (n, 3, H, W)
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
            outputs.append(self.net(x).float().cpu())  # (n, 2048)
        return torch.cat(outputs)

    def __repr__(self) -> str:
        return f"InceptionFeatures({self.name})"


def load_inception(path: str | Path | None = None, device: torch.device | str = "cpu") -> InceptionFeatures:
    """:class:`InceptionFeatures` from :func:`find_inception_weights`, or :class:`InceptionUnavailable`."""
    found = find_inception_weights(path)
    if found is None:
        raise InceptionUnavailable(unavailable_message())
    return InceptionFeatures.from_weights(found, device=device)


def fid_inception_torchvision(
    samples: Tensor,
    reference: Tensor,
    inception: InceptionFeatures,
    reference_features: ArrayLike | None = None,
) -> float:
    """Fréchet distance in torchvision Inception-V3 pool3 features: FID-like, not the standard FID."""
    ref = inception.features(reference) if reference_features is None else reference_features
    return frechet_distance(inception.features(samples), ref)
