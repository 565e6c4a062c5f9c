"""What every built-in denoiser promises (see denoisers/_base.py): shapes, gradients, determinism, errors."""

import pytest
import torch

import denoisers
from denoisers.common import count_parameters, timestep_embedding
from tests.denoisers.helpers import inputs, perturb_zero_init

PLUGINS = ["unet", "transformer", "direct"]
SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]


def test_the_plugins_are_registered_with_a_description_and_presets():
    for name in PLUGINS:
        assert name in denoisers.names()
        assert denoisers.REGISTRY.plugin(name).description
        assert denoisers.presets(name)[0] == "small"
        assert list(denoisers.preset_options(name)) == denoisers.presets(name)
    assert denoisers.presets("unet") == ["small", "ddpm-cifar10"]
    assert "DiT-XL/2" in denoisers.presets("transformer")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", PLUGINS)
def test_output_has_the_input_shape(name, shape):
    net = denoisers.get(name)(shape)
    x, t = inputs(2, shape)
    assert net(x, t).shape == x.shape


@pytest.mark.parametrize("name", PLUGINS)
def test_fractional_and_large_timesteps_are_accepted(name):
    net = perturb_zero_init(denoisers.get(name)((1, 8, 8)))
    x, _ = inputs(3, (1, 8, 8))
    out = net(x, torch.tensor([0.5, 1000.25, 3999.0]))
    assert out.shape == x.shape and out.isfinite().all()


@pytest.mark.parametrize("name", PLUGINS)
def test_gradients_reach_every_parameter(name):
    net = perturb_zero_init(denoisers.get(name)((1, 8, 8)))
    x, t = inputs(3, (1, 8, 8))
    net(x, t).pow(2).sum().backward()
    without = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not without


@pytest.mark.parametrize("name", PLUGINS)
def test_eval_mode_is_deterministic(name):
    options = {"dropout": 0.3} if name != "transformer" else {}
    net = perturb_zero_init(denoisers.get(name)((1, 28, 28), **options)).eval()
    x, t = inputs(2, (1, 28, 28))
    assert torch.equal(net(x, t), net(x, t))


@pytest.mark.parametrize("name", PLUGINS)
def test_every_output_pixel_depends_on_the_input_and_every_input_pixel_matters(name):
    """28 is not a power of two: nothing may be cropped, padded with constants or dropped on the way."""
    net = perturb_zero_init(denoisers.get(name)((1, 28, 28))).eval()
    x, t = inputs(2, (1, 28, 28))
    x.requires_grad_(True)
    out = net(x, t)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert (grad != 0).all(), "input pixels that do not reach the output"
    with torch.no_grad():
        changed = net(x + 0.1 * torch.randn_like(x), t) != out
    assert changed.all(), f"output pixels independent of the input: {(~changed).nonzero()[:5].tolist()}"


def test_recipes_and_target_override():
    shape = (1, 8, 8)
    assert denoisers.get("unet")(shape).recipe == denoisers.Recipe("eps", "all", "ancestral")
    assert denoisers.get("transformer")(shape).recipe == denoisers.Recipe("eps", "all", "ancestral")
    assert denoisers.get("direct")(shape).recipe == denoisers.Recipe("x0", "terminal", "one_shot")
    for name in ("unet", "transformer"):
        for target in denoisers.PREDICTIONS:
            recipe = denoisers.get(name)(shape, target=target).recipe
            assert recipe == denoisers.Recipe(target, "all", "ancestral")


def test_explicit_options_override_the_preset():
    with torch.device("meta"):
        net = denoisers.get("unet")((3, 32, 32), preset="ddpm-cifar10", base_channels=32, dropout=0.0)
        reference = denoisers.get("unet")(
            (3, 32, 32),
            base_channels=32,
            channel_mult=(1, 2, 2, 2),
            num_res_blocks=2,
            attention_resolutions=(16,),
            dropout=0.0,
        )
        dit = denoisers.get("transformer")((4, 32, 32), preset="DiT-S/2", depth=2)
    assert count_parameters(net) == count_parameters(reference)
    assert len(dit.blocks) == 2 and dit.patch_size == 2


def test_options_from_the_command_line_are_accepted():
    """``-o channel_mult=[1,2]`` and ``-o attention_resolutions=4`` arrive as a list and a bare int."""
    net = denoisers.get("unet")((1, 8, 8), channel_mult=[1, 2], attention_resolutions=4)
    x, t = inputs(2, (1, 8, 8))
    assert net(x, t).shape == x.shape


def test_timestep_embedding_matches_the_transformer_formula():
    t = torch.tensor([0.0, 1.0, 250.5])
    emb = timestep_embedding(t, 6)
    freqs = torch.tensor([1.0, 10_000 ** (-1 / 3), 10_000 ** (-2 / 3)])
    expected = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], dim=1)
    torch.testing.assert_close(emb, expected)
    assert timestep_embedding(t, 7).shape == (3, 7)


MNIST = (1, 28, 28)
BAD_OPTIONS = [
    ("unet", MNIST, {"widht": 3}, r"unknown unet option widht=3; options: preset, target, sigma_data, base_"),
    ("unet", MNIST, {"base_channels": -8}, r"base_channels=-8 is not allowed: must be a positive integer"),
    ("unet", MNIST, {"base_channels": 2.5}, r"base_channels=2.5 is not allowed: must be a positive int"),
    ("unet", MNIST, {"channel_mult": ()}, r"channel_mult=\(\) is not allowed: .*positive integers"),
    ("unet", MNIST, {"dropout": 1.5}, r"dropout=1.5 is not allowed: must be a number in \[0, 1\)"),
    ("unet", MNIST, {"preset": "huge"}, r"unknown unet preset 'huge'; presets: small, ddpm-cifar10"),
    ("unet", MNIST, {"target": "noise"}, r"target='noise' is not allowed: must be one of eps, x0, v"),
    (
        "unet",
        MNIST,
        {"attention_resolutions": (16,)},
        r"attention_resolutions=\(16,\) is not allowed for a 28x28 image.*resolutions are \[28, 14, 7\]",
    ),
    (
        "unet",
        MNIST,
        {"preset": "ddpm-cifar10"},
        r"attention_resolutions=\(16,\) .* 28x28 .* the resolutions are \[28, 14, 7, 4\]",
    ),
    ("unet", (28, 28), {}, r"image_shape must be \(C, H, W\) with positive sizes, got \(28, 28\)"),
    ("unet", (1, 0, 28), {}, r"image_shape must be \(C, H, W\) with positive sizes"),
    (
        "transformer",
        MNIST,
        {"patch_size": 3},
        r"patch_size=3 does not divide the 28x28 image; patch sizes that do: 1, 2, 4, 7, 14, 28",
    ),
    (
        "transformer",
        (4, 32, 32),
        {"preset": "DiT-S/8", "hidden_size": 100},
        r"num_heads=6 does not divide hidden_size=100",
    ),
    ("transformer", MNIST, {"hidden_size": 130, "num_heads": 5}, r"hidden_size=130 .* multiple of 4"),
    ("transformer", MNIST, {"patch_size": "big"}, r"patch_size='big' .* positive integer or \"auto\""),
    ("transformer", MNIST, {"mlp_ratio": 0}, r"mlp_ratio=0 is not allowed: must be a positive number"),
    ("transformer", MNIST, {"preset": "DiT-XXL/2"}, r"unknown transformer preset 'DiT-XXL/2'; .*DiT-S/2"),
    ("transformer", (1, -28, 28), {}, r"image_shape must be \(C, H, W\)"),
    ("direct", MNIST, {"backbone": "mlp"}, r"backbone='mlp' is not allowed: must be one of unet, transf"),
    ("direct", MNIST, {"target": "eps"}, r"direct option target='eps' is not allowed: must be one of x0"),
    ("direct", MNIST, {"depth": 2}, r"direct \(backbone=unet\): unknown unet option depth=2"),
]


@pytest.mark.parametrize(("name", "image_shape", "options", "message"), BAD_OPTIONS)
def test_bad_options_are_clear_value_errors(name, image_shape, options, message):
    with pytest.raises(ValueError, match=message):
        denoisers.get(name)(image_shape, **options)
