"""The bridge between QGIS Processing and the engine (``viser_cr.core``).

It turns a ``QgsProcessingFeedback`` into the engine's ``progress`` / ``is_cancelled`` callbacks, hands
the engine's messages (``core.messages``) of a run to its feedback, and turns the engine's errors into
``QgsProcessingException``. It holds no image logic, and it imports the engine (and so torch) only when
an algorithm runs.
"""

from __future__ import annotations

import contextlib
import importlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from qgis.core import QgsProcessingException, QgsProcessingFeedback

from . import deps
from .i18n import tr

CANCELLED_MESSAGE = "Cancelled by the user: nothing was written."  # shown through tr()
PLUGIN_ROOT = Path(__file__).resolve().parent.parent


def require_dependencies() -> None:
    """Raise a ``QgsProcessingException`` that says what is missing and how to install it."""
    missing = deps.missing_modules()
    if missing:
        raise QgsProcessingException(deps.missing_message(missing))


def core_module(name: str):
    """Import ``viser_cr.core.<name>``; a missing dependency becomes a clear QgsProcessingException."""
    try:
        return importlib.import_module(f"..core.{name}", __package__)
    except ImportError as exc:
        missing = deps.missing_modules()
        if missing:
            raise QgsProcessingException(deps.missing_message(missing)) from exc
        raise QgsProcessingException(tr(
            "The VISER-CR engine module core.{name} cannot be imported ({error}). Reinstall the plugin; if it "
            "persists, report it with this message."
        ).format(name=name, error=exc)) from exc


class FeedbackCallbacks:
    """The engine's progress and cancel callbacks, on a Processing feedback (safe from the worker thread)."""

    def __init__(self, feedback: QgsProcessingFeedback | None, start: float = 0.0, span: float = 100.0):
        self.feedback = feedback
        self.start = start
        self.span = span
        self._last_text = None

    def progress(self, fraction: float, message: str | None = None) -> None:
        if self.feedback is None:
            return
        fraction = min(max(float(fraction), 0.0), 1.0)
        self.feedback.setProgress(self.start + self.span * fraction)
        if message and message != self._last_text:
            self._last_text = message
            self.feedback.setProgressText(message)

    def is_cancelled(self) -> bool:
        return bool(self.feedback is not None and self.feedback.isCanceled())


@contextlib.contextmanager
def messages_to_feedback(feedback: QgsProcessingFeedback) -> Iterator[None]:
    """Within the block, the engine's messages of this thread (the algorithm's run) go to ``feedback``."""
    messages = core_module("messages")
    with messages.to_callback(lambda text: feedback.pushInfo(processing_message(text)), this_thread=True):
        yield


# The engine words its advice for the command line; in QGIS the same options are parameters.
_CLI_OPTIONS = {
    "sensor": "SENSOR", "bands": "BANDS", "scale": "SCALE", "offset": "OFFSET", "device": "DEVICE",
    "keep-clear": "KEEP_CLEAR", "no-keep-clear": "KEEP_CLEAR=false", "cloud-mask": "CLOUD_MASK", "cloud-mask-type": "CLOUD_MASK_TYPE",
    "cloud-mask-buffer": "CLOUD_MASK_BUFFER", "cloud-mask-mode": "CLOUD_MASK_MODE", "tile-size": "TILE_SIZE", "overlap": "OVERLAP",
    "model": "MODEL_FILE", "tta": "TTA", "reference": "REFERENCE", "resampling": "RESAMPLING",
    "cog": "COG", "score": "SCORE", "score-out": "SCORE", "uncertainty": "UNCERTAINTY",
    "cloud-threshold": "CLOUD_THRESHOLD", "no-cirrus-correction": "CIRRUS_CORRECTION=false",
    "no-cloud-shadows": "CLOUD_SHADOWS=false", "cloud-source": "CLOUD_SOURCE", "cloud-source model": "CLOUD_SOURCE=model",
}
_CLI_RE = re.compile(r"--(" + "|".join(sorted(map(re.escape, _CLI_OPTIONS), key=len, reverse=True)) + r")\b")


def processing_message(message: str) -> str:
    """'pass --bands 4,3,2' -> 'pass BANDS 4,3,2': name the Processing parameters in engine advice."""
    return _CLI_RE.sub(lambda m: _CLI_OPTIONS[m.group(1)], message)


def run_engine(function: Callable[..., Any], *args, feedback: QgsProcessingFeedback | None = None, **kwargs):
    """Call an engine function; engine errors become ``QgsProcessingException`` with their message."""
    errors = core_module("errors")
    try:
        return function(*args, **kwargs)
    except errors.Cancelled as exc:
        raise QgsProcessingException(tr(CANCELLED_MESSAGE)) from exc
    except errors.ViserError as exc:
        if feedback is not None and feedback.isCanceled():
            raise QgsProcessingException(tr(CANCELLED_MESSAGE)) from exc
        raise QgsProcessingException(processing_message(str(exc))) from exc
    except ImportError as exc:
        missing = deps.missing_modules()
        if missing:
            raise QgsProcessingException(deps.missing_message(missing)) from exc
        raise


def bundled_model_names(models_dir: Path | None = None) -> list[str]:
    """Names of the bundled models (``core.weights.list_models``: reads JSON cards, imports no torch).

    Algorithms list them in their MODEL parameter when QGIS loads the provider (on every
    qgis_process call), so this must stay cheap and must not fail.
    """
    import warnings

    try:
        from ..core import weights

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cards = weights.list_models(models_dir)
        return [card.name for card in cards if card.weights_path.exists()]
    except Exception:  # noqa: BLE001 - a broken card must not stop the provider from loading
        return []
