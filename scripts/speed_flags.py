"""What each speed option of `bench run` buys: one training step of the shared trainer (forward, backward,
clipping, AdamW, EMA) and one sampler step, for a denoiser under memory layout, the fused GroupNorm+SiLU
kernel, the AdamW implementation, torch.compile and autocast precision, timed round-robin in one process so
machine load hits all alike.

    python scripts/speed_flags.py                          # unet small, 1x28x28, batch 64
    python scripts/speed_flags.py --denoiser transformer --size 14
    python scripts/speed_flags.py --no-compile     # skip the torch.compile variants (minutes of compiling)
    python scripts/speed_flags.py --profile        # where a `bench run` training step spends its time
    python scripts/speed_flags.py --profile --no-fused-norm   # the same with PyTorch's GroupNorm

The first row is the plain eager NCHW fp32 step with PyTorch's GroupNorm and multi-tensor AdamW; the ratios
are against it. torch.compile's one-off compilation time is reported separately (it is paid once per run,
before the first step).
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass, field

import torch

import denoisers
import schedules
from bench.config import TrainConfig
from bench.environment import configure_allocator
from bench.evaluation.throughput import (
    forward_flops_per_image,
    measure_matmul_peak,
    timed,
    training_flops_per_image,
)
from bench.process.denoiser import Denoiser
from bench.process.diffusion import Diffusion
from bench.process.sampling import sample
from bench.training.trainer import AUTOCAST_DTYPES, Trainer
from denoisers.kernels.group_norm import use_fused_kernels


@dataclass
class Variant:
    name: str
    channels_last: bool
    compile: bool
    precision: str
    fused_norm: bool = True
    fused_adamw: bool = True
    train_s: list[float] = field(default_factory=list)
    sample_s: list[float] = field(default_factory=list)
    warmup_s: float = 0.0


# The fused GroupNorm kernel applies to channels-last fp32 eager steps only; elsewhere its flag is moot.
VARIANTS = [
    Variant("eager NCHW, foreach AdamW", False, False, "fp32", fused_norm=False, fused_adamw=False),
    Variant("eager NCHW", False, False, "fp32"),
    Variant("eager channels-last", True, False, "fp32", fused_norm=False),
    Variant("eager channels-last + fused norm (default)", True, False, "fp32"),
    Variant("compile NCHW", False, True, "fp32"),
    Variant("compile channels-last", True, True, "fp32"),
    Variant("eager channels-last bf16 autocast", True, False, "bf16"),
]
DEFAULT = VARIANTS[3]


def build(v: Variant, args: argparse.Namespace, device: torch.device):
    torch.manual_seed(0)
    shape = (args.channels, args.size, args.size)
    net = denoisers.get(args.denoiser)(shape, preset=args.preset)
    if v.channels_last:
        net = net.to(memory_format=torch.channels_last)
    use_fused_kernels(net, v.fused_norm)
    diffusion = Diffusion(schedules.get("linear")(1000))
    images = torch.rand(args.batch * 4, *shape) * 2 - 1
    config = TrainConfig(batch_size=args.batch, compile=v.compile, precision=v.precision)
    trainer = Trainer(net, diffusion, images, config, net.recipe, device=device, seed=0)
    if not v.fused_adamw:
        trainer.optimizer = torch.optim.AdamW(trainer.model.parameters(), lr=config.lr, foreach=True)
    x0 = trainer.images[: args.batch]
    sampler_net = torch.compile(trainer.model) if v.compile else trainer.model
    autocast_dtype = AUTOCAST_DTYPES.get(v.precision)

    def train_step() -> None:
        trainer.train_step(x0)

    def sampler_step() -> None:
        sampler_net.eval()
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            sample(
                Denoiser.of(sampler_net, diffusion, trainer.recipe),
                (args.batch, *shape),
                method="ddim",
                steps=1,
                device=device,
            )
        sampler_net.train()

    return train_step, sampler_step



def profile(v: Variant, args: argparse.Namespace, device: torch.device, steps: int = 5) -> None:
    """Self time per operator over ``steps`` training steps and ``steps`` sampler steps, and what the
    convolutions achieve: their share of the step, their FLOP/s against the measured matmul peak, and the
    fraction of the peak the step would reach if every other layer were free."""
    from torch.profiler import profile as torch_profile

    train_step, sampler_step = build(v, args, device)
    shape = (args.channels, args.size, args.size)
    net = denoisers.get(args.denoiser)(shape, preset=args.preset)
    flops = {
        "training": training_flops_per_image(net, shape, device) * args.batch,
        "sampler": forward_flops_per_image(net, shape, device) * args.batch,
    }
    peak = measure_matmul_peak(device)  # measured now, not a cached figure from a faster or slower day
    print(f"{v.name}, {args.denoiser} {args.preset}, batch {args.batch}; peak {peak / 1e9:.0f} GFLOP/s;")
    print("training FLOPs are counted forward+backward by torch.utils.flop_counter")
    for name, step in (("training", train_step), ("sampler", sampler_step)):
        for _ in range(3):
            step()
        with torch_profile() as prof:
            for _ in range(steps):
                step()
        events = prof.key_averages()
        print(f"\n{name} step, {steps} steps")
        print(events.table(sort_by="self_cpu_time_total", row_limit=10))
        total = sum(e.self_cpu_time_total for e in events) / steps / 1e6
        conv = sum(e.self_cpu_time_total for e in events if "convolution" in e.key) / steps / 1e6
        print(
            f"{name} step {1e3 * total:.0f} ms: convolutions {1e3 * conv:.0f} ms ({conv / total:.0%}) at "
            f"{flops[name] / conv / 1e9:.0f} GFLOP/s ({flops[name] / conv / peak:.0%} of peak); the step "
            f"{flops[name] / total / 1e9:.0f} GFLOP/s ({flops[name] / total / peak:.0%}), "
            f"{flops[name] / conv / peak:.0%} if everything else were free"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--denoiser", default="unet")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead of timing, profile a `bench run` training step and sampler step (operators, "
        "convolution FLOP/s)",
    )
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile variants")
    parser.add_argument(
        "--no-fused-norm", action="store_true", help="with --profile: PyTorch's GroupNorm and SiLU instead"
    )
    parser.add_argument(
        "--no-tune-malloc",
        dest="tune_malloc",
        action="store_false",
        help="leave glibc's mmap threshold alone (bench run --no-tune-malloc); a process-wide setting, so "
        "compare two runs of the script",
    )
    args = parser.parse_args()
    device = torch.device("cpu")
    configure_allocator(device, args.tune_malloc)  # as `bench run` does, for every variant alike
    if args.profile:
        profile(VARIANTS[2] if args.no_fused_norm else DEFAULT, args, device)
        return
    variants = [v for v in VARIANTS if not (args.no_compile and v.compile)]
    steps = {}
    for v in variants:
        train_step, sampler_step = build(v, args, device)
        # compilation happens in these first calls
        v.warmup_s = timed(lambda t=train_step, s=sampler_step: (t(), t(), s(), s()))
        steps[v.name] = (train_step, sampler_step)
    for _ in range(args.rounds):
        for v in variants:
            train_step, sampler_step = steps[v.name]
            v.train_s.append(timed(train_step))
            v.sample_s.append(timed(sampler_step))
    print(
        f"{args.denoiser} {args.preset}, {args.channels}x{args.size}x{args.size}, batch {args.batch}, "
        f"{torch.get_num_threads()} threads, {args.rounds} rounds (medians), "
        f"malloc thresholds {'raised' if args.tune_malloc else 'left alone'}"
    )
    print(
        f"{'variant':44s} {'train img/s':>11s} {'ratio':>6s} {'sample img/s':>12s} {'ratio':>6s} "
        f"{'warm-up s':>9s}"
    )
    base_train = args.batch / statistics.median(variants[0].train_s)
    base_sample = args.batch / statistics.median(variants[0].sample_s)
    for v in variants:
        train = args.batch / statistics.median(v.train_s)
        samp = args.batch / statistics.median(v.sample_s)
        print(
            f"{v.name:44s} {train:11.1f} {train / base_train:6.2f} {samp:12.1f} {samp / base_sample:6.2f} "
            f"{v.warmup_s:9.1f}"
        )


if __name__ == "__main__":
    main()
