"""The DDPM U-Net: the paper's size, its layout, its initialisation and odd image sizes."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import denoisers
from denoisers.common import count_parameters, group_count
from denoisers.unet import AttnBlock, ResBlock
from tests.denoisers.helpers import inputs, perturb_zero_init

DDPM_CIFAR10_PARAMETERS = 35_746_307
"""Ho et al. 2020 report 35.7M; this is the count of their diffusion_tf model and of improved-diffusion's."""


def attention_sizes(net: torch.nn.Module, image_shape: tuple[int, int, int]) -> list[tuple[int, int]]:
    """The (H, W) each attention block runs at, found by a forward pass on the meta device (no compute)."""
    sizes: list[tuple[int, int]] = []
    for module in net.modules():
        if isinstance(module, AttnBlock):
            module.register_forward_hook(lambda m, args, out: sizes.append(tuple(args[0].shape[-2:])))
    net(torch.empty(1, *image_shape, device="meta"), torch.zeros(1, dtype=torch.long, device="meta"))
    return sizes


def forward_gflop(net: torch.nn.Module, image_shape: tuple[int, int, int]) -> float:
    with FlopCounterMode(display=False) as counter:
        net(torch.empty(2, *image_shape, device="meta"), torch.zeros(2, dtype=torch.long, device="meta"))
    return counter.get_total_flops() / 2 / 1e9


def test_ddpm_cifar10_has_the_papers_parameters_and_attention_at_16x16():
    with torch.device("meta"):
        net = denoisers.get("unet")((3, 32, 32), preset="ddpm-cifar10")
    assert count_parameters(net) == DDPM_CIFAR10_PARAMETERS
    # Two down and three up blocks at 16x16, and the middle block at 4x4.
    assert sorted(attention_sizes(net, (3, 32, 32))) == [(4, 4)] + [(16, 16)] * 5
    # About 6.1 GMAC, i.e. 12.2 GFLOP, of which attention is 0.3.
    assert 11.8 < forward_gflop(net, (3, 32, 32)) < 12.8
    assert all(m.dropout.p == 0.1 for m in net.modules() if isinstance(m, ResBlock))


def test_small_preset_is_cpu_sized():
    with torch.device("meta"):
        net = denoisers.get("unet")((1, 28, 28))
    assert 1_000_000 < count_parameters(net) < 2_000_000
    assert 0.3 < forward_gflop(net, (1, 28, 28)) < 0.6
    # The small preset's only attention is the middle block's, at the lowest resolution.
    assert attention_sizes(net, (1, 28, 28)) == [(7, 7)]


def test_attention_resolutions_are_the_image_sides_halved_rounding_up():
    with torch.device("meta"):
        net = denoisers.get("unet")((1, 28, 28), attention_resolutions=(14, 28))
        odd = denoisers.get("unet")((1, 7, 7), attention_resolutions=(4,))
    assert sorted(attention_sizes(net, (1, 28, 28))) == [(7, 7)] + [(14, 14)] * 3 + [(28, 28)] * 3
    assert sorted(attention_sizes(odd, (1, 7, 7))) == [(2, 2)] + [(4, 4)] * 3


@pytest.mark.parametrize("shape", [(1, 7, 7), (2, 12, 20), (3, 9, 16), (1, 1, 1)])
def test_sizes_that_are_not_powers_of_two(shape):
    net = perturb_zero_init(denoisers.get("unet")(shape))
    x, t = inputs(2, shape)
    out = net(x, t)
    assert out.shape == x.shape and out.isfinite().all()


def test_output_is_zero_at_initialisation_and_every_resblock_starts_as_identity():
    net = denoisers.get("unet")((1, 8, 8))
    x, t = inputs(2, (1, 8, 8))
    assert torch.equal(net(x, t), torch.zeros_like(x))
    block = next(m for m in net.modules() if isinstance(m, ResBlock) and m.conv1.in_channels == 32)
    h = torch.randn(2, block.conv1.in_channels, 4, 4)
    assert torch.equal(block(h, torch.randn(2, block.temb_proj.in_features)), h)


def test_dropout_is_active_in_training_mode_only():
    net = perturb_zero_init(denoisers.get("unet")((1, 8, 8), dropout=0.5))
    x, t = inputs(2, (1, 8, 8))
    assert not torch.equal(net.train()(x, t), net(x, t))
    assert torch.equal(net.eval()(x, t), net(x, t))


def test_channels_last_gives_the_same_output():
    net = perturb_zero_init(denoisers.get("unet")((3, 12, 12))).eval()
    x, t = inputs(2, (3, 12, 12))
    expected = net(x, t)
    net = net.to(memory_format=torch.channels_last)
    torch.testing.assert_close(net(x.contiguous(memory_format=torch.channels_last), t), expected)


def test_groupnorm_groups_are_32_or_the_largest_divisor_below_never_one_channel_each():
    assert [group_count(c) for c in (1, 2, 3, 20, 32, 48, 64, 96, 128)] == [1, 1, 1, 10, 16, 24, 32, 32, 32]
    net = denoisers.get("unet")((1, 8, 8), base_channels=24, channel_mult=(1, 2))
    norms = {(m.num_channels, m.num_groups) for m in net.modules() if isinstance(m, torch.nn.GroupNorm)}
    assert norms == {(24, 12), (48, 24), (72, 24), (96, 32)}


CONDITIONING_MARGIN = 0.02
"""How much, at the least, two timesteps (or two classes) must change a ResBlock's residual branch, relative
to its size: a block whose norm removes the embedding's offset changes it by about 1e-6 (float32 rounding),
one that sees the embedding by 0.1 or more at initialisation."""
PRESET_SHAPES = {"small": (1, 28, 28), "ddpm-cifar10": (3, 32, 32)}


def block_sensitivity(block: ResBlock, temb_a: torch.Tensor, temb_b: torch.Tensor) -> float:
    """||f(h, a) - f(h, b)|| / ||f(h, a) - skip(h)||: what the embedding changes in the block's residual
    branch, on one fixed random input h (4x4 pixels: every block is size-agnostic)."""
    h = torch.randn(2, block.conv1.in_channels, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out_a, out_b, skip = block(h, temb_a), block(h, temb_b), block.skip(h)
    return ((out_a - out_b).norm() / (out_a - skip).norm()).item()


def embeddings(net: torch.nn.Module, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """The embedding every ResBlock of ``net`` receives for timesteps ``t`` (and classes ``y``)."""
    from denoisers.common import add_class, timestep_embedding

    with torch.no_grad():
        temb = net.temb(timestep_embedding(t, net.base_channels))
        return add_class(temb, net.label_emb, y, "unet")


@pytest.mark.parametrize("scale_shift_norm", [False, True])
@pytest.mark.parametrize("preset", list(PRESET_SHAPES))
def test_every_resblock_sees_the_timestep_and_the_class(preset, scale_shift_norm):
    """For every ResBlock of every preset, two timesteps (10 and 900) and, for a conditional network, two
    classes (0 and 1) change the block's output by more than CONDITIONING_MARGIN of its residual branch.
    A GroupNorm with one channel per group after the additive embedding fails this (the `small` preset's
    32-channel level did: 1e-6)."""
    torch.manual_seed(0)
    net = denoisers.get("unet")(
        PRESET_SHAPES[preset], preset=preset, num_classes=10, scale_shift_norm=scale_shift_norm
    )
    perturb_zero_init(net, std=0.1)
    t = torch.tensor([10, 900])
    by_time = (embeddings(net, t[:1].repeat(2)), embeddings(net, t[1:].repeat(2)))
    label = torch.tensor([0, 0])
    by_class = (embeddings(net, t[:1].repeat(2), label), embeddings(net, t[:1].repeat(2), label + 1))
    blocks = [(name, m) for name, m in net.named_modules() if isinstance(m, ResBlock)]
    assert len(blocks) > 0
    deaf = {
        name: (round(block_sensitivity(m, *by_time), 7), round(block_sensitivity(m, *by_class), 7))
        for name, m in blocks
        if min(block_sensitivity(m, *by_time), block_sensitivity(m, *by_class)) <= CONDITIONING_MARGIN
    }
    assert not deaf, f"blocks whose output the timestep or class barely changes: {deaf}"
