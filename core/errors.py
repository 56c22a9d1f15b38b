"""Errors of the engine. Every message says what was wrong and what to do about it.

The CLI maps each class to an exit code; the QGIS adapter turns them into QgsProcessingException.
"""


class ViserError(Exception):
    """Base class: a problem the user can fix, with a message that says how."""

    exit_code = 1


class InputError(ViserError):
    """A raster, band selection, sensor or parameter that cannot be used."""

    exit_code = 2


class WeightsError(ViserError):
    """A weights file or model card that is missing, corrupt or of another architecture."""

    exit_code = 3


class DeviceError(ViserError):
    """An unknown or unavailable compute device."""

    exit_code = 4


class OutputError(ViserError):
    """An output path that cannot be written (missing folder, read-only, same as the input)."""

    exit_code = 5


class DependencyError(ViserError):
    """A Python package the engine needs is not installed."""

    exit_code = 6


class Cancelled(ViserError):
    """The user cancelled the run; nothing was written."""

    exit_code = 130
