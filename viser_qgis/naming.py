"""Names of the layers the plugin adds: results named after the input and the dates actually used."""

from __future__ import annotations

import re

from .i18n import tr

_DATE = re.compile(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})(?!\d)")


def date_label(name: str) -> str:
    """The acquisition date in a layer name ('..._2018-04-01_64' or '..._20180401T...' -> '2018-04-01'),
    else the name itself."""
    match = _DATE.search(name)
    if match and 1 <= int(match.group(2)) <= 12 and 1 <= int(match.group(3)) <= 31:
        return "-".join(match.groups())
    return name


def result_name(input_name: str) -> str:
    return tr("{layer} cloud-free").format(layer=input_name)


def stack_result_name(names: list[str]) -> str:
    """'<reference> cloud-free (dates: 2018-03-07, 2018-04-01)': the reference first, then every date used."""
    return tr("{layer} cloud-free (dates: {dates})").format(
        layer=names[0], dates=", ".join(date_label(name) for name in names))
