"""The HTML report of viser:evaluate: what was compared, how, and one table per region (all, cloudy
and clear pixels) with the cloud-removal result beside the cloudy input as a baseline."""

from __future__ import annotations

import html
import math
from pathlib import Path

from .i18n import tr

STYLE = (
    "body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.4em 0 1.2em}"
    "th,td{border:1px solid #bbb;padding:.3em .7em;text-align:right}th:first-child,td:first-child"
    "{text-align:left}th{background:#eee}caption{text-align:left;font-weight:bold;padding:.3em 0}"
    ".note{color:#555;font-size:90%}"
)


def number(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return tr("n/a")
    return f"{float(value):.{digits}f}"


def scaling_text(rule) -> str:
    """[scale, offset, why] -> 'reflectance = DN x 0.0001 + 0 (why)'."""
    if not isinstance(rule, (list, tuple)) or len(rule) < 2:
        return html.escape(str(rule))
    text = tr("reflectance = DN x {scale} + {offset}").format(scale=f"{float(rule[0]):g}",
                                                            offset=f"{float(rule[1]):g}")
    return html.escape(text + (f" ({rule[2]})" if len(rule) > 2 and rule[2] else ""))


def region_figures(values: dict, region: str) -> dict:
    """PSNR, SSIM, MAE and pixel count of one region ('all', 'cloudy', 'clear') of a metrics dict."""
    if region == "all":
        return {"psnr": values.get("psnr"), "ssim": values.get("ssim"), "mae": values.get("mae"),
                "pixels": values.get("pixels")}
    return {"psnr": values.get(f"psnr_{region}"), "ssim": None, "mae": values.get(f"mae_{region}"),
            "pixels": values.get(f"pixels_{region}")}


def region_table(title: str, region: str, result: dict, baseline: dict | None) -> str:
    rows = [(tr("Cloud-removal result"), region_figures(result, region))]
    if baseline is not None:
        base = region_figures(baseline, region)
        rows.append((tr("Cloudy input (baseline)"), base))
        rows.append((tr("Gain over the cloudy input"), gain(rows[0][1], base)))
    head = "".join(f"<th>{html.escape(h)}</th>" for h in (
        "", tr("PSNR (dB, higher is better)"), tr("SSIM (higher is better)"), tr("MAE (lower is better)"),
        tr("Pixels")))
    body = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{number(f['psnr'], 2)}</td><td>{number(f['ssim'])}</td>"
        f"<td>{number(f['mae'])}</td><td>{'' if f['pixels'] is None else int(f['pixels'])}</td></tr>"
        for name, f in rows)
    return f"<table><caption>{html.escape(title)}</caption><tr>{head}</tr>{body}</table>"


def gain(result: dict, baseline: dict) -> dict:
    """Result minus baseline for PSNR and SSIM, baseline minus result for MAE: positive = better."""
    def diff(a, b):
        if a is None or b is None or math.isnan(float(a)) or math.isnan(float(b)):
            return None
        return float(a) - float(b)

    return {"psnr": diff(result["psnr"], baseline["psnr"]), "ssim": diff(result["ssim"], baseline["ssim"]),
            "mae": diff(baseline["mae"], result["mae"]), "pixels": None}


def per_band_table(values: dict) -> str:
    bands = values.get("per_band") or []
    if not bands:
        return ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in (
        tr("Band (result)"), tr("Band (reference)"), tr("PSNR (dB)"), tr("SSIM"), tr("MAE")))
    body = "".join(
        f"<tr><td>{b.get('band')}</td><td>{b.get('reference_band', b.get('band'))}</td>"
        f"<td>{number(b.get('psnr'), 2)}</td><td>{number(b.get('ssim'))}</td><td>{number(b.get('mae'))}</td></tr>"
        for b in bands)
    return f"<table><caption>{html.escape(tr('Per band (all pixels)'))}</caption><tr>{head}</tr>{body}</table>"


def inputs_table(files: dict, values: dict, baseline: dict | None) -> str:
    rows = [(tr("Cloud-removal result"), files["prediction"]), (tr("Clear reference"), files["reference"])]
    if files.get("cloudy"):
        rows.append((tr("Cloudy input (baseline)"), files["cloudy"]))
    if files.get("mask"):
        rows.append((tr("Cloud mask (non-zero = cloud)"), files["mask"]))
    rows.append((tr("Protocol"), f"{values.get('protocol')}: {values.get('protocol_description', '')}"))
    scaling = values.get("scaling") or {}
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    for key, label in (("prediction", tr("Scaling of the result")), ("reference", tr("Scaling of the reference"))):
        if key in scaling:
            body += f"<tr><td>{html.escape(label)}</td><td>{scaling_text(scaling[key])}</td></tr>"
    if baseline is not None and "prediction" in (baseline.get("scaling") or {}):
        body += (f"<tr><td>{html.escape(tr('Scaling of the cloudy input'))}</td>"
                 f"<td>{scaling_text(baseline['scaling']['prediction'])}</td></tr>")
    return f"<table><caption>{html.escape(tr('What was compared'))}</caption>{body}</table>"


def write_report(path: str | Path, files: dict, values: dict, baseline: dict | None = None) -> None:
    """``files``: prediction, reference and optionally cloudy and mask paths; ``values`` and ``baseline``:
    ``core.metrics.evaluate_rasters`` of the result and of the cloudy input against the reference."""
    tables = [region_table(tr("All pixels"), "all", values, baseline)]
    if "pixels_cloudy" in values:
        tables.append(region_table(tr("Cloudy pixels (where the mask is non-zero)"), "cloudy", values, baseline))
        tables.append(region_table(tr("Clear pixels"), "clear", values, baseline))
        note = tr("SSIM is a windowed measure and is given for the whole image only.")
    else:
        note = tr("Give a cloud mask (MASK) to see the cloudy and the clear pixels separately.")
    if baseline is None:
        note += " " + tr("Give the cloudy input (CLOUDY) to see how much the cloud removal gained over it.")
    title = html.escape(tr("VISER-CR evaluation"))
    text = (
        f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title><style>{STYLE}</style>"
        f"</head><body><h2>{title}</h2>{inputs_table(files, values, baseline)}{''.join(tables)}"
        f"<p class=\"note\">{html.escape(note)}</p>{per_band_table(values)}</body></html>\n"
    )
    Path(path).write_text(text, encoding="utf-8")
