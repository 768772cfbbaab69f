"""report.html: the Markdown report as one self-contained page a browser opens without a network.

The page is rendered from report.md itself (one source for both), with every plot embedded as a data
URI, every table sortable by a click on its header (numbers sort as numbers, intervals by their lower
end), a table's cell carrying its full text on hover, and a latency chart drawn as inline SVG whose
points show their cell, median and 95% interval on hover. No script or style is fetched: it all
lives in the file.
"""

from __future__ import annotations

import base64
import html
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.8em 0;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px;text-align:left}
th{background:#f0f0f0;cursor:pointer;user-select:none;position:sticky;top:0}th.asc:after{content:" \\25B2"}th.desc:after{content:" \\25BC"}
tr:nth-child(even) td{background:#fafafa}img{max-width:100%}code{background:#f3f3f3;padding:0 3px}
.chart circle{fill:#1f77b4}.chart circle.bad{fill:#d62728}.chart line.ci{stroke:#1f77b4;stroke-width:2}.chart text{font-size:11px}
"""

# Sorting: a click on a header sorts its table by that column (again: the other way). Cells that read
# as numbers (a leading number; an interval "a - b" by a) sort numerically, the rest as text.
SCRIPT = """
function key(t){var m=String(t).replace(/,/g,'').match(/^\\s*[-+]?\\d*\\.?\\d+(e[-+]?\\d+)?/i);return m?parseFloat(m[0]):null}
function sortBy(th){var table=th.closest('table'),i=Array.prototype.indexOf.call(th.parentNode.children,th);
 var body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows),asc=!th.classList.contains('asc');
 rows.sort(function(a,b){var x=a.cells[i].textContent,y=b.cells[i].textContent,kx=key(x),ky=key(y);
  var c=(kx!==null&&ky!==null)?kx-ky:(kx!==null?-1:(ky!==null?1:x.localeCompare(y)));return asc?c:-c});
 rows.forEach(function(r){body.appendChild(r)});
 Array.prototype.forEach.call(th.parentNode.children,function(h){h.classList.remove('asc','desc')});
 th.classList.add(asc?'asc':'desc')}
document.addEventListener('DOMContentLoaded',function(){
 document.querySelectorAll('table.sortable th').forEach(function(th){th.addEventListener('click',function(){sortBy(th)})});
 document.body.setAttribute('data-ready',String(document.querySelectorAll('table.sortable').length));
 if(location.hash==='#selftest'){var th=document.querySelector('table.sortable th:nth-child(7)');if(th){sortBy(th);sortBy(th)}
  console.error('bench-selftest: sorted descending')}});
"""


def _inline(text: str) -> str:
    """Markdown's inline marks this report uses: **bold**, `code`."""
    out = html.escape(text, quote=False)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


def _cells(line: str) -> list[str]:
    parts = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [p.strip().replace("\\|", "|") for p in parts]


def _table(lines: list[str]) -> str:
    header, rows = _cells(lines[0]), [_cells(x) for x in lines[2:]]
    head = "".join(f"<th>{_inline(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td title="{html.escape(c)}">{_inline(c)}</td>' for c in r) + "</tr>" for r in rows)
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _image(alt: str, src: str, folder: Path) -> str:
    path = folder / src
    if not path.is_file():
        return f"<p><i>missing plot: {html.escape(src)}</i></p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def markdown_to_html(md: str, folder: Path) -> str:
    """The subset of Markdown bench's reports are written in: headings, paragraphs, bullet lists,
    pipe tables, images (embedded from `folder`), bold and code spans."""
    out: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.startswith("|") and i + 1 < len(lines) and re.match(r"^\|[-:| ]+\|$", lines[i + 1].strip()):
            block = [line]
            while i + 1 < len(lines) and lines[i + 1].startswith("|"):
                i += 1
                block.append(lines[i])
            out.append(_table(block))
        elif m := re.match(r"^!\[(.*?)\]\((.+?)\)$", line.strip()):
            out.append(_image(m.group(1), m.group(2), folder))
        elif line.startswith("- "):
            items = [line[2:]]
            while i + 1 < len(lines) and lines[i + 1].startswith("- "):
                i += 1
                items.append(lines[i][2:])
            out.append("<ul>" + "".join(f"<li>{_inline(x)}</li>" for x in items) + "</ul>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    return "\n".join(out)


def latency_chart(cells: pd.DataFrame) -> str:
    """Median latency per timed cell, log scale, with its 95% interval; each point names its cell,
    median and interval on hover (an SVG <title>). Red: outputs not validated or drifted."""
    from bench.registry import scenario_flag

    # LoadGen's p50 includes queueing: its tables say so, this axis would not
    ok = cells[~cells["scenario"].map(lambda name: bool(scenario_flag(name, "loadgen")))]
    ok = ok[(ok["status"] == "ok") & ok["p50_ms"].notna()]
    rows = ok.to_dict("records")
    values = [float(v) for r in rows for v in (r["p50_ms"], r.get("p50_ci_low_ms"), r.get("p50_ci_high_ms")) if pd.notna(v) and float(v) > 0]
    if not values:
        return ""
    w, left, step = 1100, 330, 22
    h = 40 + step * len(rows)
    a, b = math.log10(min(values)) - 0.1, math.log10(max(values)) + 0.1
    x = lambda v: left + (w - left - 20) * (math.log10(max(float(v), 1e-6)) - a) / (b - a)  # noqa: E731
    parts = [f'<svg class="chart" width="{w}" height="{h}" role="img" aria-label="latency per cell">']
    for k, r in enumerate(rows):
        y = 25 + step * k
        name = f"{r['model']} {r['backend']} {r['precision']} b{r['batch_size']}" + (f" x{r['streams']}" if r.get("streams", 1) != 1 else "")
        c_lo, c_hi = r.get("p50_ci_low_ms"), r.get("p50_ci_high_ms")
        bad = not bool(r.get("validated")) or r.get("accuracy_ok") is False
        tip = f"{name}: p50 {float(r['p50_ms']):.4g} ms" + (f", 95% interval {float(c_lo):.4g} - {float(c_hi):.4g} ms"
                                                            if pd.notna(c_lo) and pd.notna(c_hi) else "")
        parts.append(f'<text x="{left - 8}" y="{y + 4}" text-anchor="end">{html.escape(name)}</text>')
        if pd.notna(c_lo) and pd.notna(c_hi):
            parts.append(f'<line class="ci" x1="{x(c_lo):.1f}" x2="{x(c_hi):.1f}" y1="{y}" y2="{y}"><title>{html.escape(tip)}</title></line>')
        parts.append(f'<circle class="{"bad" if bad else ""}" cx="{x(r["p50_ms"]):.1f}" cy="{y}" r="5"><title>{html.escape(tip)}</title></circle>')
    for e in range(math.ceil(a), math.floor(b) + 1):
        parts.append(f'<text x="{x(10 ** e):.1f}" y="{h - 4}" text-anchor="middle">{10 ** e:g} ms</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def write_html(md: str, cells: pd.DataFrame, folder: Path) -> Path:
    """report.html beside report.md in `folder` (whose plots it embeds)."""
    from bench import atomic

    title = md.splitlines()[0].lstrip("# ").strip() if md else "bench report"
    chart = latency_chart(cells)
    body = markdown_to_html(md, folder)
    if chart:  # the interactive chart goes first under the results
        body = body.replace("<h2>Results</h2>", "<h2>Results</h2>\n<h3>Latency per cell (hover a point)</h3>\n" + chart, 1)
    page = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style><script>{SCRIPT}</script></head><body>\n{body}\n</body></html>\n")
    path = folder / "report.html"
    atomic.write_text(path, page)
    return path
