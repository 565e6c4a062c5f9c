"""GroupNorm, optionally fused with the SiLU that follows it in every U-Net block.

On CPU with channels-last float32 activations (how ``bench run`` trains), the forward and backward passes run
in one C kernel (``csrc/group_norm_silu.c``) that works image by image inside the L2 cache. PyTorch's
channels-last GroupNorm runs well below memory bandwidth on CPU (its backward pass is several times slower
than the contiguous-layout one), and the separate SiLU adds two more passes over every activation: together
they took a quarter of a small U-Net's training step and a third of its sampler step. Everywhere else
(CUDA, NCHW, other dtypes, autocast, under torch.compile, or when no C compiler is found) the module computes
``silu(group_norm(x))`` with PyTorch's operators, so results never depend on the path beyond rounding.

The parameters are those of ``torch.nn.GroupNorm`` (``weight``, ``bias``): checkpoints load either way.
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from . import build

KERNEL = "group_norm_silu"


# The entry points of csrc/group_norm_silu.c, each prototype beside the ctypes types that mirror it.
_PTR, _LONG, _INT, _FLOAT = ctypes.c_void_p, ctypes.c_long, ctypes.c_int, ctypes.c_float
SIGNATURES = {
    # void gn_forward(const float *x, const float *weight, const float *bias, float *out, float *mean_out,
    #                 float *rstd_out, long n_images, long pixels, long channels, long groups, float eps,
    #                 int act, int threads)
    "gn_forward": [*[_PTR] * 6, *[_LONG] * 4, _FLOAT, _INT, _INT],
    # void gn_backward(const float *x, const float *grad_out, const float *weight, const float *bias,
    #                  const float *mean, const float *rstd, float *grad_in, float *dweight_parts,
    #                  float *dbias_parts, long n_images, long pixels, long channels, long groups, int act,
    #                  int threads)
    "gn_backward": [*[_PTR] * 9, *[_LONG] * 4, _INT, _INT],
}


def _kernel() -> ctypes.CDLL | None:
    lib = build.load(KERNEL)
    return None if lib is None else build.bind(lib, SIGNATURES)


def kernel_available() -> bool:
    """Whether the fused CPU kernel was built (or found cached) and loaded."""
    return _kernel() is not None


class _FusedGroupNormSiLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, groups: int, eps: float, silu: bool):  # type: ignore[override]
        n, c, h, w = x.shape
        out = torch.empty_like(x, memory_format=torch.channels_last)
        mean = torch.empty(n, groups, dtype=torch.float32)
        rstd = torch.empty(n, groups, dtype=torch.float32)
        weight, bias = weight.detach().contiguous(), bias.detach().contiguous()
        _kernel().gn_forward(
            x.data_ptr(), weight.data_ptr(), bias.data_ptr(), out.data_ptr(), mean.data_ptr(),
            rstd.data_ptr(), n, h * w, c, groups, eps, int(silu), torch.get_num_threads(),
        )
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        ctx.groups, ctx.silu = groups, silu
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):  # type: ignore[override]
        x, weight, bias, mean, rstd = ctx.saved_tensors
        n, c, h, w = x.shape
        grad_out = grad_out.contiguous(memory_format=torch.channels_last)
        grad_in = torch.empty_like(x, memory_format=torch.channels_last)
        dweight = torch.empty(n, c, dtype=torch.float32)
        dbias = torch.empty(n, c, dtype=torch.float32)
        _kernel().gn_backward(
            x.data_ptr(), grad_out.data_ptr(), weight.data_ptr(), bias.data_ptr(), mean.data_ptr(),
            rstd.data_ptr(), grad_in.data_ptr(), dweight.data_ptr(), dbias.data_ptr(),
            n, h * w, c, ctx.groups, int(ctx.silu), torch.get_num_threads(),
        )
        return grad_in, dweight.sum(0), dbias.sum(0), None, None, None


class GroupNorm(nn.GroupNorm):
    """``torch.nn.GroupNorm``, followed by SiLU when ``silu``; ``fused`` chooses the C kernel where it
    applies (see the module's docstring)."""

    def __init__(self, num_groups: int, num_channels: int, *, silu: bool = False, eps: float = 1e-5) -> None:
        super().__init__(num_groups, num_channels, eps=eps)
        self.silu = silu
        self.fused = True
        self.ran_fused = False  # set by the first call that takes the kernel: what metrics.json reports

    def extra_repr(self) -> str:
        return super().extra_repr() + f", silu={self.silu}, fused={self.fused}"

    def _fusable(self, x: torch.Tensor) -> bool:
        return (
            self.fused
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and x.dim() == 4
            and x.is_contiguous(memory_format=torch.channels_last)
            and self.weight is not None
            and self.weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling()
            and _kernel() is not None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fusable(x):
            self.ran_fused = True
            return _FusedGroupNormSiLU.apply(x, self.weight, self.bias, self.num_groups, self.eps, self.silu)
        y = F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        return F.silu(y) if self.silu else y


def fused_kernel_ran(model: nn.Module) -> bool:
    """Whether any GroupNorm of ``model`` has computed through the fused kernel."""
    return any(isinstance(m, GroupNorm) and m.ran_fused for m in model.modules())


def use_fused_kernels(model: nn.Module, enabled: bool) -> None:
    """Turn the fused CPU kernel on or off in every GroupNorm of ``model``."""
    for module in model.modules():
        if isinstance(module, GroupNorm):
            module.fused = enabled
