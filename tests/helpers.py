"""What tests share: small models and data for the shared machinery, and the CLI run helpers."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch
from click.testing import CliRunner
from torch import nn

import schedules
from bench.cli import main
from bench.config import TrainConfig
from bench.process.diffusion import Diffusion
from bench.training.trainer import Trainer
from denoisers import Recipe


class TinyDenoiser(nn.Module):
    """Two convolutions with the timestep added as a channel; dropout so RNG state matters on resume."""

    def __init__(self, channels: int = 1, recipe: Recipe | None = None) -> None:
        super().__init__()
        self.recipe = recipe or Recipe()
        self.net = nn.Sequential(
            nn.Conv2d(channels + 1, 16, 3, padding=1),
            nn.SiLU(),
            nn.Dropout(0.1),
            nn.Conv2d(16, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tmap = (t.float() / 1000).view(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:])
        return self.net(torch.cat([x, tmap], dim=1))


def toy_images(n: int = 96, size: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, size, size, generator=g) * 2 - 1


def tiny_factory(
    image_shape, *, target: str = "eps", terminal: bool = False, sigma_data: float = 0.5
) -> TinyDenoiser:
    """A tiny conv denoiser for tests of the run machinery."""
    recipe = Recipe(
        prediction=target,
        timesteps="terminal" if terminal else "all",
        sampler="one_shot" if terminal else "ancestral",
        sigma_data=sigma_data,
    )
    return TinyDenoiser(image_shape[0], recipe)


# A `bench run` that takes seconds: the tiny denoiser on the 8x8 digits, a few steps, no evaluation.
FAST = [
    "--denoiser",
    "tiny-test",
    "--dataset",
    "digits",
    "--steps",
    "10",
    "--batch-size",
    "16",
    "--checkpoint-every",
    "5",
    "--n-samples",
    "8",
    "--sample-steps",
    "5",
    "--timesteps",
    "50",
    "--no-eval",
    "--device",
    "cpu",
]


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def run_ok(tmp_path, *extra: str, run_id: str = "r1"):
    result = invoke("run", *FAST, *extra, "--out", str(tmp_path), "--run-id", run_id, "--quiet")
    assert result.exit_code == 0, result.output
    return tmp_path / run_id


def as_uint8(images: torch.Tensor) -> np.ndarray:
    """Back from [-1, 1] to the stored bytes; exact because every uint8 maps to a distinct float."""
    return np.rint((images.numpy() + 1.0) * 127.5).astype(np.uint8)


# A real plugin (job processes do not have the tests' tiny one): a U-Net of 8 channels on the 8x8 digits.
TINY_UNET = [
    "--denoiser", "unet", "-o", "base_channels=8", "-o", "channel_mult=(1,)", "-o", "num_res_blocks=1",
    "--dataset", "digits", "--steps", "6", "--batch-size", "16", "--checkpoint-every", "3",
    "--timesteps", "50", "--n-samples", "8", "--sample-steps", "5", "--no-eval", "--device", "cpu",
]  # fmt: skip


# A process that claims a run folder, says "claimed" or "left", and with "hold" keeps its claim until its
# stdin closes, then releases it: a second holder in the same SLURM job, or anywhere.
CLAIM_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from bench.runs.claims import ClaimedElsewhere, Holder, claim, read_claim, release
    folder, hold = Path(sys.argv[1]), sys.argv[2] == "hold"
    me = Holder.here()
    try:
        claim(folder, me)
    except ClaimedElsewhere:
        print("left", flush=True)
        sys.exit(0)
    print("claimed", flush=True)
    if hold:  # until the test closes our stdin
        sys.stdin.read()
    release(folder, me)
    """
)


ROOT = Path(__file__).resolve().parent.parent
# For subprocesses (torchrun), where the conftest-registered plugin does not exist: a small real U-Net.
SMALL = [
    "--denoiser",
    "unet",
    "-o",
    "base_channels=8",
    "-o",
    "channel_mult=(1,2)",
    "-o",
    "num_res_blocks=1",
    "-o",
    "attention_resolutions=()",
    "--dataset",
    "digits",
    "--timesteps",
    "50",
    "--batch-size",
    "8",
    "--sample-steps",
    "3",
    "--n-samples",
    "4",
    "--no-eval",
    "--device",
    "cpu",
    "--quiet",
]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def make_trainer(steps: int, seed: int = 0, **cfg) -> Trainer:
    torch.manual_seed(seed)
    config = TrainConfig(steps=steps, batch_size=16, log_every=5, checkpoint_every=5, warmup_steps=3, **cfg)
    model = TinyDenoiser()
    return Trainer(
        model,
        Diffusion(schedules.get("linear")(100)),
        toy_images(),
        config,
        model.recipe,
        device=torch.device("cpu"),
        seed=seed,
    )


_STEPS = TINY_UNET.index("--sample-steps")
TINY_RUN = [*TINY_UNET[:_STEPS], *TINY_UNET[_STEPS + 2 :], "--no-tensorboard"]
"""TINY_UNET without TensorBoard's event files and without ``--sample-steps``, so that each design samples as
it chooses (a consistency model in one call, a progressive student on its own grid): 6 steps of 16 images of
the 8-channel U-Net, 8x8 digits."""


def tiny_run(out: Path, run_id: str, *args: str):
    """``bench run`` of TINY_RUN and ``args`` into ``out/run_id``; the click result."""
    return invoke("run", *TINY_RUN, *args, "--out", str(out), "--run-id", run_id, "--quiet")


def tiny_run_ok(out: Path, run_id: str, *args: str) -> Path:
    result = tiny_run(out, run_id, *args)
    assert result.exit_code == 0, result.output
    return out / run_id


def run_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def refused_run(tmp_path: Path, *args: str) -> str:
    """A tiny run with ``args``, expected to be a usage error with nothing written; the message, on one
    line."""
    out = tmp_path / "out"
    result = tiny_run(out, "refused", *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())
    return " ".join(result.output.split())


def stop_after(monkeypatch, step: int) -> None:
    """Ask the trainer to stop after training step ``step``, as Ctrl-C does (the loop finishes the step,
    writes a checkpoint and the run exits 130)."""
    real = Trainer.train_step

    def train_step(self, *args, **kwargs):
        loss = real(self, *args, **kwargs)
        if self.step == step:
            self._stop_requested = True
        return loss

    monkeypatch.setattr(Trainer, "train_step", train_step)


def stop_at_two_and_resume(tmp_path: Path, monkeypatch, *args: str) -> Path:
    """A tiny run of ``args`` into ``tmp_path/cut`` stopped after step 2 (not a checkpoint step: every 3), as
    Ctrl-C stops it, then resumed to its end; the run folder."""
    stop_after(monkeypatch, 2)
    cut = tiny_run(tmp_path, "cut", *args)
    assert cut.exit_code == 130 and "stopped at step 2" in cut.output, cut.output
    monkeypatch.undo()
    resumed = invoke("run", "--resume", str(tmp_path / "cut"), "--quiet")
    assert resumed.exit_code == 0, resumed.output
    return tmp_path / "cut"


YOUR_OWN = ROOT / "docs" / "your-own.md"
"""The newcomer page whose plugin package and commands tests/test_your_own.py runs."""


def doc_blocks(page: Path, fence: str) -> list[str]:
    """The text of each ``fence`` code block of ``page`` (``python``, ``toml``, ``bash``)."""
    blocks, current = [], None
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            if current is None and line[3:].strip() == fence:
                current = []
            elif current is not None:
                blocks.append("\n".join(current) + "\n")
                current = None
        elif current is not None:
            current.append(line)
    return blocks


@contextlib.contextmanager
def your_own_plugins(folder: Path, monkeypatch):
    """docs/your-own.md's plugin module and entry points, installed as a distribution in ``folder`` (as
    ``pip install -e .`` of that package would leave it), for as long as the context lasts; the registries
    forget its plugins afterwards."""
    import denoisers
    import schedules
    from bench import datasets
    from bench.process.sampling import SAMPLERS
    from bench.training.objectives import OBJECTIVES

    (module,) = [b for b in doc_blocks(YOUR_OWN, "python") if b.startswith("# my_plugins.py")]
    (folder / "my_plugins.py").write_text(module)
    (toml,) = doc_blocks(YOUR_OWN, "toml")
    entry_points = re.sub(r'^\[project\.entry-points\."([^"]+)"\]$', r"[\1]", toml, flags=re.M)
    entry_points = re.sub(r'^(\S+) = "([^"]+)"$', r"\1 = \2", entry_points, flags=re.M)
    info = folder / "my_plugins-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugins\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    monkeypatch.syspath_prepend(str(folder))
    registries = [schedules.REGISTRY, datasets.DATASETS, denoisers.REGISTRY, SAMPLERS, OBJECTIVES]
    names = ["constant", "blobs", "three-convs", "plain-ddim", "middle-l1"]
    for registry in registries:
        registry.reload_entry_points()
    try:
        yield names
    finally:
        for registry, name in zip(registries, names, strict=True):
            registry._plugins.pop(name, None)
            registry.reload_entry_points()
        sys.modules.pop("my_plugins", None)
