"""The report's charts as inline SVG: axes with round-number ticks, gridlines, axis labels, legends.

Each chart returns a whole `<figure>` as `markupsafe.Markup`, so the template inserts it as it is. Every text
the charts draw (titles, category and series names, axis labels) may come from the run's inputs, so it is
escaped here; a `note` given as Markup (a template's `{% set %}` block) keeps its markup.
"""
from __future__ import annotations

import math
from collections import Counter

from markupsafe import Markup, escape

from .filters import number, tick

PALETTE = {"viral": "#d62728", "host": "#1f77b4"}
OTHER_COLOR = "#6b7280"
BAR_COLOR = "#4c72b0"


def color(label: str) -> str:
    """A label's colour, the same in every chart, so viral and host read alike across the page."""
    return PALETTE.get(label, OTHER_COLOR)


def group_colors(group_label: dict) -> dict:
    """{group: colour of its label}: bars per group coloured by what the group holds."""
    return {group: color(label) for group, label in group_label.items()}


def label_legend(labels) -> dict:
    """{label: colour} for each distinct label, sorted: the legend of charts coloured by label."""
    return {label: color(label) for label in sorted(set(labels))}


def _text(value) -> str:
    """Text for SVG content or attributes: inputs can hold `<`, `&` or quotes."""
    return str(escape(value))


def nice_ticks(lo: float, hi: float, target: int = 5, integer: bool = False) -> list[float]:
    """Round-number ticks (1, 2, 2.5 or 5 × 10^k apart; whole numbers with `integer`) whose first is <= lo
    and last >= hi."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        lo, hi = 0.0, 1.0
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(1, target)
    magnitude = 10 ** math.floor(math.log10(raw))
    steps = [m * magnitude for m in (1, 2, 2.5, 5, 10)]
    if integer:
        steps = [max(1, round(x)) for x in steps if x >= 1 and float(x).is_integer()] or [1]
    step = next((x for x in steps if x >= raw), steps[-1])
    first = math.floor(lo / step + 1e-9) * step
    ticks = []
    k = 0
    while True:
        value = first + k * step
        ticks.append(round(value, 12))
        if value >= hi - 1e-9 * step:
            return ticks
        k += 1


def _svg(width: int, height: int, body: str, title: str) -> str:
    """The title doubles as the accessible name: screen readers and tooltips get what the heading says."""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{_text(title)}"><title>{_text(title)}</title>'
            f'{body}</svg>')


def _figure(title: str, svg: str, note: str = "") -> Markup:
    note_html = f"<p class='note'>{escape(note)}</p>" if note else ""
    return Markup(f"<figure class='plot'><h3>{_text(title)}</h3>{svg}{note_html}</figure>")


def no_data(title: str, why: str) -> Markup:
    """A chart's place kept, with the reason it is empty: a missing figure would look like a broken page."""
    return Markup(f"<figure class='plot empty'><h3>{_text(title)}</h3><p class='note'>{_text(why)}</p></figure>")


def legend(entries: dict, right: float, y: float) -> str:
    """Swatches and names ({name: colour}) right-aligned at `right`, on one line at height `y`."""
    parts, x = [], right
    for name, fill in reversed(list(entries.items())):
        width = 7 * len(name) + 22
        x -= width
        parts.append(f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="11" height="11" rx="2" fill="{_text(fill)}"/>'
                     f'<text x="{x + 15:.1f}" y="{y:.1f}" class="legend">{_text(name)}</text>')
    return "".join(parts)


class _Axes:
    """A plotting area inside margins, mapping data to pixels; draws gridlines, ticks and axis labels."""

    def __init__(self, width, height, xticks, yticks, left=64, right=18, top=30, bottom=48):
        self.width, self.height = width, height
        self.x0, self.x1, self.y0, self.y1 = left, width - right, top, height - bottom
        self.xticks, self.yticks = xticks, yticks

    def sx(self, x):
        lo, hi = self.xticks[0], self.xticks[-1]
        return self.x0 + (x - lo) / ((hi - lo) or 1) * (self.x1 - self.x0)

    def sy(self, y):
        lo, hi = self.yticks[0], self.yticks[-1]
        return self.y1 - (y - lo) / ((hi - lo) or 1) * (self.y1 - self.y0)

    def frame(self, x_label: str, y_label: str) -> str:
        parts = []
        for t in self.yticks:
            y = self.sy(t)
            parts.append(f'<line x1="{self.x0}" y1="{y:.1f}" x2="{self.x1}" y2="{y:.1f}" class="grid"/>'
                         f'<text x="{self.x0 - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{tick(t)}</text>')
        for t in self.xticks:
            x = self.sx(t)
            parts.append(f'<line x1="{x:.1f}" y1="{self.y1}" x2="{x:.1f}" y2="{self.y1 + 4}" class="axis"/>'
                         f'<text x="{x:.1f}" y="{self.y1 + 17}" class="tick" text-anchor="middle">{tick(t)}</text>')
        parts.append(f'<line x1="{self.x0}" y1="{self.y1}" x2="{self.x1}" y2="{self.y1}" class="axis"/>'
                     f'<line x1="{self.x0}" y1="{self.y0}" x2="{self.x0}" y2="{self.y1}" class="axis"/>')
        parts.append(f'<text x="{(self.x0 + self.x1) / 2:.1f}" y="{self.height - 8}" class="label" '
                     f'text-anchor="middle">{_text(x_label)}</text>')
        cy = (self.y0 + self.y1) / 2
        parts.append(f'<text x="14" y="{cy:.1f}" class="label" text-anchor="middle" '
                     f'transform="rotate(-90 14 {cy:.1f})">{_text(y_label)}</text>')
        return "".join(parts)


def bar_chart(values: dict, title: str, colors: dict | None = None, value_label: str = "",
              legend_entries: dict | None = None, note: str = "", width: int = 580) -> Markup:
    """Horizontal bars, one row per category (long names stay readable), value printed at each bar's end.

    `values` maps category -> number, or category -> {series: number} for grouped bars (series
    coloured by `colors[series]`); otherwise bars are coloured by `colors[category]`.
    """
    if not values:
        return no_data(title, "No data.")
    grouped = any(isinstance(v, dict) for v in values.values())
    rows = {k: (v if isinstance(v, dict) else {"": v}) for k, v in values.items()}
    series = list(dict.fromkeys(s for v in rows.values() for s in v))
    bar_h = 14 if grouped else 18
    row_h = bar_h * len(series) + 10
    longest = max(len(str(k)) for k in rows)
    left = min(200, 16 + 6.6 * min(longest, 28))
    top, bottom = 30, 48
    height = int(top + bottom + row_h * len(rows))
    top_value = max((v for r in rows.values() for v in r.values()), default=0)
    whole = all(isinstance(v, int) for r in rows.values() for v in r.values())
    # Room after the longest bar for its printed value.
    label_px = 6.2 * max(len(number(v)) for r in rows.values() for v in r.values()) + 8
    headroom = 1 + label_px / max(1.0, width - left - 24 - label_px)
    axes = _Axes(width, height, nice_ticks(0, top_value * headroom or 1, integer=whole), [0, 1], left=left, right=24,
                 top=top, bottom=bottom)
    parts = []
    for t in axes.xticks[1:]:
        parts.append(f'<line x1="{axes.sx(t):.1f}" y1="{top}" x2="{axes.sx(t):.1f}" y2="{axes.y1}" class="grid"/>')
    for k, (name, by_series) in enumerate(rows.items()):
        y = top + k * row_h + 5
        # Cut before escaping, so an entity is never cut in half.
        label = str(name) if len(str(name)) <= 28 else str(name)[:27] + "…"
        parts.append(f'<text x="{left - 8:.1f}" y="{y + row_h / 2 + 0:.1f}" class="tick" text-anchor="end">'
                     f'{_text(label)}<title>{_text(name)}</title></text>')
        for s, serie in enumerate(series):
            if serie not in by_series:
                continue
            value = by_series[serie]
            fill = (colors or {}).get(serie if grouped else name, BAR_COLOR)
            w = axes.sx(value) - axes.x0
            parts.append(f'<rect x="{axes.x0}" y="{y + s * bar_h:.1f}" width="{max(w, 0.5):.1f}" height="{bar_h - 2}" '
                         f'fill="{_text(fill)}" rx="2"><title>{_text(name)} {_text(serie)}: {number(value)}</title>'
                         f'</rect><text x="{axes.x0 + w + 4:.1f}" y="{y + s * bar_h + bar_h - 5:.1f}" class="value">'
                         f'{number(value)}</text>')
    parts.append(f'<line x1="{axes.x0}" y1="{top}" x2="{axes.x0}" y2="{axes.y1}" class="axis"/>'
                 f'<line x1="{axes.x0}" y1="{axes.y1}" x2="{axes.x1}" y2="{axes.y1}" class="axis"/>')
    for t in axes.xticks:
        parts.append(f'<text x="{axes.sx(t):.1f}" y="{axes.y1 + 17}" class="tick" text-anchor="middle">{tick(t)}</text>')
    parts.append(f'<text x="{(axes.x0 + axes.x1) / 2:.1f}" y="{height - 8}" class="label" text-anchor="middle">'
                 f'{_text(value_label)}</text>')
    if legend_entries:
        parts.append(legend(legend_entries, width - 10, 18))
    return _figure(title, _svg(width, height, "".join(parts), title), note)


def histogram(series: dict, title: str, bins: int = 30, x_label: str = "", y_label: str = "count",
              marker: tuple[float, str] | None = None, note: str = "", width: int = 580, height: int = 300,
              integer: bool = False) -> Markup:
    """Overlaid histograms on shared bins, one per series (e.g. per label), each a translucent fill with an outline.

    `series` maps name -> list of values, or name -> {value: count} (weighted). `marker`
    draws a dashed vertical line `(x, text)`, e.g. the truncation length, when it falls inside the range.
    `integer` values (lengths) get whole-number bins, at most `bins` of them.
    """
    weighted = {name: (dict(vs) if isinstance(vs, dict) else Counter(vs)) for name, vs in series.items()}
    weighted = {name: {v: n for v, n in w.items() if math.isfinite(v)} for name, w in weighted.items()}
    weighted = {name: w for name, w in weighted.items() if sum(w.values())}
    if not weighted:
        return no_data(title, "No data.")
    lo = min(min(w) for w in weighted.values())
    hi = max(max(w) for w in weighted.values())
    if marker and hi >= marker[0] > lo:
        hi = max(hi, marker[0])
    if integer:
        step = max(1, math.ceil((hi - lo + 1) / bins))
        start = math.floor(lo / step) * step
        bins = int((hi - start) // step) + 1
        xticks = nice_ticks(start, start + bins * step, 6, integer=True)
    else:
        xticks = nice_ticks(lo, hi, 6)
        start, step = xticks[0], (xticks[-1] - xticks[0]) / bins
    counts = {}
    for name, w in weighted.items():
        c = [0] * bins
        for value, n in w.items():
            c[min(bins - 1, max(0, int((value - start) / step)))] += n
        counts[name] = c
    top_count = max(max(c) for c in counts.values())
    axes = _Axes(width, height, xticks, nice_ticks(0, top_count, 4, integer=True))
    parts = [axes.frame(x_label, y_label)]
    for name, c in counts.items():
        fill = _text(color(name))
        path = [f"M{axes.sx(start):.1f},{axes.sy(0):.1f}"]
        for b, n in enumerate(c):
            path.append(f"V{axes.sy(n):.1f}H{axes.sx(start + (b + 1) * step):.1f}")
        path.append(f"V{axes.sy(0):.1f}Z")
        d = "".join(path)
        parts.append(f'<path d="{d}" fill="{fill}" fill-opacity="0.28" stroke="{fill}" stroke-width="1.5">'
                     f'<title>{_text(name)}: n={number(sum(c))}</title></path>')
    if marker and xticks[0] <= marker[0] <= xticks[-1]:
        x = axes.sx(marker[0])
        parts.append(f'<line x1="{x:.1f}" y1="{axes.y0}" x2="{x:.1f}" y2="{axes.y1}" class="marker"/>'
                     f'<text x="{x - 4:.1f}" y="{axes.y0 + 12}" class="tick" text-anchor="end">{_text(marker[1])}</text>')
    parts.append(legend({f"{name} (n={number(sum(c))})": color(name) for name, c in counts.items()}, width - 18, 18))
    return _figure(title, _svg(width, height, "".join(parts), title), note)


def scatter(points: dict, title: str, x_label: str = "", y_label: str = "", note: str = "", width: int = 580,
            height: int = 380) -> Markup:
    """2-D scatter, one colour per series; `points` maps name -> list of (x, y)."""
    xy = [p for ps in points.values() for p in ps]
    if len(xy) < 2:
        return no_data(title, "Too few points.")
    xs, ys = [p[0] for p in xy], [p[1] for p in xy]
    axes = _Axes(width, height, nice_ticks(min(xs), max(xs), 6), nice_ticks(min(ys), max(ys), 5))
    parts = [axes.frame(x_label, y_label)]
    for name, ps in points.items():
        circles = "".join(f'<circle cx="{axes.sx(x):.1f}" cy="{axes.sy(y):.1f}" r="2.6"/>' for x, y in ps)
        parts.append(f'<g fill="{_text(color(name))}" fill-opacity="0.55">{circles}</g>')
    parts.append(legend({f"{name} (n={number(len(ps))})": color(name) for name, ps in points.items()}, width - 18, 18))
    return _figure(title, _svg(width, height, "".join(parts), title), note)


TEMPLATE_FUNCTIONS = {"bar_chart": bar_chart, "histogram": histogram, "scatter": scatter, "no_data": no_data,
          "group_colors": group_colors, "label_legend": label_legend}
