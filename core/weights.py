"""Bundled models: model cards (JSON) beside safetensors weights, a registry, safe loading.

A model is two files with the same stem in a models folder (default ``resources/models/``):
``<name>.safetensors`` (the state dict; never pickle) and ``<name>.json`` (the ``ModelCard``: the
architecture, the bands the model expects, input scaling, tile size, training data, metrics, sha256).
Loading checks the checksum, the architecture and every tensor; any problem is a ``WeightsError``
that names the file and says what to do.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .errors import WeightsError

__all__ = [
    "ModelCard",
    "DEFAULT_MODELS_DIR",
    "list_models",
    "find_model",
    "select_model",
    "load_model",
    "save_model",
    "file_sha256",
]

DEFAULT_MODELS_DIR = Path(__file__).resolve().parent.parent / "resources" / "models"

_FIX = "re-install the plugin, or re-export the model with viser-cr-export"


@dataclass
class ModelCard:
    """What a weights file is and how to use it. Serialised as the JSON card beside the weights."""

    name: str
    weights: str  # file name of the safetensors file, relative to the card's folder
    sha256: str  # "sha256:<hex>" (the prefix keeps secret scanners from flagging a bare hex string)
    architecture: dict
    bands: list[str]  # band names in the model's input order, e.g. ["red", "green", "blue", "nir"]
    num_frames: int = 1
    input_scaling: dict = field(
        default_factory=lambda: {"unit": "reflectance", "scale": 1.0, "offset": 0.0, "range": [0.0, 1.0]}
    )
    tile_size: int = 256
    overlap: int = 32
    description: str = ""
    training_data: str = ""
    metrics: dict = field(default_factory=dict)
    license: str = "GPL-2.0-or-later"
    dtype: str = "float32"  # storage dtype of the weights file (float32 or float16)
    priority: int = 0  # select_model prefers higher among equally good fits
    extra: dict = field(default_factory=dict)  # unknown card keys, kept for round-trips
    card_path: Path | None = field(default=None, compare=False, repr=False)  # where it was read from

    @property
    def dates_per_tile(self) -> int | None:
        """How many dates the model takes per tile: ``num_frames``, or any number (None) for a stack model with
        ``all_dates`` (``ViserCR.dates_per_tile``)."""
        return None if self.architecture.get("all_dates") else int(self.num_frames)

    # -- JSON ------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        data = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("extra", "card_path")
        }
        data.update(self.extra)
        return json.loads(json.dumps(data))  # deep copy, and proof that it is JSON-serialisable

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict, card_path: Path | None = None) -> ModelCard:
        where = str(card_path) if card_path else "model card"
        if not isinstance(data, dict):
            raise WeightsError(f"{where}: not a model card (expected a JSON object); {_FIX}")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "card_path"}
        missing = [k for k in ("name", "weights", "sha256", "architecture", "bands") if k not in data]
        if missing:
            raise WeightsError(f"{where}: model card lacks {', '.join(missing)}; {_FIX}")
        if not isinstance(data["architecture"], dict) or not isinstance(data["bands"], list):
            raise WeightsError(f"{where}: 'architecture' must be an object and 'bands' a list; {_FIX}")
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**kwargs, extra=extra, card_path=card_path)

    @classmethod
    def from_json(cls, text: str, card_path: Path | None = None) -> ModelCard:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise WeightsError(f"{card_path or 'model card'}: not valid JSON ({exc}); {_FIX}") from exc
        return cls.from_dict(data, card_path)

    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise WeightsError(f"model card {path} does not exist; check the path or {_FIX}") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise WeightsError(f"model card {path} cannot be read ({exc}); {_FIX}") from exc
        return cls.from_json(text, card_path=path.resolve())

    def save(self, path: str | Path) -> None:
        path = Path(path)
        atomic_write(path, self.to_json().encode("utf-8"))
        self.card_path = path.resolve()

    @property
    def weights_path(self) -> Path:
        """The safetensors file, resolved against the card's folder."""
        weights = Path(self.weights)
        if weights.is_absolute() or self.card_path is None:
            return weights
        return self.card_path.parent / weights


# -- files -----------------------------------------------------------------------------------------
def _bare_hex(checksum: str) -> str:
    """The hex digest of a card's checksum, written "sha256:<hex>" (older cards: bare hex)."""
    return str(checksum).removeprefix("sha256:").lower()


def sha256_mismatch(data: bytes, checksum: str) -> str | None:
    """None when ``data`` has the card's ``checksum``; else what was found instead, for the error message."""
    digest = hashlib.sha256(data).hexdigest()
    if digest == _bare_hex(checksum):
        return None
    return f"corrupt, truncated or replaced: {digest[:12]}... instead of {_bare_hex(checksum)[:12]}..."


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: never a half-written file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def canonical_safetensors(data: bytes) -> bytes:
    """``data`` (a safetensors file) with its JSON header's keys sorted: safetensors writes the metadata from a hash
    map, in another order on every save, so the same tensors would get another sha256 each export. The sorted
    header has the same length (same keys and values), padded with spaces as the format allows; the tensors'
    offsets are relative to the header's end, so nothing else moves."""
    size = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8:8 + size]), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    header = header.encode()  # UTF-8 and compact, as safetensors writes it: the same length, only the order differs
    if len(header) > size:  # a writer that escaped what this does not: keep its file as it is
        return data
    return data[:8] + header.ljust(size, b" ") + data[8 + size:]


def _models_dir(models_dir) -> Path:
    return Path(models_dir) if models_dir is not None else DEFAULT_MODELS_DIR


# -- registry --------------------------------------------------------------------------------------
def list_models(models_dir: str | Path | None = None) -> list[ModelCard]:
    """The model cards in ``models_dir`` (default ``resources/models/``), sorted by name.

    Unreadable cards are skipped with a warning, so one broken file cannot hide the others.
    """
    directory = _models_dir(models_dir)
    if not directory.is_dir():
        return []
    cards = []
    for path in sorted(directory.glob("*.json")):
        try:
            cards.append(ModelCard.load(path))
        except WeightsError as exc:
            warnings.warn(str(exc), stacklevel=2)
    return sorted(cards, key=lambda c: c.name)


def find_model(name_or_path, models_dir: str | Path | None = None) -> ModelCard:
    """A card by registry name, by card ``.json`` path, or by ``.safetensors`` path (card beside it)."""
    if isinstance(name_or_path, ModelCard):
        return name_or_path
    text = str(name_or_path)
    path = Path(text).expanduser()
    looks_like_path = path.suffix in (".json", ".safetensors") or os.sep in text or "/" in text
    if looks_like_path:
        if path.suffix == ".safetensors":
            card_path = path.with_suffix(".json")
            if not path.exists():
                raise WeightsError(f"weights file {path} does not exist; check the path")
            if not card_path.exists():
                raise WeightsError(
                    f"weights file {path} has no model card {card_path.name} beside it; "
                    "keep the .json card that was exported with the weights"
                )
            return ModelCard.load(card_path)
        if path.suffix == ".json" or path.is_file():
            return ModelCard.load(path)
        if path.with_suffix(".json").exists():
            return ModelCard.load(path.with_suffix(".json"))
        raise WeightsError(f"model {text} not found: no such card or weights file")
    cards = list_models(models_dir)
    for card in cards:
        if card.name == text or (card.card_path is not None and card.card_path.stem == text):
            return card
    names = ", ".join(c.name for c in cards) or "none"
    raise WeightsError(
        f"no model named {text!r} in {_models_dir(models_dir)} (available: {names}); "
        "give a bundled name or a path to a .json card or .safetensors file"
    )


def select_model(bands, num_frames: int = 1, models_dir: str | Path | None = None) -> ModelCard:
    """The bundled model to use for an input offering these band names and this many dates.

    A model fits when all its bands are among ``bands`` (case-insensitive). Among those: a model made
    for exactly ``num_frames`` dates first, then one that accepts more dates (it can use them all),
    then the one using the most dates; then the one using the most bands; then card ``priority``.
    """
    offered = {str(b).lower() for b in bands}
    cards = list_models(models_dir)
    fitting = [c for c in cards if {str(b).lower() for b in c.bands} <= offered]
    if not fitting:
        known = "; ".join(f"{c.name}: {', '.join(c.bands)}" for c in cards) or "no models installed"
        raise WeightsError(
            f"no model in {_models_dir(models_dir)} fits an input with bands {', '.join(map(str, bands)) or 'none'} "
            f"({known}); select the bands a model needs (e.g. --bands), or choose a model explicitly"
        )

    def rank(card: ModelCard):
        frames = card.num_frames
        if frames == num_frames:
            frame_rank = (0, 0)
        elif frames > num_frames:
            frame_rank = (1, frames)
        else:
            frame_rank = (2, -frames)
        return (frame_rank, -len(card.bands), -card.priority, card.name)

    return min(fitting, key=rank)


def _header_metadata(data: bytes) -> dict:
    """The ``__metadata__`` of a safetensors buffer (a JSON header after an 8-byte length)."""
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length].decode("utf-8"))
    return header.get("__metadata__") or {}


# -- loading and saving ----------------------------------------------------------------------------
def load_model(card_or_name, device="cpu", models_dir: str | Path | None = None):
    """Load a model: ``(ViserCR in eval mode on device, ModelCard)``.

    Checks that the weights file exists, that its sha256 matches the card, that the card's architecture
    can be built, and that the file holds exactly that architecture's tensors (strict).
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    from .model import ViserCR

    card = find_model(card_or_name, models_dir)
    path = card.weights_path
    if not path.is_file():
        raise WeightsError(f"weights file {path} (model {card.name!r}) is missing; {_FIX}")
    data = path.read_bytes()
    mismatch = sha256_mismatch(data, card.sha256)
    if mismatch:
        raise WeightsError(f"weights file {path} does not match its card's sha256 ({mismatch}); {_FIX}")
    try:
        state = load_safetensors(data)
        stored_arch = _header_metadata(data).get("architecture")
    except (SafetensorError, ValueError, RuntimeError, OSError) as exc:
        raise WeightsError(f"weights file {path} is not a readable safetensors file ({exc}); {_FIX}") from exc
    if stored_arch is not None and json.loads(stored_arch) != json.loads(json.dumps(card.architecture)):
        raise WeightsError(
            f"weights file {path} was saved for another architecture than its card {card.card_path or card.name} "
            f"describes; keep each .safetensors with the .json card exported with it"
        )
    try:
        model = ViserCR(**card.architecture)
    except (TypeError, ValueError) as exc:
        raise WeightsError(
            f"model card {card.card_path or card.name} describes an architecture this version cannot build "
            f"({exc}); update the plugin or use a matching card"
        ) from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise WeightsError(
            f"weights file {path} does not fit the architecture in its card (another architecture?): "
            f"{detail[:400]}; {_FIX}"
        ) from exc
    try:
        model = model.to(torch.device(device))
    except (RuntimeError, AssertionError) as exc:
        from .errors import DeviceError

        raise DeviceError(f"cannot move model {card.name!r} to device {device!r}: {exc}") from exc
    return model.eval(), card


def save_model(model, path: str | Path, half: bool = False, **card_fields) -> ModelCard:
    """Write ``<path>.safetensors`` and ``<path>.json`` (the card, with the file's sha256).

    ``half=True`` stores floating tensors as float16 (half the size; loading restores float32).
    ``card_fields`` are ``ModelCard`` fields (``name``, ``bands``, ``tile_size``, ``metrics``, ...);
    ``architecture`` and ``num_frames`` default to the model's.
    """
    import torch
    from safetensors.torch import save as save_safetensors

    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    if not path.parent.is_dir():
        raise WeightsError(f"cannot save model to {path}: folder {path.parent} does not exist")
    weights_path = path.parent / f"{path.name}.safetensors"
    card_path = path.parent / f"{path.name}.json"

    state = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu")
        if half and tensor.is_floating_point():
            tensor = tensor.to(torch.float16)
        state[key] = tensor.contiguous().clone()
    arch = card_fields.pop("architecture", None) or model.arch
    name = card_fields.pop("name", path.name)
    bands = card_fields.pop("bands", None) or [f"band{i + 1}" for i in range(arch.get("in_bands", 0))]
    metadata = {"format": "viser-cr", "name": name, "architecture": json.dumps(arch, sort_keys=True)}
    data = canonical_safetensors(save_safetensors(state, metadata=metadata))
    atomic_write(weights_path, data)

    known = {f.name for f in dataclasses.fields(ModelCard)}
    extra = {k: card_fields.pop(k) for k in list(card_fields) if k not in known}
    card = ModelCard(
        name=name,
        weights=weights_path.name,
        sha256="sha256:" + hashlib.sha256(data).hexdigest(),
        architecture=arch,
        bands=list(bands),
        num_frames=int(card_fields.pop("num_frames", arch.get("num_frames", 1))),
        dtype="float16" if half else "float32",
        **card_fields,
    )
    card.extra.update(extra)
    card.save(card_path)
    return card
