"""Weights for timing an architecture as a trained network runs it (shared by the benchmarks).

An inference forward skips the layers whose results exact-zero weights cancel (``ViserCR._skips_correction``,
``_skips_alignment``; docs/model.md). A fresh model has such zeros (the output conv, SpyNet's last convs), so
timed untrained it would run a fraction of its layers."""

from __future__ import annotations

import torch


def as_trained(model):
    """``model`` with every weight left at its zero initialisation made small and random (in place)."""
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1 and not torch.any(parameter):
                parameter.normal_(std=1e-3)
    return model
