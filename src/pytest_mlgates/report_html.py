"""``report.html``: one self-contained page per archived session, for a reviewer.

The archive writes it beside ``summary.md`` (``archive.py``).  The page holds the gate table
(criterion, run, value, threshold, status), the run's curves drawn from its log -- the
*loss* columns, the *recall* columns and every column a criterion names -- with each RED
criterion's threshold drawn as a dashed line on the curve it judged and its failing epoch
marked, and the fingerprint the verdict compares.  Nothing is fetched: CSS is inline, the
curves are inline SVG polylines drawn here (no JavaScript, no matplotlib), so the page opens
the same from a CI artifact, an e-mail or a laptop offline::

    page = render_report(run="runs/seed2", verdict="RED", criteria=criteria,
                         fingerprint="9f2c...", algorithm="sha256",
                         columns=load_columns(Path("runs/seed2"), None, None)[0])

It is bounded, whatever the run holds: at most :data:`MAX_POINTS` points per curve (min and
max of each bucket kept, so a spike stays visible), :data:`MAX_SERIES` curves per chart,
:data:`MAX_CHARTS` charts, :data:`MAX_ROWS` table rows, and :data:`MAX_PAGE` bytes in all
(past that, the curves are dropped and the page says so).  Every string that comes from the
run dir or a gate file is HTML-escaped.

A RED criterion is marked where its line says what it measured: ``<column> = <value> at
epoch N ...; needs > T`` (the shape every gate's failure line has) names the column and the
epoch, and the threshold's number is the one its threshold cell starts with.  A criterion
whose line names neither (an artifact, a key link) is in the table only.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["MAX_PAGE", "load_columns", "render_report"]

MAX_POINTS = 400
MAX_SERIES = 16
MAX_CHARTS = 8
MAX_ROWS = 2000
MAX_CELL = 600
MAX_PAGE = 2 << 20
_W, _H = 760, 300
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 190, 16, 40
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#bcbd22", "#7f7f7f", "#393b79")
_STATUS_COLORS = {"GREEN": "#1a7f37", "RED": "#cf222e", "ERROR": "#cf222e",
                  "UNVERIFIED": "#9a6700", "SKIPPED": "#6e7781"}
_X_AXES = ("epoch", "step")
_MEASURED = re.compile(r"([A-Za-z_][\w.\-/]*) = [^;]*?\bat (?:epoch|step) (-?\d+)")
_NUMBER = re.compile(r"^\s*(?:>=|<=|==|>|<|≥|≤)?\s*(-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")
_WORD = re.compile(r"[A-Za-z_][\w]*")
_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;
color:#1f2328;max-width:1100px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse;width:100%}th,td{border:1px solid #d0d7de;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#f6f8fa}
td.msg{font-size:12px;color:#57606a;word-break:break-word}
.s{font-weight:600}code{font-size:12px;word-break:break-all}
.note{color:#9a6700}svg{display:block;margin:8px 0 16px;background:#fff;border:1px solid #d0d7de}
svg text{font:11px system-ui,sans-serif;fill:#57606a}
"""


def _esc(value: Any, cap: int = MAX_CELL) -> str:
    text = "" if value is None else str(value)
    if len(text) > cap:
        text = text[: cap - 3] + "..."
    return html.escape(text, quote=True)


# --------------------------------------------------------------------------- the log


Curves = dict[str, tuple[list[float], list[float]]]


def log_curves(log: Any) -> tuple[Curves, str]:
    """Each column of a run's ``Log`` as (row numbers, values) the way checks read it (in a
    log of steps, the rows that hold the column), and the index's name (epoch or step)."""
    index = str(getattr(log, "index", "epoch") or "epoch")
    if hasattr(log, "series") and hasattr(log, "names"):
        curves = {}
        for name in log.names:
            if name in _X_AXES:
                continue
            values, labels = log.series(name)
            curves[name] = (labels.tolist(), values.tolist())
        return curves, index
    columns = dict(log.columns)
    xs = list(columns.get(index, [])) or [float(i) for i in range(len(log))]
    return {n: (xs, list(v)) for n, v in columns.items() if n not in _X_AXES}, index


def load_columns(run_path: Path, run_format: str | None,
                 section: Any) -> tuple[Curves | None, str, str | None]:
    """The run's curves and index name (:func:`log_curves`), or None and why not."""
    from pytest_mlgates.formats import open_run

    try:
        curves, index = log_curves(open_run(run_path, run_format, section).log)
        return curves, index, None
    except Exception as err:  # noqa: BLE001 - a page without curves beats no page
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return None, "epoch", f"{type(err).__name__}: {first}"[:300]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def downsample(xs: list[float], ys: list[float], limit: int = MAX_POINTS) -> list[tuple[float, float]]:
    """At most ``limit`` finite points of a curve, in order: the first and last points, and
    each bucket's lowest and highest, so a spike or a collapse survives the thinning.
    A NaN between points is a gap: it is returned as ``(x, nan)``."""
    n = min(len(xs), len(ys))
    points = [(float(xs[i]), float(ys[i]) if _finite(ys[i]) else math.nan)
              for i in range(n) if _finite(xs[i])]
    if len(points) <= limit:
        return points
    buckets = max(1, limit // 2)
    size = len(points) / buckets
    out: list[tuple[float, float]] = []
    for b in range(buckets):
        chunk = points[int(b * size): int((b + 1) * size)]
        finite = [p for p in chunk if not math.isnan(p[1])]
        if not finite:
            if chunk:
                out.append(chunk[0])
            continue
        low = min(finite, key=lambda p: p[1])
        high = max(finite, key=lambda p: p[1])
        out += sorted({low, high})
    return out[:limit]


# --------------------------------------------------------------------------- RED marks


def red_marks(criteria: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Where each RED criterion failed: ``{name, column, epoch, threshold, text}`` (column
    and epoch from its line, threshold from its threshold cell; any may be None)."""
    marks = []
    for c in criteria:
        if c.get("status") != "RED" or c.get("run_status") == "GREEN":
            continue
        message = str(c.get("message") or "")
        found = _MEASURED.search(message)
        number = _NUMBER.match(str(c.get("threshold") or ""))
        marks.append({
            "name": str(c.get("name") or ""),
            "column": found.group(1) if found else None,
            "epoch": int(found.group(2)) if found else None,
            "threshold": float(number.group(1)) if number else None,
            "text": f"{c.get('name')}: {c.get('threshold') or ''}",
        })
    return marks


def choose_charts(columns: Iterable[str],
                  criteria: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """(title, column names) of each chart: loss, recall, then the other columns a
    criterion names, one chart each."""
    names = [n for n in columns if n not in _X_AXES]
    named: set[str] = set()
    for c in criteria:
        for field in ("message", "threshold", "value", "name"):
            named.update(w for w in _WORD.findall(str(c.get(field) or "")[:MAX_CELL * 4]))
    named.update(m["column"] for m in red_marks(criteria) if m["column"])
    marked = {m["column"] for m in red_marks(criteria)}
    loss = [n for n in names if "loss" in n.lower()]
    recall = [n for n in names if "recall" in n.lower()]
    charts = []
    for title, group in (("loss", loss), ("recall", recall)):
        if len(group) > MAX_SERIES:  # the curves a RED criterion names are always drawn
            kept = [n for n in group if n in marked][:MAX_SERIES]
            kept += [n for n in group if n not in kept][:MAX_SERIES - len(kept)]
            title = f"{title} ({len(group) - len(kept)} more columns not drawn)"
            group = [n for n in group if n in kept]
        if group:
            charts.append((title, group))
    others = [n for n in names if n in named and n not in loss and n not in recall]
    others.sort(key=lambda n: n not in marked)  # a RED criterion's column first (stable)
    charts += [(n, [n]) for n in others]
    return charts[:MAX_CHARTS]


# --------------------------------------------------------------------------- SVG


def _ticks(low: float, high: float, count: int = 5, whole: bool = False) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) inside [low, high];
    ``whole``: at least 1 apart (epochs)."""
    if not high > low:
        return [low]
    raw = (high - low) / max(1, count - 1)
    if whole:
        raw = max(raw, 1.0)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step) + 1)][:count + 2]


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def svg_chart(title: str, series: Curves, marks: list[dict[str, Any]],
              points: int = MAX_POINTS, xlabel: str = "epoch") -> str:
    """One chart: each series a polyline (split at NaN), axes, a legend, and each mark's
    threshold (dashed red line) and failing epoch (vertical line and a circle)."""
    curves = {name: downsample(xs, ys, points) for name, (xs, ys) in series.items()}
    xv = [x for pts in curves.values() for x, _ in pts]
    yv = [y for pts in curves.values() for _, y in pts if not math.isnan(y)]
    yv += [m["threshold"] for m in marks if m["threshold"] is not None and _finite(m["threshold"])]
    if not xv or not yv:
        return f'<p class="note">{_esc(title)}: no finite values to draw.</p>'
    x0, x1 = min(xv), max(xv)
    y0, y1 = min(yv), max(yv)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    pad = (y1 - y0) * 0.05 or abs(y0) * 0.05 or 1.0
    y0, y1 = y0 - pad, y1 + pad
    pw, ph = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

    def px(x: float) -> float:
        return _LEFT + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return _TOP + (1 - (y - y0) / (y1 - y0)) * ph

    out = [(f'<svg width="{_W}" height="{_H}" '
            f'viewBox="0 0 {_W} {_H}" role="img" aria-label="{_esc(title)}">'),
           f'<title>{_esc(title)}</title>',
           (f'<rect x="{_LEFT}" y="{_TOP}" width="{pw}" height="{ph}" fill="none" '
            f'stroke="#d0d7de"/>')]
    for y in _ticks(y0, y1):
        out.append(f'<line x1="{_LEFT}" x2="{_LEFT + pw}" y1="{py(y):.1f}" y2="{py(y):.1f}" '
                   f'stroke="#eaeef2"/><text x="{_LEFT - 6}" y="{py(y) + 4:.1f}" '
                   f'text-anchor="end">{_fmt(y)}</text>')
    for x in _ticks(x0, x1, 6, whole=all(float(x).is_integer() for x in xv)):
        out.append(f'<text x="{px(x):.1f}" y="{_TOP + ph + 16}" text-anchor="middle">'
                   f'{_fmt(x)}</text>')
    out.append(f'<text x="{_LEFT + pw / 2:.1f}" y="{_H - 6}" text-anchor="middle">{_esc(xlabel)}</text>')
    for i, (name, pts) in enumerate(curves.items()):
        color = _COLORS[i % len(_COLORS)]
        segment: list[str] = []
        for x, y in pts + [(math.nan, math.nan)]:
            if math.isnan(y):
                if segment:
                    out.append(f'<polyline class="curve" fill="none" stroke="{color}" '
                               f'stroke-width="1.5" points="{" ".join(segment)}"/>')
                segment = []
                continue
            segment.append(f"{px(x):.1f},{py(y):.1f}")
        ly = _TOP + 12 + 16 * i
        out.append(f'<line x1="{_W - _RIGHT + 10}" x2="{_W - _RIGHT + 28}" y1="{ly - 4}" '
                   f'y2="{ly - 4}" stroke="{color}" stroke-width="2"/>'
                   f'<text x="{_W - _RIGHT + 32}" y="{ly}">{_esc(name, 28)}</text>')
    for mark in marks:
        label = _esc(mark["text"], 200)
        if mark["threshold"] is not None and _finite(mark["threshold"]):
            y = py(mark["threshold"])
            out.append(f'<line class="threshold" data-criterion="{_esc(mark["name"], 200)}" '
                       f'x1="{_LEFT}" x2="{_LEFT + pw}" y1="{y:.1f}" y2="{y:.1f}" '
                       f'stroke="#cf222e" stroke-dasharray="6 4" stroke-width="1.5">'
                       f'<title>{label}</title></line>'
                       f'<text x="{_LEFT + pw - 4}" y="{y - 4:.1f}" text-anchor="end" '
                       f'style="fill:#cf222e">{_esc(mark["text"], 60)}</text>')
        epoch = mark["epoch"]
        if epoch is not None and x0 <= epoch <= x1:
            x = px(epoch)
            out.append(f'<line class="failing-epoch" x1="{x:.1f}" x2="{x:.1f}" y1="{_TOP}" '
                       f'y2="{_TOP + ph}" stroke="#cf222e" stroke-dasharray="2 3"/>')
            xs, ys = series.get(mark["column"], ([], []))
            value = _value_at(xs, ys, epoch)
            if value is not None:
                out.append(f'<circle class="failing-epoch" cx="{x:.1f}" cy="{py(value):.1f}" '
                           f'r="5" fill="none" stroke="#cf222e" stroke-width="2">'
                           f'<title>{label} (epoch {epoch})</title></circle>')
    out.append("</svg>")
    return "\n".join(out)


def _value_at(xs: list[float], ys: list[float], epoch: int) -> float | None:
    for x, y in zip(xs, ys):
        if _finite(x) and x == epoch and _finite(y):
            return float(y)
    return None


# --------------------------------------------------------------------------- the page


def render_report(*, run: str, verdict: str, criteria: list[dict[str, Any]],
                  fingerprint: str | None, algorithm: str | None, time: str = "",
                  notes: Iterable[str] = (), columns: Curves | None = None,
                  log_problem: str | None = None, index: str = "epoch") -> str:
    """The whole page, at most :data:`MAX_PAGE` bytes (curves thinned, then dropped)."""
    notes = list(notes)
    page = ""
    for points in (MAX_POINTS, MAX_POINTS // 4, 0):
        page = _page(run, verdict, criteria, fingerprint, algorithm, time, notes, columns,
                     log_problem, points, index)
        if len(page.encode("utf-8")) <= MAX_PAGE:
            return page
    return page  # the table alone: rows and cells are capped


def _page(run: str, verdict: str, criteria: list[dict[str, Any]], fingerprint: str | None,
          algorithm: str | None, time: str, notes: list[str],
          columns: Curves | None, log_problem: str | None, points: int, index: str) -> str:
    color = _STATUS_COLORS.get(verdict, "#cf222e")
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>mlgates: {_esc(run, 200)} is {_esc(verdict)}</title>",
             f"<style>{_CSS}</style>", "</head>", "<body>",
             (f'<h1>mlgates: <code>{_esc(run, 400)}</code> is '
              f'<span class="s" style="color:{color}">{_esc(verdict)}</span></h1>'),
             (f"<p>Session {_esc(time)}. Fingerprint ({_esc(algorithm or 'none')}): "
              f'<code class="fingerprint">{_esc(fingerprint or "none: the run could not be fingerprinted")}</code></p>')]
    for note in notes:
        parts.append(f'<p class="note">{_esc(note, 2000)}</p>')
    parts += ["<h2>Gates</h2>", "<table>",
              ("<tr><th>criterion</th><th>run</th><th>value</th><th>threshold</th>"
               "<th>status</th><th>line</th></tr>")]
    for c in criteria[:MAX_ROWS]:
        status = str(c.get("status") or "")
        parts.append(
            f"<tr><td title=\"{_esc(c.get('id'), 400)}\">{_esc(c.get('name'))}</td>"
            f"<td>{_esc(c.get('run') or run, 200)}</td>"
            f"<td>{_esc(c.get('value'))}</td><td>{_esc(c.get('threshold'))}</td>"
            f'<td class="s" style="color:{_STATUS_COLORS.get(status, "#1f2328")}">'
            f"{_esc(status)}</td><td class=\"msg\">{_esc(c.get('message'))}</td></tr>")
    parts.append("</table>")
    if len(criteria) > MAX_ROWS:
        parts.append(f'<p class="note">{len(criteria) - MAX_ROWS} more criteria are not shown '
                     "here; results.json beside this page holds them all.</p>")
    parts.append("<h2>Curves</h2>")
    parts += _curves(columns, criteria, log_problem, points, index)
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def _curves(columns: Curves | None, criteria: list[dict[str, Any]],
            log_problem: str | None, points: int, index: str) -> list[str]:
    if columns is None:
        return [(f'<p class="note">No curves: the run\'s log could not be read '
                 f"({_esc(log_problem or 'no log')}).</p>")]
    if points <= 0:
        return [(f'<p class="note">No curves: with them this page would pass '
                 f"{MAX_PAGE >> 20} MiB.</p>")]
    charts = choose_charts(columns, criteria)
    if not charts:
        return ['<p class="note">No loss, recall or criterion column in the log.</p>']
    marks = red_marks(criteria)
    out = []
    for title, names in charts:
        mine = [m for m in marks if m["column"] in names]
        out.append(f"<h3>{_esc(title, 200)}</h3>")
        out.append(svg_chart(title, {n: columns[n] for n in names}, mine, points, index))
    return out
