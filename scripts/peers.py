"""Time our `unet` against lucidrains' denoising-diffusion-pytorch Unet and diffusers' UNet2DModel, side by
side in one process on the same machine: one training step and one sampling step (a forward pass under
inference mode) each, with forward FLOPs per image counted by torch.utils.flop_counter.

    pip install -e ".[peers]"
    python scripts/peers.py                    # 1x32x32, batch 64, fp32, eager, 2 threads
    python scripts/peers.py --peers-channels-last   # the peers in NHWC too

Ours runs as `bench run` runs it, with channels-last weights (--no-channels-last for NCHW) and the fused
GroupNorm+SiLU kernel (--no-fused-norm for PyTorch's GroupNorm); the peers run as their documentation shows
them (NCHW) unless --peers-channels-last. The process-wide settings `bench run` makes on CPU (glibc's mmap
threshold, see bench.environment.configure_allocator) and our trainer's AdamW implementation apply to every
model alike.

Our U-Net is configured to within 10% of each peer's forward FLOPs per image (the script checks it). All
models are timed round-robin, round after round, so a change in machine load hits each of them alike; the
figures are medians over the rounds.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import denoisers
from bench.cli.options import parse_option
from bench.environment import configure_allocator
from bench.evaluation.throughput import measure_matmul_peak, timed
from bench.training.trainer import fused_or_foreach
from denoisers.kernels.group_norm import use_fused_kernels


@dataclass
class Contender:
    name: str
    model: nn.Module
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    flops: float = 0.0
    train_s: list[float] | None = None
    sample_s: list[float] | None = None


def lucidrains(channels: int) -> Contender:
    from denoising_diffusion_pytorch import Unet

    model = Unet(dim=32, dim_mults=(1, 2, 2), channels=channels)
    return Contender("lucidrains Unet(dim=32, dim_mults=(1,2,2))", model, model)


def diffusers(channels: int, size: int) -> Contender:
    from diffusers import UNet2DModel

    model = UNet2DModel(
        sample_size=size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    )
    return Contender("diffusers UNet2DModel(32,64,64)", model, lambda x, t: model(x, t).sample)


def ours(channels: int, size: int, options: dict, fused_norm: bool) -> Contender:
    model = denoisers.get("unet")((channels, size, size), **options)
    use_fused_kernels(model, fused_norm)
    text = ", ".join(f"{k}={v}" for k, v in options.items())
    return Contender(f"ddpm-bench unet({text}){'' if fused_norm else ' torch GN'}", model, model)


def count_flops(c: Contender, shape: tuple[int, ...]) -> float:
    x, t = torch.randn(2, *shape), torch.tensor([1, 500])
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        c.forward(x, t)
    return counter.get_total_flops() / 2


def our_options(given: list[str] | None) -> dict:
    options = {
        "base_channels": 32,
        "channel_mult": (1, 2, 2),
        "num_res_blocks": 2,
        "attention_resolutions": (),
    }
    options.update(dict(parse_option(o) for o in given or []))
    return options



def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "-o",
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="an option of our unet (repeatable); default base_channels=32, channel_mult=(1,2,2), "
        "num_res_blocks=2, attention_resolutions=()",
    )
    parser.add_argument(
        "--no-channels-last",
        dest="channels_last",
        action="store_false",
        help="time our unet in NCHW instead of the channels-last layout `bench run` uses",
    )
    parser.add_argument(
        "--no-fused-norm",
        dest="fused_norm",
        action="store_false",
        help="time our unet with PyTorch's GroupNorm and SiLU instead of the fused kernel",
    )
    parser.add_argument(
        "--peers-channels-last", action="store_true", help="convert the peers to channels-last too"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    configure_allocator(torch.device("cpu"), enabled=True)
    torch.manual_seed(0)
    shape = (args.channels, args.size, args.size)
    contenders = [
        ours(args.channels, args.size, our_options(args.option), args.fused_norm),
        lucidrains(args.channels),
        diffusers(args.channels, args.size),
    ]
    for c, nhwc in zip(contenders, [args.channels_last] + [args.peers_channels_last] * 2, strict=True):
        if nhwc:
            c.model.to(memory_format=torch.channels_last)
            c.name += " NHWC"
    for c in contenders:
        c.flops = count_flops(c, shape)
        c.train_s, c.sample_s = [], []
    x = torch.randn(args.batch, *shape)
    target = torch.randn(args.batch, *shape)
    t = torch.randint(0, 1000, (args.batch,))
    # Every model gets the AdamW implementation our trainer uses: the comparison is of the networks.
    adamw = fused_or_foreach(torch.device("cpu"))
    optimizers = {c.name: torch.optim.AdamW(c.model.parameters(), lr=1e-4, **adamw) for c in contenders}

    def train_step(c: Contender) -> None:
        loss = nn.functional.mse_loss(c.forward(x, t), target)
        optimizers[c.name].zero_grad(set_to_none=True)
        loss.backward()
        optimizers[c.name].step()

    def sample_step(c: Contender) -> None:
        with torch.inference_mode():
            c.forward(x, t)

    for c in contenders:  # warm-up: allocation, oneDNN primitive creation
        c.model.train()
        train_step(c)
        train_step(c)
        c.model.eval()
        sample_step(c)
    for _ in range(args.rounds):
        for c in contenders:
            c.model.train()
            c.train_s.append(timed(lambda c=c: train_step(c)))
            c.model.eval()
            c.sample_s.append(timed(lambda c=c: sample_step(c)))
    peak = measure_matmul_peak(torch.device("cpu"))
    report(contenders, args, peak)


def report(contenders: list[Contender], args: argparse.Namespace, peak: float) -> None:
    print(
        f"{args.channels}x{args.size}x{args.size}, batch {args.batch}, fp32, eager, {args.threads} threads, "
        f"{args.rounds} rounds (medians); fp32 matmul peak {peak / 1e9:.0f} GFLOP/s"
    )
    print(
        f"{'model':58s} {'GFLOP/img':>9s} {'train img/s':>11s} {'%peak':>6s} "
        f"{'sample img/s':>12s} {'%peak':>6s}"
    )
    rows = {}
    for c in contenders:
        train = args.batch / statistics.median(c.train_s)
        samp = args.batch / statistics.median(c.sample_s)
        rows[c.name] = (train, samp)
        print(
            f"{c.name:58s} {c.flops / 1e9:9.3f} {train:11.1f} {100 * train * 3 * c.flops / peak:5.0f}% "
            f"{samp:12.1f} {100 * samp * c.flops / peak:5.0f}%"
        )
    mine = contenders[0]
    for peer in contenders[1:]:
        flop_gap = mine.flops / peer.flops - 1
        print(
            f"ours vs {peer.name}: FLOPs {flop_gap:+.1%} "
            f"({'within' if abs(flop_gap) <= 0.10 else 'NOT within'} 10%), "
            f"training x{rows[mine.name][0] / rows[peer.name][0]:.2f}, "
            f"sampling x{rows[mine.name][1] / rows[peer.name][1]:.2f}"
        )


if __name__ == "__main__":
    main()
