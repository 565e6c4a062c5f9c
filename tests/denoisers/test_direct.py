"""The one-shot design: noise -> x0 with the unet's (or transformer's) exact architecture."""

import torch

import denoisers
from denoisers.common import count_parameters
from tests.denoisers.helpers import inputs

ONE_SHOT = denoisers.Recipe(prediction="x0", timesteps="terminal", sampler="one_shot")


def test_recipe_is_x0_from_the_terminal_step_in_one_shot():
    assert denoisers.get("direct")((1, 28, 28)).recipe == ONE_SHOT
    assert denoisers.get("direct")((1, 28, 28), target="x0").recipe == ONE_SHOT
    assert denoisers.get("direct")((1, 28, 28), backbone="transformer").recipe == ONE_SHOT


def test_same_architecture_as_the_unet_with_the_same_options():
    for options in [{}, {"base_channels": 16, "num_res_blocks": 2}, {"preset": "ddpm-cifar10"}]:
        with torch.device("meta"):
            direct = denoisers.get("direct")((3, 32, 32), **options)
            unet = denoisers.get("unet")((3, 32, 32), **options)
        assert type(direct) is type(unet)
        assert count_parameters(direct) == count_parameters(unet)
        assert direct.state_dict().keys() == unet.state_dict().keys()
    assert denoisers.preset_options("direct") == denoisers.preset_options("unet")


def test_transformer_backbone():
    with torch.device("meta"):
        direct = denoisers.get("direct")((4, 32, 32), backbone="transformer", preset="DiT-S/4")
        dit = denoisers.get("transformer")((4, 32, 32), preset="DiT-S/4")
    assert count_parameters(direct) == count_parameters(dit)
    net = denoisers.get("direct")((1, 8, 8), backbone="transformer", depth=2)
    x, _ = inputs(2, (1, 8, 8))
    assert net(x, torch.full((2,), 999)).shape == x.shape
