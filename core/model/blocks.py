"""Restormer building blocks, written for the channels-last token layout ``(B, H, W, C)``.

Every tensor inside the network trunk is ``(B, H, W, C)`` and contiguous, so that
- a 1x1 convolution is a plain matrix product over the last dimension (``F.linear``/``addmm``),
- LayerNorm over channels is one fused ``F.layer_norm`` call with no permute/copy,
- a depthwise or dense 3x3 convolution runs on the free ``permute(0, 3, 1, 2)`` view, which torch
  sees as an NCHW tensor in ``channels_last`` memory format (oneDNN's fast path, output channels-last).

The maths is Restormer's (Zamir et al. 2022): MDTA channel attention and the gated-dconv FFN. Two
algebraic fusions keep it fast on CPU without changing the function:
- the L2 normalisation of q and k is applied to the small ``d x d`` Gram matrix instead of the
  full q/k tensors: ``softmax(q^T k / (|q| |k|^T) * t)``;
- ``attn @ v`` followed by the output projection is one ``(HW x C) @ (C x C)`` product with the
  per-image matrix ``blockdiag(A_h^T) @ W_out^T``, and the residual add rides in that GEMM.
In inference on CPU, ``fused.py`` runs the GDFN gate and the residual GEMMs as oneDNN fused kernels.
``reference.py`` states the same blocks plainly, in Restormer's own layout; the tests check both agree.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import fused

__all__ = [
    "LayerNorm",
    "ChannelAttention",
    "GatedFeedForward",
    "TransformerBlock",
    "Downsample",
    "Upsample",
    "ConcatLinear",
    "conv3x3",
    "space_to_depth",
    "depth_to_space",
    "pool",
    "hidden_width",
]


def hidden_width(dim: int, expansion: float) -> int:
    """FFN hidden width ``dim * expansion`` rounded up to a multiple of 8 (vector-friendly)."""
    return max(8, int(math.ceil(dim * expansion / 8.0)) * 8)


def conv3x3(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """Dense 3x3 convolution of a ``(B, H, W, C)`` tensor, result ``(B, H, W, C_out)``."""
    y = F.conv2d(x.permute(0, 3, 1, 2), conv.weight, conv.bias, padding=1)
    return y.permute(0, 2, 3, 1).contiguous()


def space_to_depth(x: torch.Tensor) -> torch.Tensor:
    """Pixel-unshuffle by 2 in token layout: ``(B, H, W, C) -> (B, H/2, W/2, 4C)``."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h // 2, w // 2, 4 * c)


def depth_to_space(x: torch.Tensor) -> torch.Tensor:
    """Pixel-shuffle by 2 in token layout: ``(B, H, W, 4C) -> (B, 2H, 2W, C)``."""
    b, h, w, c4 = x.shape
    c = c4 // 4
    x = x.reshape(b, h, w, 2, 2, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, 2 * h, 2 * w, c)


def pool(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Average over non-overlapping ``factor x factor`` windows of a ``(B, H, W, C)`` tensor."""
    if factor == 1:
        return x
    # avg_pool2d on the channels-last view: ~20x faster than a reshape + mean over strided axes.
    return F.avg_pool2d(x.permute(0, 3, 1, 2), factor).permute(0, 2, 3, 1)


class LayerNorm(nn.LayerNorm):
    """LayerNorm over channels of a ``(B, H, W, C)`` tensor (Restormer's 'WithBias' variant)."""

    def __init__(self, dim: int):
        super().__init__(dim, eps=1e-5)


class ChannelAttention(nn.Module):
    """MDTA: multi-head transposed (channel) attention with depthwise-conv q/k/v (Restormer)."""

    def __init__(self, dim: int, heads: int, bias: bool = False):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} attention heads")
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads))
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.qkv_dwconv = nn.Conv2d(3 * dim, 3 * dim, 3, padding=1, groups=3 * dim, bias=bias)
        self.project_out = nn.Linear(dim, dim, bias=bias)

    def _project(self, x: torch.Tensor, part: slice) -> torch.Tensor:
        """Channels ``part`` of qkv_dwconv(qkv(x)), computed on their own (contiguous result)."""
        bias = None if self.qkv.bias is None else self.qkv.bias[part]
        dw_bias = None if self.qkv_dwconv.bias is None else self.qkv_dwconv.bias[part]
        y = F.linear(x, self.qkv.weight[part], bias).permute(0, 3, 1, 2)
        weight = self.qkv_dwconv.weight[part]
        return F.conv2d(y, weight, dw_bias, padding=1, groups=weight.shape[0]).permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """Return ``residual + MDTA(x)`` for ``x`` (already normalised) of shape ``(B, H, W, C)``."""
        b, h, w, c = x.shape
        # q|k and v separately: v stays contiguous for the fused output GEMM.
        qk = self._project(x, slice(0, 2 * c)).reshape(b, h * w, 2 * c)
        v = self._project(x, slice(2 * c, 3 * c)).reshape(b, h * w, c)
        q, k = qk[..., :c], qk[..., c:]
        # Norms over the spatial axis (Restormer's F.normalize(q/k, dim=-1)), applied to the Gram.
        # Sum of squares as a GEMV with a ones row: ~5x faster than a strided vector_norm on CPU.
        ones = qk.new_ones(b, 1, h * w)
        norms = torch.bmm(ones, qk.square()).squeeze(1).sqrt().clamp_min(1e-12)
        q_norm, k_norm = norms[:, :c], norms[:, c:]
        d = c // self.heads
        w_out = self.project_out.weight  # (C_out, C_in)
        rows = []
        for head in range(self.heads):
            s = slice(head * d, (head + 1) * d)
            gram = torch.bmm(q[..., s].transpose(1, 2), k[..., s])  # (B, d, d)
            gram = gram / (q_norm[:, s, None] * k_norm[:, None, s]) * self.temperature[head]
            attn = gram.softmax(dim=-1)
            # rows s of blockdiag(A^T) @ W_out^T
            rows.append(torch.matmul(attn.transpose(1, 2), w_out[:, s].t()))
        mixing = rows[0] if self.heads == 1 else torch.cat(rows, dim=1)  # (B, C_in, C_out)
        bias = self.project_out.bias
        if b == 1 and fused.usable(x):  # one image: oneDNN GEMM with the residual add fused in
            out = fused.linear_add(v[0], mixing[0].t().contiguous(), bias, residual.reshape(h * w, c))
            return out.view(b, h, w, c)
        base = residual if bias is None else residual + bias
        return torch.baddbmm(base.reshape(b, h * w, c), v, mixing).view(b, h, w, c)


class GatedFeedForward(nn.Module):
    """Gated-dconv feed-forward network (GDFN): ``W_out(gelu(dw(a)) * dw(b))``."""

    def __init__(self, dim: int, expansion: float, bias: bool = False):
        super().__init__()
        hidden = hidden_width(dim, expansion)
        self.hidden = hidden
        self.project_in = nn.Linear(dim, 2 * hidden, bias=bias)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=bias)
        self.project_out = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """Return ``residual + GDFN(x)``."""
        h, bias = self.hidden, self.project_in.bias
        # The two halves separately, so each is contiguous (GELU on a strided channel slice falls off
        # torch's vectorised CPU path, ~8x slower) and the gate can be one fused oneDNN pass.
        a = F.linear(x, self.project_in.weight[:h], None if bias is None else bias[:h])
        b = F.linear(x, self.project_in.weight[h:], None if bias is None else bias[h:])
        gated = fused.gated_dwconv(a, b, self.dwconv.weight, self.dwconv.bias, h)
        return fused.linear_add(gated, self.project_out.weight, self.project_out.bias, residual)


class TransformerBlock(nn.Module):
    """Restormer block: ``x + MDTA(LN(x))`` then ``x + GDFN(LN(x))``."""

    def __init__(self, dim: int, heads: int, expansion: float, bias: bool = False):
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.attn = ChannelAttention(dim, heads, bias)
        self.norm2 = LayerNorm(dim)
        self.ffn = GatedFeedForward(dim, expansion, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn(self.norm1(x), residual=x)
        return self.ffn(self.norm2(x), residual=x)


def stack(dim: int, count: int, heads: int, expansion: float, bias: bool = False) -> nn.Sequential:
    """``count`` transformer blocks in a row (an empty Sequential is the identity)."""
    return nn.Sequential(*[TransformerBlock(dim, heads, expansion, bias) for _ in range(count)])


class Downsample(nn.Module):
    """Restormer down-sampling: 3x3 conv to C/2, then pixel-unshuffle: ``(H, W, C) -> (H/2, W/2, 2C)``."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim // 2, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return space_to_depth(conv3x3(x, self.conv))


class Upsample(nn.Module):
    """Restormer up-sampling: 3x3 conv to 2C, then pixel-shuffle: ``(H, W, C) -> (2H, 2W, C/2)``."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim * 2, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depth_to_space(conv3x3(x, self.conv))


class BilinearUpsample(nn.Module):
    """1x1 projection to C/2, then bilinear x2: ``(H, W, C) -> (2H, 2W, C/2)``.

    The pixel-shuffle up-sampling computes the four sub-pixels of each 2x2 block with four different
    filters, so any imbalance between them shows as a 2 px (and, over two levels, 4 px) grid in flat
    areas. Bilinear interpolation has no sub-pixel phases; the projection runs at the low resolution
    (it commutes with the interpolation), so this is cheaper than the 3x3 conv of ``Upsample``.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, dim // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x).permute(0, 3, 1, 2)
        y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
        return y.permute(0, 2, 3, 1).contiguous()


class ConcatLinear(nn.Module):
    """A 1x1 conv over ``cat([a, b], channels)`` computed without materialising the concatenation."""

    def __init__(self, dim_a: int, dim_b: int, dim_out: int, bias: bool = False):
        super().__init__()
        self.dim_a = dim_a
        self.weight = nn.Parameter(torch.empty(dim_out, dim_a + dim_b))
        self.bias = nn.Parameter(torch.zeros(dim_out)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out = F.linear(a, self.weight[:, : self.dim_a], self.bias)
        shape = out.shape
        out = torch.addmm(
            out.view(-1, shape[-1]), b.reshape(-1, b.shape[-1]), self.weight[:, self.dim_a :].t()
        )
        return out.view(shape)
