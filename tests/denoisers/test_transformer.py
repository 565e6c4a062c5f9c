"""DiT: adaLN-Zero initialisation, the paper's model sizes, position embeddings, patches."""

import numpy as np
import pytest
import torch

import denoisers
from denoisers.common import count_parameters
from denoisers.transformer import DiTBlock, auto_patch_size, sincos_pos_embed_2d
from tests.denoisers.helpers import inputs, perturb_zero_init

# Peebles & Xie 2023, Table 1 and 4: parameters of the /2 models, in millions.
PAPER_MILLIONS = {"DiT-S/2": 33, "DiT-B/2": 130, "DiT-L/2": 458, "DiT-XL/2": 675}
DIT_XL_2_PARAMETERS = 675_129_632
"""What facebookresearch/DiT's train.py logs for DiT-XL/2 at 256x256 (latents 4x32x32)."""


def dit_repo_count(net: torch.nn.Module) -> int:
    """The count facebookresearch/DiT's class-conditional model of the same size would have.

    Ours differs in three places, each added back here: the class embedding table (1000 classes + 1 "null"
    class for classifier-free guidance, D each), the fixed position embedding (a frozen nn.Parameter there,
    so counted; a buffer here) and the learned variance (out_channels 2C = 8 there: another p*p*4 outputs
    of the final linear layer, with biases).
    """
    _, tokens, hidden = net.pos_embed.shape
    p = net.patch_size
    return count_parameters(net) + 1001 * hidden + tokens * hidden + p * p * 4 * (hidden + 1)


def test_presets_are_the_papers_table():
    sizes = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}
    presets = denoisers.preset_options("transformer")
    assert list(presets) == ["small"] + [f"DiT-{s}/{p}" for s in sizes for p in (2, 4, 8)]
    for size, (depth, hidden, heads) in sizes.items():
        for p in (2, 4, 8):
            assert presets[f"DiT-{size}/{p}"] == {
                "depth": depth,
                "hidden_size": hidden,
                "num_heads": heads,
                "patch_size": p,
                "mlp_ratio": 4.0,
            }


def test_parameter_counts_match_the_paper_at_4x32x32():
    counts = {}
    for preset in PAPER_MILLIONS:
        with torch.device("meta"):
            counts[preset] = dit_repo_count(denoisers.get("transformer")((4, 32, 32), preset=preset))
    assert counts["DiT-XL/2"] == DIT_XL_2_PARAMETERS
    for preset, millions in PAPER_MILLIONS.items():
        assert counts[preset] == pytest.approx(millions * 1e6, rel=0.005), preset


def test_output_is_exactly_zero_at_initialisation():
    for shape in [(1, 8, 8), (3, 32, 32)]:
        net = denoisers.get("transformer")(shape)
        x, t = inputs(2, shape)
        assert torch.equal(net(x, t), torch.zeros_like(x))
    # adaLN-Zero: with zero gates each block is the identity.
    block = next(m for m in net.modules() if isinstance(m, DiTBlock))
    tokens = torch.randn(2, 5, 128)
    assert torch.equal(block(tokens, torch.randn(2, 128)), tokens)
    assert not perturb_zero_init(net)(x, t).eq(0).all()


def test_position_embedding_is_maes_fixed_sincos_buffer():
    grid_h, grid_w, dim = 3, 5, 16

    def embed_1d(d: int, pos: np.ndarray) -> np.ndarray:  # MAE's get_1d_sincos_pos_embed_from_grid
        omega = 1.0 / 10_000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid = np.stack(np.meshgrid(np.arange(grid_w, dtype=np.float32), np.arange(grid_h, dtype=np.float32)))
    expected = torch.from_numpy(np.concatenate([embed_1d(dim // 2, grid[0]), embed_1d(dim // 2, grid[1])], 1))
    torch.testing.assert_close(sincos_pos_embed_2d(dim, grid_h, grid_w)[0], expected.float())

    net = denoisers.get("transformer")((1, 12, 20), patch_size=4, hidden_size=16, num_heads=2, depth=1)
    assert "pos_embed" in dict(net.named_buffers()) and "pos_embed" not in dict(net.named_parameters())
    torch.testing.assert_close(net.pos_embed[0], expected.float())


def test_unpatchify_is_dits():
    net = denoisers.get("transformer")((3, 8, 8), patch_size=2, depth=1)
    tokens = torch.randn(2, 16, 2 * 2 * 3)
    # facebookresearch/DiT's DiT.unpatchify
    expected = torch.einsum("nhwpqc->nchpwq", tokens.reshape(2, 4, 4, 2, 2, 3)).reshape(2, 3, 8, 8)
    assert torch.equal(net.unpatchify(tokens), expected)


def test_auto_patch_size_keeps_at_least_4x4_tokens():
    assert [auto_patch_size(s, s) for s in (28, 32, 8, 16, 7, 3)] == [4, 4, 2, 4, 1, 1]
    assert denoisers.get("transformer")((1, 28, 28)).patch_size == 4
    assert denoisers.get("transformer")((1, 8, 8)).patch_size == 2
    assert denoisers.get("transformer")((1, 8, 8), patch_size=1).patch_size == 1


def test_small_preset_is_cpu_sized():
    with torch.device("meta"):
        net = denoisers.get("transformer")((1, 28, 28))
    assert 1_000_000 < count_parameters(net) < 2_000_000
