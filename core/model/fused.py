"""Fused CPU kernels for inference (oneDNN post-ops), with the plain torch ops as the reference path.

On CPU the full-resolution blocks are bound by memory traffic, not arithmetic: every element-wise op
is one more pass over a large activation. oneDNN can apply an element-wise or binary operation as a
*post-op* of a convolution or matrix product, inside the same pass. torch exposes these as
``torch.ops.mkldnn._convolution_pointwise`` / ``_linear_pointwise`` (the ops inductor's CPU fusion
emits). We use them for:

- the GDFN gate: ``gelu(dw_a(a)) * dw_b(b)`` as a depthwise conv with a GELU post-op, then a depthwise
  conv with a multiply post-op, instead of two convs, a GELU pass and a multiply pass (~1.5x faster on
  2 cores). torch 2.13 runs the multiply of a *grouped* conv as a separate in-place pass inside the op
  (its binary fusion covers dense convs only); the GELU post-op is where the time is saved;
- residual adds: ``residual + x @ W^T`` as a matmul with an "add" post-op (no separate copy pass).

Same maths as the reference path (GELU is the exact erf form); results agree to float rounding.
Used only when no gradient is needed, on CPU float32 tensors, when torch has oneDNN; any failure
switches them off for the process and the reference ops run instead. ``ENABLED`` turns them off by
hand (tests compare both paths).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

__all__ = ["ENABLED", "usable", "gated_dwconv", "linear_add"]

ENABLED = True
_broken = False
_ONE = [1, 1]


def usable(x: torch.Tensor) -> bool:
    """Whether the fused kernels may run for ``x`` (inference, CPU, float32, oneDNN present)."""
    if torch.compiler.is_compiling():  # under torch.compile inductor does its own fusion
        return False
    return (
        ENABLED
        and not _broken
        and not torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
    )


def _disable(exc: Exception) -> None:
    global _broken
    _broken = True
    warnings.warn(f"oneDNN fused kernels unavailable ({exc}); using the reference ops", stacklevel=3)


def gated_dwconv(
    a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, hidden: int
):
    """``gelu(dw(a; w[:h])) * dw(b; w[h:])`` for ``(B, H, W, h)`` inputs; returns ``(B, H, W, h)``."""
    wa, wb = weight[:hidden], weight[hidden:]
    ba, bb = (None, None) if bias is None else (bias[:hidden], bias[hidden:])
    a4, b4 = a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2)
    if usable(a):
        try:
            mk = torch.ops.mkldnn
            gate = mk._convolution_pointwise(a4, wa, ba, _ONE, _ONE, _ONE, hidden, "gelu", [], "none")
            out = mk._convolution_pointwise.binary(
                b4, gate, wb, bb, _ONE, _ONE, _ONE, hidden, "mul", None, None, [], None
            )
            return out.permute(0, 2, 3, 1)
        except (RuntimeError, AttributeError, NotImplementedError) as exc:
            _disable(exc)
    gate = F.gelu(F.conv2d(a4, wa, ba, padding=1, groups=hidden))
    value = F.conv2d(b4, wb, bb, padding=1, groups=hidden)
    out = gate.mul_(value) if not torch.is_grad_enabled() else gate * value
    return out.permute(0, 2, 3, 1)


def linear_add(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor):
    """``residual + x @ weight^T (+ bias)`` over the last dim; ``residual`` has the output's shape."""
    shape = residual.shape
    x2, r2 = x.reshape(-1, x.shape[-1]), residual.reshape(-1, shape[-1])
    if usable(x) and x2.is_contiguous() and r2.is_contiguous():
        try:
            return torch.ops.mkldnn._linear_pointwise.binary(x2, r2, weight, bias, "add").view(shape)
        except (RuntimeError, AttributeError, NotImplementedError) as exc:
            _disable(exc)
    if bias is not None:
        r2 = r2 + bias
    return torch.addmm(r2, x2, weight.t()).view(shape)
