"""The objects a RunConfig resolves to (data, diffusion, network, recipe, device), rebuilt the same way for
a new run and for a finished one, and drawing samples from them in batches."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

import denoisers
import schedules
from denoisers.kernels.group_norm import use_fused_kernels

from .. import datasets
from ..config import AUTO_SAMPLER, RunConfig, SampleConfig
from ..environment import configure_allocator, configure_tf32, resolve_device
from ..process.denoiser import CONSISTENCY_FUNCTIONS, Denoiser
from ..process.diffusion import Diffusion
from ..process.flow_map import FLOW_MAP_SAMPLER
from ..process.sampling import check_start, check_steps, follows_the_ode, sample
from ..training.checkpoint import identity, load_checkpoint, norm_groups
from ..training.objectives import declaration
from .run_folder import RunFolder


@dataclass
class Experiment:
    """The objects a RunConfig resolves to."""

    config: RunConfig
    data: datasets.ImageData
    diffusion: Diffusion
    model: nn.Module
    recipe: denoisers.Recipe
    device: torch.device

    @property
    def num_classes(self) -> int | None:
        """The classes a conditional model is conditioned on; None for an unconditional one."""
        return self.data.num_classes if self.config.conditional else None

    @property
    def identity(self) -> dict:
        return identity(
            self.config.denoiser,
            self.config.denoiser_options,
            self.data.image_shape,
            self.diffusion.num_timesteps,
            self.num_classes,
            norm_groups(self.model),
        )


def build_experiment(config: RunConfig, *, download: bool = False) -> Experiment:
    """Resolve every name in ``config`` to an object; raises ValueError/FileNotFoundError on bad input."""
    device = resolve_device(config.device)
    data = datasets.load(
        config.dataset, root=config.data_root, download=download, image_size=config.image_size
    )
    betas = schedules.make(
        config.diffusion.schedule,
        config.diffusion.timesteps,
        zero_terminal_snr=config.diffusion.zero_terminal_snr,
    )
    labels = check_conditioning(config, data)
    torch.manual_seed(config.seed)  # the initial weights
    model = build_model(config, tuple(data.image_shape), labels)
    configure_tf32(device, config.tf32)
    configure_allocator(device, config.tune_malloc)
    return Experiment(config, data, Diffusion(betas), model, denoisers.recipe_of(model), device)


def build_model(config: RunConfig, image_shape: tuple[int, ...], labels: dict | None = None) -> nn.Module:
    """The run's network as it trains: the plugin's, in channels-last memory and with the fused norm kernels
    where the config asks (the FLOPs a run records are counted on it, and a budget planned from them must
    count the same network)."""
    model = denoisers.get(config.denoiser)(image_shape, **config.denoiser_options, **(labels or {}))
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    use_fused_kernels(model, config.fused_norm)
    return model


def check_conditioning(config: RunConfig, data: datasets.ImageData) -> dict:
    """What a conditional run needs of its data and denoiser (the factory's ``num_classes``), checked
    before anything is built; nothing for an unconditional run."""
    if not config.conditional:
        return {}
    if data.num_classes is None:
        raise ValueError(
            f"--conditional needs a labelled dataset, and {data.name!r} has no labels (an image folder is "
            "labelled when its images are in one subfolder per class)"
        )
    if not denoisers.accepts_labels(config.denoiser):
        takes = ", ".join(name for name in denoisers.names() if denoisers.accepts_labels(name))
        raise ValueError(
            f"denoiser {config.denoiser!r} does not take class labels (it did not register labels=True); "
            f"class-conditional denoisers: {takes}"
        )
    check_class(config.sample, data.num_classes)
    return {"num_classes": data.num_classes}


def check_class(sample_cfg: SampleConfig, num_classes: int) -> None:
    if sample_cfg.class_label is not None and not 0 <= sample_cfg.class_label < num_classes:
        raise ValueError(
            f"class {sample_cfg.class_label} is out of range: the dataset has {num_classes} classes, "
            f"0..{num_classes - 1}"
        )


def sample_labels(exp: Experiment, sample_cfg: SampleConfig, n: int, first: int = 0) -> torch.Tensor | None:
    """The class of samples ``first`` .. ``first + n - 1`` of a conditional run: all ``class_label``, or
    balanced (sample i of class i mod K, so every batch and every prefix holds the classes in equal numbers,
    and FD compares like with like); None for an unconditional run. The one definition of which class sample
    i is: whatever draws samples in pieces (FID chunks) and whatever scores them both ask here."""
    if exp.num_classes is None:
        return None
    if sample_cfg.class_label is not None:
        check_class(sample_cfg, exp.num_classes)
        return torch.full((n,), sample_cfg.class_label, dtype=torch.long)
    return torch.arange(first, first + n) % exp.num_classes


ONE_CALL_SAMPLERS = ("consistency", FLOW_MAP_SAMPLER)
"""The samplers of designs meant for one call (and a few): ``method="auto"`` samples them with one step."""


def auto_method(recipe: denoisers.Recipe) -> str:
    """The sampler ``method="auto"`` gives a design: its own for a design trained only on pure noise
    (one_shot), for a consistency model and for a flow map, DDIM (with ``steps`` steps) for every other."""
    if recipe.timesteps == "terminal" or recipe.sampler in ONE_CALL_SAMPLERS:
        return recipe.sampler
    return "ddim"


def resolve_sampler(
    sample_cfg: SampleConfig,
    recipe: denoisers.Recipe,
    diffusion: Diffusion,
    *,
    teacher_steps: int | None = None,
) -> SampleConfig:
    """Turn ``method="auto"`` into a concrete sampler: one shot for a denoiser trained only at t = T-1,
    consistency sampling for a consistency model (one call), DDIM with ``steps`` steps otherwise
    (deterministic for reflow, which learnt its teacher's deterministic coupling, and for a progressive
    student given its ``teacher_steps``, on its own grid). The design's choices replace only the settings
    the user did not give (``sample_cfg.given``); what was given stands, or is refused where the sampler
    cannot take it. Refuse iterative sampling of a model that never saw t < T-1, and a sampling that
    cannot start on this schedule (:func:`bench.process.sampling.check_start`)."""
    method, steps = sample_cfg.method, sample_cfg.steps
    if method == AUTO_SAMPLER:
        method = auto_method(recipe)
        chosen: dict = {}
        if method in ONE_CALL_SAMPLERS:  # a consistency model or a flow map is meant for one call ...
            chosen = {"steps": 1}
            at_pure_noise = diffusion.zero_terminal_snr and sample_cfg.grid_choice().is_default
            if method == "consistency" and at_pure_noise:
                chosen["grid"] = "karras"  # ... at the largest noise level it was trained at, not pure noise
        elif (halving := declaration(recipe.objective).student_steps) and teacher_steps is not None:
            # its own grid, every other point of its teacher's, with the deterministic DDIM it learnt
            chosen = {"steps": halving(teacher_steps), "eta": 0.0, "grid": "uniform"}
            chosen.update(sigma_max=None, sigma_min=None)
        elif recipe.reflows:
            # reflow learnt its teacher's deterministic coupling: its ODE, not fresh noise, keeps to it
            chosen = {"eta": 0.0}
        chosen = {name: value for name, value in chosen.items() if name not in sample_cfg.given}
        steps = chosen.pop("steps", steps)
        sample_cfg = replace(sample_cfg, **chosen)
    if recipe.timesteps == "terminal" and method != "one_shot":
        raise ValueError(
            f"this denoiser is trained only on pure noise (t = T-1), so it can only be sampled with "
            f"method 'one_shot', not {method!r}"
        )
    if recipe.prediction in CONSISTENCY_FUNCTIONS and follows_the_ode(method, sample_cfg.eta):
        raise ValueError(
            f"a consistency model's f(x_t) is where its ODE ends, not the denoiser E[x0 | x_t] whose slope "
            f"{method}{' with eta 0' if method == 'ddim' else ''} follows, so its numbers would not measure "
            "that solver; sample it with --method consistency (or ddim with eta 1, or ancestral, which "
            "re-noise its estimate as consistency sampling does)"
        )
    if method in ("one_shot", "ancestral"):
        takes = "one network call" if method == "one_shot" else "all T steps of the schedule"
        named = sample_cfg.method != AUTO_SAMPLER  # asked for by name, with a step count given beside it
        if named and "steps" in sample_cfg.given and steps != (1 if method == "one_shot" else None):
            raise ValueError(f"sampler {method!r} takes {takes}: a number of steps ({steps}) does not apply")
        steps = 1 if method == "one_shot" else None
    if steps is not None:
        check_steps(method, steps)
    check_start(diffusion, recipe.prediction, method, sample_cfg.grid_choice())
    return replace(sample_cfg, method=method, steps=steps)


def generate(
    exp: Experiment,
    model: nn.Module,
    sample_cfg: SampleConfig,
    n: int,
    *,
    seed: int,
    progress: bool,
    first: int = 0,
    x_T: torch.Tensor | None = None,
) -> tuple[torch.Tensor, float]:
    """``n`` samples in [-1, 1] (on CPU) in batches, and the seconds it took (device synchronised); a
    conditional run's samples are of the classes :func:`sample_labels` gives samples ``first`` onwards,
    guided as ``sample_cfg`` says. ``x_T``, when given, is the noise of each sample (else drawn from a
    generator seeded with ``seed``, which a stochastic sampler draws its fresh noise from either way)."""
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    denoiser = Denoiser.of(model, exp.diffusion, exp.recipe, clip_x0=sample_cfg.clip_x0)
    labels = sample_labels(exp, sample_cfg, n, first)
    if labels is not None:
        denoiser = replace(denoiser, guidance=sample_cfg.guidance())
    chunks, start = [], time.perf_counter()
    for i in range(0, n, sample_cfg.batch_size):
        b = min(sample_cfg.batch_size, n - i)
        if labels is not None:
            denoiser = replace(denoiser, labels=labels[i : i + b].to(exp.device))
        x = sample(
            denoiser,
            (b, *exp.data.image_shape),
            method=sample_cfg.method,
            steps=sample_cfg.steps,
            generator=gen,
            device=exp.device,
            progress=progress,
            x_T=x_T[i : i + b] if x_T is not None else None,
            **sample_cfg.settings(),
        )
        chunks.append(x.float().cpu())
    if exp.device.type == "cuda":
        torch.cuda.synchronize(exp.device)
    return torch.cat(chunks).clamp(-1, 1), time.perf_counter() - start


def load_run(run_dir: Path, *, device: str | None = None) -> tuple[Experiment, dict]:
    """Rebuild a run's experiment from its folder and load its checkpoint (checked against its config)."""
    config = RunFolder(run_dir).read_config()
    if device is not None:
        config = replace(config, device=device)
    exp = build_experiment(config)
    ckpt = load_checkpoint(RunFolder(run_dir).checkpoint, exp.identity)
    return exp, ckpt
