"""GDAL creation options: which ones a driver (GTiff, COG) accepts, read from GDAL itself."""

from __future__ import annotations

import functools

from .i18n import tr


@functools.lru_cache(maxsize=4)
def driver_options(driver: str) -> dict[str, tuple[str, ...]]:
    """{option name: accepted values} of ``driver``'s creation options (no values = free text or number)."""
    from osgeo import gdal

    handle = gdal.GetDriverByName(driver)
    text = handle.GetMetadataItem("DMD_CREATIONOPTIONLIST") if handle is not None else None
    if not text:
        return {}
    options = {}
    # GDAL's own XML parser: [type, name, children...], type 0 = element, 1 = text, 2 = attribute.
    for node in gdal.ParseXMLString(text)[2:]:
        if node[:2] == [gdal.CXT_Element, "Option"]:
            options[_attribute(node, "name").upper()] = tuple(
                _text(child) for child in node[2:] if child[:2] == [gdal.CXT_Element, "Value"] and _text(child))
    return options


def _attribute(node: list, name: str) -> str:
    for child in node[2:]:
        if child[0] == 2 and child[1] == name:
            return _text(child)
    return ""


def _text(node: list) -> str:
    return "".join(str(child[1]) for child in node[2:] if child[0] == 1).strip()


def creation_option_problem(options: dict, driver: str) -> str | None:
    """Why ``options`` do not suit ``driver`` (the first problem, said with what to give instead), or None."""
    known = driver_options(driver)
    if not known:
        return None  # this GDAL does not list the options: let the driver judge
    what = tr("GDAL's COG driver (Cloud Optimized GeoTIFF)") if driver == "COG" else tr(
        "GDAL's {driver} driver").format(driver=driver)
    for key, value in options.items():
        name = str(key).upper()
        if name not in known:
            hint = tr(" Untick COG to write a plain GeoTIFF with it.") if driver == "COG" and name in driver_options(
                "GTiff") else ""
            return tr("{name} is not an option of {what}, which accepts {accepted}.{hint}").format(
                name=name, what=what, accepted=", ".join(sorted(known)), hint=hint)
        accepted = known[name]
        if accepted and str(value).upper() not in {v.upper() for v in accepted}:
            return tr("{name}={value} is not accepted by {what}: {name} takes {accepted}.").format(
                name=name, value=value, what=what, accepted=", ".join(accepted))
    return None
