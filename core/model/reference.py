"""The Restormer blocks of ``blocks.py`` written plainly, as Restormer writes them (Zamir et al. 2022).

``blocks.py`` computes the same functions in the channels-last token layout with algebraic fusions and
oneDNN kernels, which makes them fast on a CPU and hard to read. These modules are the readable
statement of what they compute: ``(B, C, H, W)`` tensors, 1x1 convolutions, the L2 normalisation of q
and k, ``attn @ v`` and then the output projection. They take the same parameters under the same
names (``load_state_dict`` of a ``blocks`` module fits), and the tests check that both agree. The
network never runs them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import hidden_width


def conv1x1(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """A 1x1 convolution of ``(B, C, H, W)`` with the weights of an ``nn.Linear``."""
    return F.conv2d(x, linear.weight[:, :, None, None], linear.bias)


class LayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of each pixel of ``(B, C, H, W)`` (Restormer's 'WithBias' variant)."""

    def __init__(self, dim: int):
        super().__init__(dim, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ChannelAttention(nn.Module):
    """MDTA: attention across channels (a ``d x d`` map per head), with depthwise-conv q, k and v."""

    def __init__(self, dim: int, heads: int, bias: bool = False):
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads))
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.qkv_dwconv = nn.Conv2d(3 * dim, 3 * dim, 3, padding=1, groups=3 * dim, bias=bias)
        self.project_out = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv_dwconv(conv1x1(x, self.qkv)).chunk(3, dim=1)
        # (B, heads, d, HW): each head attends over its d channels, every pixel a feature
        q, k, v = (t.reshape(b, self.heads, c // self.heads, h * w) for t in (q, k, v))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1)) * self.temperature[None, :, None, None]
        out = attn.softmax(dim=-1) @ v
        return conv1x1(out.reshape(b, c, h, w), self.project_out)


class GatedFeedForward(nn.Module):
    """GDFN: ``W_out(gelu(dw(a)) * dw(b))`` where ``a | b = W_in(x)``."""

    def __init__(self, dim: int, expansion: float, bias: bool = False):
        super().__init__()
        hidden = hidden_width(dim, expansion)
        self.project_in = nn.Linear(dim, 2 * hidden, bias=bias)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=bias)
        self.project_out = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.dwconv(conv1x1(x, self.project_in)).chunk(2, dim=1)
        return conv1x1(F.gelu(a) * b, self.project_out)


class TransformerBlock(nn.Module):
    """Restormer block: ``x + MDTA(LN(x))`` then ``x + GDFN(LN(x))``."""

    def __init__(self, dim: int, heads: int, expansion: float, bias: bool = False):
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.attn = ChannelAttention(dim, heads, bias)
        self.norm2 = LayerNorm(dim)
        self.ffn = GatedFeedForward(dim, expansion, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))
