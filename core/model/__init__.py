"""The VISER-CR network. ``from viser_cr.core.model import ViserCR`` (see docs/model.md)."""

from . import fused, perf
from .adaptive_mask import score_loss, score_targets
from .configs import CONFIGS, config
from .viser import ViserCR

__all__ = ["ViserCR", "CONFIGS", "config", "score_targets", "score_loss", "fused", "perf"]
