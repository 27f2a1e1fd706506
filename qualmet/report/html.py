"""HTML building blocks: escaping, number formatting, tables, tiles, the page shell with the CSS and
JS inlined (so ``index.html`` needs nothing but its ``assets/`` folder)."""
from __future__ import annotations

import datetime as _dt
import json
import math
from html import escape
from importlib import resources
from typing import Any, Iterable, Sequence

import numpy as np

from .. import __version__


def esc(v: Any) -> str:
    return escape("" if v is None else str(v), quote=True)


def num(v: Any, digits: int = 3) -> str:
    """A number for a human: NaN/None as an en dash, integers with thousands separators, floats to
    ``digits`` significant digits (scientific notation only for very small or large values)."""
    if v is None:
        return "–"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return esc(v)
    if math.isnan(f):
        return "–"
    a = abs(f)
    if a == 0:
        return "0"
    if a < 1e-3 or a >= 1e6:
        return f"{f:.2e}"
    if a >= 10 ** digits:
        return f"{f:,.0f}"
    return f"{f:.{digits}g}"


def seconds(s: float | None) -> str:
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "–"
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    return f"{s / 60:.1f} min"


def json_script(element_id: str, obj: Any) -> str:
    """Inline JSON data: a <script type=application/json> block that cannot be closed early."""
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="{esc(element_id)}">{text}</script>'


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], num_cols: Iterable[int] = (), cls: str = "",
          raw: bool = False, row_cls: Sequence[str] | None = None) -> str:
    """A table; cells are escaped unless ``raw`` (then they are trusted HTML built by this package)."""
    nc = set(num_cols)
    h = "".join(f'<th class="{"num" if i in nc else ""}">{esc(x)}</th>' for i, x in enumerate(headers))
    body = []
    for r_i, r in enumerate(rows):
        rc = f' class="{row_cls[r_i]}"' if row_cls and row_cls[r_i] else ""
        cells = "".join(f'<td class="{"num" if i in nc else ""}">{c if raw else esc(c)}</td>' for i, c in enumerate(r))
        body.append(f"<tr{rc}>{cells}</tr>")
    return (f'<div class="tablewrap"><table class="{cls}"><thead><tr>{h}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def tile(label: str, value: str, sub: str = "", cls: str = "") -> str:
    return (f'<div class="tile {cls}"><div class="label">{esc(label)}</div><div class="value">{value}</div>'
            f'<div class="sub">{sub}</div></div>')


def img(src: str, alt: str, cls: str = "plot", lazy: bool = True, extra: str = "") -> str:
    return f'<img class="{cls}" src="{esc(src)}" alt="{esc(alt)}"{" loading=lazy" if lazy else ""}{extra}>'


def section(sid: str, number: int, title: str, body: str, lead: str = "") -> str:
    lead_html = f'<p class="lead">{lead}</p>' if lead else ""
    return (f'<section class="report-section" id="{esc(sid)}"><h2><span class="num">{number}</span>{esc(title)}</h2>'
            f"{lead_html}{body}</section>")


def _static(name: str) -> str:
    return resources.files("qualmet.report").joinpath("static", name).read_text(encoding="utf-8")


def page(title: str, subtitle: str, sections: list[tuple[str, str, str]]) -> str:
    """The whole document: a sticky bar linking every section, then the sections (id, nav label, html)."""
    nav = "".join(f'<a href="#{esc(sid)}">{esc(label)}</a>' for sid, label, _ in sections)
    body = "\n".join(h for _, _, h in sections)
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="qualmet {esc(__version__)}">
<title>{esc(title)}</title>
<style>
{_static("report.css")}
</style>
</head>
<body>
<div class="topbar"><div class="inner"><div class="brand">qualmet <span>report</span></div><nav>{nav}</nav></div></div>
<main>
<header class="hero"><h1>{esc(title)}</h1><p>{subtitle}</p></header>
{body}
<footer>Written by qualmet {esc(__version__)} on {esc(stamp)}. Self-contained: opens from disk, fetches nothing.</footer>
</main>
<div class="lightbox" id="lightbox" role="dialog" aria-label="enlarged frame"><figure><img alt=""><figcaption></figcaption></figure></div>
<script>
{_static("report.js")}
</script>
</body>
</html>
"""
