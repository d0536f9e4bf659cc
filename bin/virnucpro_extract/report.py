"""`report`: one self-contained HTML page summarising a run: the run, the data, validation, pictures.

Self-contained means: inline CSS and inline SVG only, no scripts, no fonts or images to fetch. A
Content-Security-Policy meta tag makes the browser refuse (and log) anything else, so the browser
test's "no console messages" also proves nothing is loaded from anywhere at view time.

Inputs are the small JSON documents the pipeline already writes (validation.json, preflight.json,
each EMBED_PROTEINS task's `*.embed.json`, each MERGE_FEATURES task's `*.merge.json`, params) plus
validate's feature sample (`.pt`). Nextflow's trace is written only when the run ends, after this
report, so throughput comes from the embed tasks' own statistics instead.
"""
from __future__ import annotations

import datetime as dt
import html
import importlib.metadata
import json
import math
import platform
import re
from collections import Counter, defaultdict
from pathlib import Path

PALETTE = {"viral": "#d62728", "host": "#1f77b4"}
OTHER_COLOR = "#6b7280"
PACKAGES = ("torch", "transformers", "tokenizers", "safetensors", "huggingface_hub", "numpy", "click", "jsonschema")
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
MAX_LISTED = 500  # dropped ids / failures listed in full up to this many; the JSON files hold them all
MAX_POINTS = 3000  # PCA points drawn


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def combine_validations(documents: list[dict]) -> dict:
    """One validation document from those of the task groups: every check and chunk, passed only if all did."""
    checks = [c for d in documents for c in d.get("checks", [])]
    failed = sum(not c["passed"] for c in checks)
    combined = {"passed": bool(documents) and all(d.get("passed") for d in documents) and bool(checks),
                "checks_run": len(checks), "checks_failed": failed, "checks": checks,
                "chunks": [c for d in documents for c in d.get("chunks", [])]}
    times = [d["_mtime"] for d in documents if "_mtime" in d]
    if times:  # when the last group's validation was written: the end of the run as far as the report knows
        combined["_mtime"] = max(times)
    return combined


def combine_samples(samples: list[dict]) -> dict:
    return {"chunks": [c for s in samples for c in (s or {}).get("chunks", [])]}


def merge_chunk_stats(documents: list[dict]) -> list[dict]:
    """Per-chunk merge statistics from merge tasks' files (`{"chunks": [...]}`; single-chunk files as they are)."""
    rows = []
    for document in documents:
        if isinstance(document.get("chunks"), list):
            rows += [{**chunk, **{k: v for k, v in document.items() if k.startswith("_")}} for chunk in document["chunks"]]
        else:
            rows.append(document)
    return rows


def read_versions(path) -> dict:
    """pipeline_info/versions.yml (nf-core's layout: `PROCESS:` then `    tool: version`) as {tool: version}; a
    tool seen with several versions lists them all."""
    found: dict[str, list[str]] = {}
    for line in Path(path).read_text().splitlines():
        if line.startswith((" ", "\t")) and ":" in line:
            tool, _, version = line.strip().partition(":")
            version = version.strip().strip("'\"")
            if version and version not in found.setdefault(tool.strip(), []):
                found[tool.strip()].append(version)
    return {tool: ", ".join(versions) for tool, versions in sorted(found.items())}


def starting_points(preflight: dict, identify_stats: list[dict], split_stats: list[dict], plan: dict) -> list[dict]:
    """One row per prefix: the stage it started from (chunks as given, unsplit identified FASTA, RefSeq genomes)
    and what each stage gave: genome files, records, reads, reads dropped for ambiguous bases, frames kept, chunk
    files full and short, and the records of short files that were not embedded."""
    rows = {p["prefix"]: {"prefix": p["prefix"], "label": p["label"], "stage": p["stage"], "genome_files": 0,
                          "records": None, "reads": None, "reads_ambiguous": None, "frames_kept": None,
                          "records_not_in_genbank": 0, "records_without_cds": 0, "chunk_files_full": None,
                          "chunk_files_short": None, "records_not_embedded": 0}
            for p in preflight.get("prefixes", [])}
    genome_files = defaultdict(set)
    for job in preflight.get("identify_jobs", []):
        genome_files[job["prefix"]].add(job["fasta"])
    for prefix, fastas in genome_files.items():
        if prefix in rows:
            rows[prefix]["genome_files"] = len(fastas)
    for stats in identify_stats:
        prefix = stats.get("prefix") or (stats.get("_name") or "").split(".shard_")[0]
        row = rows.get(prefix)
        if row is None:
            continue
        for key in ("records", "reads", "reads_ambiguous", "frames_kept"):
            row[key] = (row[key] or 0) + int(stats.get(key, 0))
        row["records_not_in_genbank"] += len(stats.get("records_without_genbank", []))
        row["records_without_cds"] += len(stats.get("records_without_cds", []))
    for stats in split_stats:
        row = rows.get(stats.get("prefix"))
        if row is not None:
            row["chunk_files_full"] = sum(bool(c.get("full")) for c in stats.get("chunks", []))
            row["chunk_files_short"] = sum(not c.get("full") for c in stats.get("chunks", []))
    for short in plan.get("not_embedded", []):
        if short["group"] in rows:
            rows[short["group"]]["records_not_embedded"] += int(short.get("records", 0))
    return [rows[k] for k in sorted(rows)]


def read_stats(path) -> dict:
    """A JSON statistics file with where it came from: `_name` (file name) and `_mtime` (when written, epoch s)."""
    path = Path(path)
    return {**json.loads(path.read_text()), "_name": path.name, "_mtime": path.stat().st_mtime}


def _e(value) -> str:
    return html.escape(str(value))


def _fmt(value) -> str:
    """Readable numbers: thousands separators for large values, 3 significant digits otherwise."""
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 1):
        return f"{int(value):,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _tick(value) -> str:
    """Axis tick labels stay short: 2.5M, 250k."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e4, "k")):
        if abs(value) >= size:
            return f"{value / size:g}{suffix}" if suffix != "k" else f"{value / 1e3:,.0f}k"
    return _fmt(value)


def _color(name: str) -> str:
    return PALETTE.get(name, OTHER_COLOR)


# ----------------------------------------------------------------------------------------------
# SVG charts: axes with round-number ticks, gridlines, axis labels, legends
# ----------------------------------------------------------------------------------------------
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
        tick = first + k * step
        ticks.append(round(tick, 12))
        if tick >= hi - 1e-9 * step:
            return ticks
        k += 1


def _svg(width: int, height: int, body: str, title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}"><title>{_e(title)}</title>'
            f'{body}</svg>')


def _figure(title: str, svg: str, note: str = "") -> str:
    note_html = f"<p class='note'>{note}</p>" if note else ""
    return f"<figure class='plot'><h3>{_e(title)}</h3>{svg}{note_html}</figure>"


def _no_data(title: str, why: str) -> str:
    return f"<figure class='plot empty'><h3>{_e(title)}</h3><p class='note'>{_e(why)}</p></figure>"


def _legend(entries: list[tuple[str, str]], right: float, y: float) -> str:
    """Swatches and names right-aligned at `right`, on one line at height `y`."""
    parts, x = [], right
    for name, color in reversed(entries):
        width = 7 * len(name) + 22
        x -= width
        parts.append(f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="11" height="11" rx="2" fill="{color}"/>'
                     f'<text x="{x + 15:.1f}" y="{y:.1f}" class="legend">{_e(name)}</text>')
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

    def frame(self, x_label: str, y_label: str, xtick_labels: bool = True) -> str:
        parts = []
        for t in self.yticks:
            y = self.sy(t)
            parts.append(f'<line x1="{self.x0}" y1="{y:.1f}" x2="{self.x1}" y2="{y:.1f}" class="grid"/>'
                         f'<text x="{self.x0 - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{_tick(t)}</text>')
        for t in self.xticks:
            x = self.sx(t)
            parts.append(f'<line x1="{x:.1f}" y1="{self.y1}" x2="{x:.1f}" y2="{self.y1 + 4}" class="axis"/>')
            if xtick_labels:
                parts.append(f'<text x="{x:.1f}" y="{self.y1 + 17}" class="tick" text-anchor="middle">{_tick(t)}</text>')
        parts.append(f'<line x1="{self.x0}" y1="{self.y1}" x2="{self.x1}" y2="{self.y1}" class="axis"/>'
                     f'<line x1="{self.x0}" y1="{self.y0}" x2="{self.x0}" y2="{self.y1}" class="axis"/>')
        parts.append(f'<text x="{(self.x0 + self.x1) / 2:.1f}" y="{self.height - 8}" class="label" '
                     f'text-anchor="middle">{_e(x_label)}</text>')
        cy = (self.y0 + self.y1) / 2
        parts.append(f'<text x="14" y="{cy:.1f}" class="label" text-anchor="middle" '
                     f'transform="rotate(-90 14 {cy:.1f})">{_e(y_label)}</text>')
        return "".join(parts)


def bar_chart(values: dict, title: str, colors: dict | None = None, value_label: str = "",
              legend: list[tuple[str, str]] | None = None, note: str = "", width: int = 580) -> str:
    """Horizontal bars, one row per category (long names stay readable), value printed at each bar's end.

    `values` maps category -> number, or category -> {series: number} for grouped bars (series
    coloured by `colors[series]`); otherwise bars are coloured by `colors[category]`.
    """
    if not values:
        return _no_data(title, "No data.")
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
    label_px = 6.2 * max(len(_fmt(v)) for r in rows.values() for v in r.values()) + 8
    headroom = 1 + label_px / max(1.0, width - left - 24 - label_px)
    axes = _Axes(width, height, nice_ticks(0, top_value * headroom or 1, integer=whole), [0, 1], left=left, right=24, top=top,
                 bottom=bottom)
    parts = []
    for t in axes.xticks[1:]:
        parts.append(f'<line x1="{axes.sx(t):.1f}" y1="{top}" x2="{axes.sx(t):.1f}" y2="{axes.y1}" class="grid"/>')
    for k, (name, by_series) in enumerate(rows.items()):
        y = top + k * row_h + 5
        label = str(name) if len(str(name)) <= 28 else str(name)[:27] + "…"
        parts.append(f'<text x="{left - 8:.1f}" y="{y + row_h / 2 + 0:.1f}" class="tick" text-anchor="end">'
                     f'{_e(label)}<title>{_e(name)}</title></text>')
        for s, serie in enumerate(series):
            if serie not in by_series:
                continue
            value = by_series[serie]
            color = (colors or {}).get(serie if grouped else name, "#4c72b0")
            w = axes.sx(value) - axes.x0
            parts.append(f'<rect x="{axes.x0}" y="{y + s * bar_h:.1f}" width="{max(w, 0.5):.1f}" height="{bar_h - 2}" '
                         f'fill="{color}" rx="2"><title>{_e(name)} {_e(serie)}: {_fmt(value)}</title></rect>'
                         f'<text x="{axes.x0 + w + 4:.1f}" y="{y + s * bar_h + bar_h - 5:.1f}" class="value">'
                         f'{_fmt(value)}</text>')
    parts.append(f'<line x1="{axes.x0}" y1="{top}" x2="{axes.x0}" y2="{axes.y1}" class="axis"/>'
                 f'<line x1="{axes.x0}" y1="{axes.y1}" x2="{axes.x1}" y2="{axes.y1}" class="axis"/>')
    for t in axes.xticks:
        parts.append(f'<text x="{axes.sx(t):.1f}" y="{axes.y1 + 17}" class="tick" text-anchor="middle">{_tick(t)}</text>')
    parts.append(f'<text x="{(axes.x0 + axes.x1) / 2:.1f}" y="{height - 8}" class="label" text-anchor="middle">'
                 f'{_e(value_label)}</text>')
    if legend:
        parts.append(_legend(legend, width - 10, 18))
    return _figure(title, _svg(width, height, "".join(parts), title), note)


def histogram(series: dict, title: str, bins: int = 30, x_label: str = "", y_label: str = "count",
              marker: tuple[float, str] | None = None, note: str = "", width: int = 580, height: int = 300,
              integer: bool = False) -> str:
    """Overlaid histograms on shared bins, one per series (e.g. per label), each a translucent fill with an outline.

    `series` maps name -> list of values, or name -> Counter {value: count} (weighted). `marker`
    draws a dashed vertical line `(x, text)`, e.g. the truncation length, when it falls inside the range.
    `integer` values (lengths) get whole-number bins, at most `bins` of them.
    """
    weighted = {name: (dict(vs) if isinstance(vs, dict) else Counter(vs)) for name, vs in series.items()}
    weighted = {name: {v: n for v, n in w.items() if math.isfinite(v)} for name, w in weighted.items()}
    weighted = {name: w for name, w in weighted.items() if sum(w.values())}
    if not weighted:
        return _no_data(title, "No data.")
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
        color = _color(name)
        path = [f"M{axes.sx(start):.1f},{axes.sy(0):.1f}"]
        for b, n in enumerate(c):
            path.append(f"V{axes.sy(n):.1f}H{axes.sx(start + (b + 1) * step):.1f}")
        path.append(f"V{axes.sy(0):.1f}Z")
        d = "".join(path)
        parts.append(f'<path d="{d}" fill="{color}" fill-opacity="0.28" stroke="{color}" stroke-width="1.5">'
                     f'<title>{_e(name)}: n={_fmt(sum(c))}</title></path>')
    if marker and xticks[0] <= marker[0] <= xticks[-1]:
        x = axes.sx(marker[0])
        parts.append(f'<line x1="{x:.1f}" y1="{axes.y0}" x2="{x:.1f}" y2="{axes.y1}" class="marker"/>'
                     f'<text x="{x - 4:.1f}" y="{axes.y0 + 12}" class="tick" text-anchor="end">{_e(marker[1])}</text>')
    parts.append(_legend([(f"{name} (n={_fmt(sum(c))})", _color(name)) for name, c in counts.items()],
                         width - 18, 18))
    return _figure(title, _svg(width, height, "".join(parts), title), note)


def scatter(points: dict, title: str, x_label: str = "", y_label: str = "", note: str = "", width: int = 580,
            height: int = 380) -> str:
    """2-D scatter, one colour per series; `points` maps name -> list of (x, y)."""
    xy = [p for ps in points.values() for p in ps]
    if len(xy) < 2:
        return _no_data(title, "Too few points.")
    xs, ys = [p[0] for p in xy], [p[1] for p in xy]
    axes = _Axes(width, height, nice_ticks(min(xs), max(xs), 6), nice_ticks(min(ys), max(ys), 5))
    parts = [axes.frame(x_label, y_label)]
    for name, ps in points.items():
        circles = "".join(f'<circle cx="{axes.sx(x):.1f}" cy="{axes.sy(y):.1f}" r="2.6"/>' for x, y in ps)
        parts.append(f'<g fill="{_color(name)}" fill-opacity="0.55">{circles}</g>')
    parts.append(_legend([(f"{name} (n={_fmt(len(ps))})", _color(name)) for name, ps in points.items()],
                         width - 18, 18))
    return _figure(title, _svg(width, height, "".join(parts), title), note)


# ----------------------------------------------------------------------------------------------
# Data model
# ----------------------------------------------------------------------------------------------
def pca_2d(sample: dict, max_points: int = MAX_POINTS) -> tuple[dict, list[float]]:
    """Project the sampled merged features [N, 2048] (centred, not scaled) onto their first two principal
    components; return ({label: [(pc1, pc2)]}, [variance explained by PC1, PC2])."""
    import torch

    rows, labels = [], []
    for chunk in sample.get("chunks", []):
        features = chunk.get("features")
        if features is not None and len(features):
            rows.append(features.float())
            labels += [chunk["label"]] * len(features)
    if not rows:
        return {}, []
    x = torch.cat(rows).double()
    finite = torch.isfinite(x).all(1)  # a failed validation may have NaN rows: they are shown in its table
    x, labels = x[finite], [label for label, ok in zip(labels, finite.tolist()) if ok]
    if len(x) < 3:
        return {}, []
    x = x - x.mean(0)
    v, s = top_components(x, 2)
    variance = (s ** 2) / (x ** 2).sum().clamp_min(1e-300)
    projected = (x @ v).tolist()
    keep = max(1, -(-len(projected) // max_points))
    points = defaultdict(list)
    for k, (label, point) in enumerate(zip(labels, projected)):
        if k % keep == 0:
            points[label].append((point[0], point[1] if len(point) > 1 else 0.0))
    return dict(sorted(points.items())), [float(v) for v in variance[:2]]


def top_components(x, k: int, oversample: int = 6, iterations: int = 10):
    """The top-k right singular vectors [d, k] and singular values [k] of a centred x [n, d], by subspace
    iteration (seeded, so a report is reproducible): a full SVD of [4000, 2048] takes over a minute on two
    CPU cores, this a second or two."""
    import torch

    width = min(k + oversample, *x.shape)
    basis = torch.randn(x.shape[1], width, generator=torch.Generator().manual_seed(0), dtype=x.dtype)
    for _ in range(iterations):
        basis, _ = torch.linalg.qr(x.T @ (x @ basis))
    _, s, vh = torch.linalg.svd(x @ basis, full_matrices=False)
    return basis @ vh.T[:, :k], s[:k]


def embedding_norms(sample: dict) -> tuple[dict, dict]:
    """L2 norms by label: (protein vectors from the ESM files, DNABERT-S halves of the merged rows)."""
    protein, dna = defaultdict(list), defaultdict(list)
    for chunk in sample.get("chunks", []):
        if chunk.get("protein_norms") is not None:
            protein[chunk["label"]] += [float(v) for v in chunk["protein_norms"]]
        features = chunk.get("features")
        if features is not None and len(features):
            dna[chunk["label"]] += features[:, :768].float().norm(dim=1).tolist()
    return dict(sorted(protein.items())), dict(sorted(dna.items()))


def task_name(stats: dict, index: int) -> str:
    name = stats.get("_name") or stats.get("task") or ""
    for suffix in (".embed.json", ".json"):
        name = name.removesuffix(suffix)
    return name or f"task {index + 1}"


def chunk_key(stats: dict) -> str:
    """`<group>/<id>` of a merge statistics file named `<group>__<id>.merge.json` (groups may contain dots)."""
    if stats.get("key"):
        return stats["key"]
    name = (stats.get("_name") or "").removesuffix(".merge.json").removesuffix(".json")
    return name.replace("__", "/", 1)


def throughput(embed_stats: list[dict]) -> list[dict]:
    """Per EMBED_PROTEINS task: proteins, residues, seconds, and proteins/s with and without the model load."""
    tasks = []
    for k, s in enumerate(embed_stats):
        chunks = s.get("chunks") or []
        if not chunks:
            continue
        proteins = sum(c.get("proteins", 0) for c in chunks)
        total, load = float(s.get("total_seconds") or 0), float(s.get("load_seconds") or 0)
        tasks.append({"task": task_name(s, k), "chunks": len(chunks), "proteins": proteins,
                      "residues": sum(c.get("residues", 0) for c in chunks), "load_seconds": load,
                      "total_seconds": total, "per_second": proteins / max(total, 1e-9),
                      "per_second_embedding": proteins / max(total - load, 1e-9), "device": s.get("device", "-")})
    return sorted(tasks, key=lambda t: _natural(t["task"]))


def _natural(text: str) -> list:
    """Sort key putting embed_2 before embed_10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def run_wall_seconds(preflight: dict, embed_stats: list[dict], validation: dict) -> float | None:
    """Seconds from the end of PREFLIGHT (or the first embed task's start) to validation.json, from file times.

    The report is written inside the run, before Nextflow knows the run's end: this is the run up to
    its last step. None when the times are not known (documents given without their files).
    """
    starts = [preflight["_mtime"]] if "_mtime" in preflight else []
    starts += [s["_mtime"] - float(s.get("total_seconds") or 0) for s in embed_stats if "_mtime" in s]
    end = validation.get("_mtime")
    if not starts or end is None or end < min(starts):
        return None
    return end - min(starts)


def _hashable(value):
    """Stats values as set members: lists (e.g. one device per worker) become their text."""
    return ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else value


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _table(header, rows, classes: str = "", foot=None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(v) for v in r) + "</tr>" for r in rows)
    foot_html = ("<tfoot>" + "".join("<tr>" + "".join(_cell(v) for v in r) + "</tr>" for r in foot) + "</tfoot>"
                 if foot else "")
    return f"<table class='{classes}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody>{foot_html}</table>"


class Raw(str):
    """HTML that a table cell shows as it is (already escaped)."""


def _cell(value) -> str:
    if isinstance(value, Raw):
        return f"<td>{value}</td>"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"<td class='num'>{_fmt(value)}</td>"
    return f"<td>{_e(value)}</td>"


def _pill(passed: bool, text: str | None = None) -> Raw:
    return Raw(f"<span class='pill {'ok' if passed else 'bad'}'>{_e(text or ('pass' if passed else 'FAIL'))}</span>")


def _param_value(value) -> str:
    if value is None:
        return "<span class='muted'>null</span>"
    if isinstance(value, str):
        return f"<code>{_e(value)}</code>"
    return f"<code>{_e(json.dumps(value))}</code>"


def dna_rows(dna_stats: list[dict], preflight: dict, params: dict) -> list[list]:
    """The report's DNABERT-S rows: given as files, or computed by EMBED_DNA (model, card, reads/s)."""
    tasks = [s for s in dna_stats if s.get("chunks")]
    if not tasks:
        return [["DNABERT-S", "given as files (none computed in this run)"]]
    reads = sum(c.get("reads", 0) for s in tasks for c in s["chunks"])
    total = sum(float(s.get("total_seconds") or 0) for s in tasks)
    load = sum(float(s.get("load_seconds") or 0) for s in tasks)
    chunks = sum(len(s["chunks"]) for s in tasks)
    rows = [["DNABERT-S model (--dnabert_model)", params.get("dnabert_model") or tasks[0].get("model", "-")],
            ["DNABERT-S fingerprint", preflight.get("dnabert_model_fingerprint", "-")]]
    for config_hash, precision, device in sorted({(s.get("config_hash"), s.get("precision"), s.get("device"))
                                                  for s in tasks}, key=str):
        rows += [["DNABERT-S config.json hash", config_hash], ["DNABERT-S precision", precision],
                 ["DNABERT-S card", device]]
    return rows + [["EMBED_DNA tasks", f"{len(tasks)} ({chunks} chunks, {reads:,} reads)"],
                   ["EMBED_DNA time, summed", f"{_duration(total)} (model loading {_duration(load)})"],
                   ["EMBED_DNA reads/s after model load", f"{reads / max(total - load, 1e-9):,.0f}"]]


def build_report(validation: dict, sample: dict, preflight: dict, embed_stats: list[dict], merge_stats: list[dict],
                 params: dict, nextflow_version: str = "", generated_at: dt.datetime | None = None,
                 dna_stats: list[dict] = (), versions: dict | None = None, stages: list[dict] = (),
                 not_embedded: list[dict] = ()) -> str:
    """The report's HTML. Documents are the pipeline's JSON files as dicts (with `_name`/`_mtime` from
    `read_stats` where known); `sample` is validate's feature sample; `dna_stats` are EMBED_DNA's."""
    generated_at = generated_at or dt.datetime.now(dt.timezone.utc)
    chunks = validation.get("chunks", [])
    checks = validation.get("checks", [])
    failed = [c for c in checks if not c["passed"]]
    passed = bool(validation.get("passed"))
    status = "PASSED" if passed else "FAILED"
    max_length = preflight.get("max_length", params.get("max_length", 1022))

    # The data, per group
    group_label, per_group = {}, defaultdict(lambda: Counter())
    for c in chunks:
        group_label[c["group"]] = c["label"]
        per_group[c["group"]].update(chunks=1, proteins=c.get("proteins", 0), rows=c.get("rows", 0))
    embed_chunks = [c for s in embed_stats for c in s.get("chunks", [])]
    truncated_by_key = {c["key"]: int(c.get("truncated", 0)) for c in preflight.get("chunks", [])} or \
                       {c["key"]: int(c.get("truncated", 0)) for c in embed_chunks}
    group_of_key = {c["key"]: c["group"] for c in chunks}
    for key, n in truncated_by_key.items():
        if key in group_of_key:
            per_group[group_of_key[key]]["truncated"] += n
    truncated = preflight.get("truncated", sum(truncated_by_key.values()))
    dropped = []
    for m in merge_stats:
        key = chunk_key(m)
        dropped += [(key, i, "DNABERT-S file only") for i in m.get("dropped_dnabert_only", [])]
        dropped += [(key, i, "protein FASTA only") for i in m.get("dropped_protein_only", [])]
        if key in group_of_key:
            per_group[group_of_key[key]]["dropped"] += len(m.get("dropped_dnabert_only", [])) + len(
                m.get("dropped_protein_only", []))
    total_proteins = sum(g["proteins"] for g in per_group.values())

    # The run
    tasks = throughput(embed_stats)
    configs = sorted({tuple(_hashable(s.get(k)) for k in ("config_hash", "precision", "device", "compiled", "token_budget"))
                      for s in embed_stats if s.get("chunks")}, key=str)
    devices = sorted({str(d) for _, _, d, _, _ in configs}) or ["-"]
    wall = run_wall_seconds(preflight, embed_stats, validation)
    model = params.get("esm_model") or next((s.get("model") for s in embed_stats if s.get("model")), "-")

    # -- header and summary cards
    cards = [
        ("validation", f"{validation.get('checks_run', 0) - len(failed)}/{validation.get('checks_run', 0)}",
         "checks passed", "ok" if passed else "bad"),
        ("proteins", _fmt(total_proteins), f"in {len(chunks)} chunks, {len(per_group)} groups", ""),
        ("truncated", _fmt(truncated), f"longer than {max_length} residues", "warn" if truncated else ""),
        ("dropped ids", _fmt(len(dropped)), f"--allow_missing {'on' if params.get('allow_missing') else 'off'}",
         "warn" if dropped else ""),
        ("wall time", _duration(wall), "PREFLIGHT end → validation", ""),
        ("card", ", ".join(devices), f"{len(tasks)} EMBED_PROTEINS task{'s' if len(tasks) != 1 else ''}", ""),
    ]
    header = (
        "<header><h1>virnucpro-extract report</h1>"
        f"<p class='status {status.lower()}'>Validation {status}: {validation.get('checks_run', 0) - len(failed)} "
        f"of {validation.get('checks_run', 0)} checks passed</p>"
        f"<p class='muted'>Generated {generated_at.strftime('%Y-%m-%d %H:%M:%S %Z').strip()} · model "
        f"<code>{_e(model)}</code> · outdir <code>{_e(params.get('outdir', '-'))}</code></p>"
        "<nav><a href='#run'>Run</a><a href='#data'>Data</a><a href='#pictures'>Pictures</a>"
        "<a href='#validation'>Validation</a></nav></header>"
        "<div class='cards'>" + "".join(
            f"<div class='card {cls}'><div class='k'>{_e(k)}</div><div class='v'>{_e(v)}</div>"
            f"<div class='s'>{_e(s)}</div></div>" for k, v, s, cls in cards) + "</div>")

    # -- run
    versions = {"Nextflow": nextflow_version or "-", **(versions if versions is not None else package_versions())}
    software = _table(["software", "version"], [[k, v] for k, v in versions.items()], "kv")
    model_rows = [["model (--esm_model)", model],
                  ["model fingerprint", preflight.get("model_fingerprint", "-")]]
    for config_hash, precision, device, compiled, budget in configs:
        model_rows += [["config.json hash", config_hash], ["precision", precision], ["card", device],
                       ["torch.compile", "on" if compiled else "off"], ["tokens per batch", budget or "-"]]
    decisions = sorted({s["compile_decision"] for s in embed_stats if s.get("chunks") and s.get("compile_decision")})
    model_rows += [["compile decision" if len(decisions) == 1 else f"compile decision ({len(decisions)} kinds)",
                    Raw("<br>".join(_e(d) for d in decisions))]] if decisions else []
    model_rows += dna_rows(list(dna_stats), preflight, params)
    timing_rows = [["run wall time (≈)", _duration(wall)],
                   ["EMBED_PROTEINS tasks", len(tasks)],
                   ["EMBED_PROTEINS task time, summed", _duration(sum(t["total_seconds"] for t in tasks))],
                   ["  of which model loading", _duration(sum(t["load_seconds"] for t in tasks))],
                   ["report generated", generated_at.strftime("%Y-%m-%d %H:%M:%S %Z").strip()]]
    params_html = "<dl class='params'>" + "".join(
        f"<dt>{_e(k)}</dt><dd>{_param_value(v)}</dd>" for k, v in sorted(params.items())) + "</dl>"
    run_section = (
        "<section id='run'><h2>Run</h2><div class='cols'>"
        f"<div><h3>Software</h3>{software}</div>"
        f"<div><h3>Model and card</h3>{_table(['what', 'value'], model_rows, 'kv')}</div>"
        f"<div><h3>Time</h3>{_table(['what', 'value'], timing_rows, 'kv')}"
        "<p class='note'>Wall time runs from PREFLIGHT's summary to validation.json (file times); the exact total, "
        "per-task CPU, memory and timeline are in <code>pipeline_info/execution_report_*.html</code>, written when "
        "the run ends.</p></div></div>"
        f"<h3>Parameters</h3>{params_html}</section>")

    # -- data
    data_rows = [[g, group_label[g], n["chunks"], n["proteins"], n["truncated"], n["dropped"], n["rows"]]
                 for g, n in sorted(per_group.items())]
    by_label = defaultdict(Counter)
    for g, n in per_group.items():
        by_label[group_label[g]].update(n)
    foot = [[Raw("<b>all " + _e(label) + "</b>"), label, n["chunks"], n["proteins"], n["truncated"], n["dropped"],
             n["rows"]] for label, n in sorted(by_label.items(), reverse=True)]
    data_section = (
        "<section id='data'><h2>Data</h2>"
        f"<p>{total_proteins:,} proteins in {len(chunks)} chunk{'' if len(chunks) == 1 else 's'}; {truncated} truncated to {max_length} residues; "
        f"{len(dropped)} ids dropped (--allow_missing {'on' if params.get('allow_missing') else 'off'}).</p>"
        + _table(["group", "label", "chunks", "proteins", f"truncated (> {max_length})", "dropped ids",
                  "merged rows"], data_rows, "data", foot)
        + stages_html(stages, not_embedded, preflight.get("warnings", []), params)
        + ("<h3>Dropped ids</h3><p class='note'>Ids present on one side only, dropped by --allow_missing"
           + (f"; the first {MAX_LISTED} of {len(dropped)} are listed, all are in "
              "<code>pipeline_info/merge/*.merge.json</code>" if len(dropped) > MAX_LISTED else "") + ".</p>"
           + _table(["chunk", "id", "present in"], dropped[:MAX_LISTED], "data") if dropped else "")
        + "</section>")

    # -- pictures
    lengths = defaultdict(Counter)
    for c in chunks:
        lengths[c["label"]].update({int(k): v for k, v in c.get("length_counts", {}).items()})
    protein_norms, dna_norms = embedding_norms(sample)
    points, explained = pca_2d(sample)
    label_legend = [(label, _color(label)) for label in sorted(set(group_label.values()))]
    embed_note = ("From each EMBED_PROTEINS task's own statistics (<code>pipeline_info/embed/*.embed.json</code>: "
                  "proteins, total_seconds, load_seconds), not from the Nextflow trace, which is written only when "
                  "the run ends, after this report.")
    if len(tasks) <= 40:
        throughput_plot = bar_chart(
            {t["task"]: {"whole task": round(t["per_second"], 1), "after model load": round(t["per_second_embedding"], 1)}
             for t in tasks}, "EMBED_PROTEINS throughput per task", {"whole task": "#94a3b8", "after model load": "#0f766e"},
            "proteins per second", [("whole task", "#94a3b8"), ("after model load", "#0f766e")], embed_note)
    else:
        throughput_plot = histogram({"tasks": [round(t["per_second"], 1) for t in tasks]},
                                    "EMBED_PROTEINS throughput per task", 20, "proteins per second (whole task)",
                                    "tasks", note=embed_note)
    pictures = [
        bar_chart({g: n["proteins"] for g, n in sorted(per_group.items())}, "Proteins per group",
                  {g: _color(l) for g, l in group_label.items()}, "proteins", label_legend),
        throughput_plot,
        histogram(dict(sorted(lengths.items())), "Protein length", 40, "length (residues)", "proteins",
                  marker=(max_length, f"--max_length {max_length}"), integer=True,
                  note=f"Lengths as read from the FASTA; {truncated} protein(s) longer than {max_length} residues "
                       "were truncated before embedding."),
        histogram(protein_norms, "Protein embedding norm by label", 30, "L2 norm of the 1280-d protein vector",
                  "proteins", note="From a sample of each chunk's ESM vectors (up to 500 per chunk)."),
        (scatter(points, "PCA of merged features (sample)",
                 f"PC1 ({100 * explained[0]:.1f}% of variance)", f"PC2 ({100 * explained[1]:.1f}% of variance)",
                 note=f"{sum(len(p) for p in points.values()):,} merged 2048-d rows sampled evenly across chunks, "
                      "centred (not scaled), projected on their first two principal components.")
         if points else _no_data("PCA of merged features (sample)", "No feature sample (validate --sample).")),
        histogram(dna_norms, "DNABERT-S embedding norm by label", 30, "L2 norm of the 768-d DNABERT-S vector",
                  "rows", note="From the sample of merged rows shown in the projection.", height=360),
    ]
    task_table = _table(["task", "chunks", "proteins", "residues", "model load (s)", "total (s)", "proteins/s",
                         "proteins/s after load", "card"],
                        [[t["task"], t["chunks"], t["proteins"], t["residues"], round(t["load_seconds"], 1),
                          round(t["total_seconds"], 1), round(t["per_second"], 1),
                          round(t["per_second_embedding"], 1), t["device"]] for t in tasks], "data")
    pictures_section = ("<section id='pictures'><h2>Pictures</h2><div class='plots'>" + "".join(pictures) + "</div>"
                        + (f"<details><summary>EMBED_PROTEINS tasks ({len(tasks)})</summary>{task_table}</details>"
                           if tasks else "") + "</section>")

    # -- validation
    names = list(dict.fromkeys(c["check"] for c in checks))
    by_name = {n: [c for c in checks if c["check"] == n] for n in names}
    check_rows = []
    for number, name in enumerate(names, 1):
        bad = [c for c in by_name[name] if not c["passed"]]
        files = sorted({c["file"] for c in bad})
        offending = Raw("<br>".join(f"<code>{_e(f)}</code>" for f in files[:5])
                        + (f" <span class='muted'>and {len(files) - 5} more</span>" if len(files) > 5 else ""))
        check_rows.append([number, name, _pill(not bad), len(by_name[name]) - len(bad), len(bad),
                           offending if bad else Raw("<span class='muted'>-</span>")])
    failures = _table(["chunk", "check", "file", "detail", "fix"],
                      [[c["chunk"], c["check"], Raw(f"<code>{_e(c['file'])}</code>"), c["detail"], c["fix"]]
                       for c in failed[:MAX_LISTED]], "data failures") if failed else ""
    result = {(c["chunk"], c["check"]): c["passed"] for c in checks}
    matrix_chunks = list(dict.fromkeys(c["chunk"] for c in checks))
    matrix = _table(["chunk", *[str(n) for n in range(1, len(names) + 1)]],
                    [[key, *[Raw("<span class='muted'>·</span>") if (key, n) not in result else
                             (Raw("<span class='ok'>✓</span>") if result[key, n] else Raw("<span class='bad'>✗</span>"))
                             for n in names]] for key in matrix_chunks], "matrix")
    validation_section = (
        f"<section id='validation'><h2>Validation</h2><p class='status {status.lower()}'>Validation {status}: "
        f"{validation.get('checks_run', 0) - len(failed)} of {validation.get('checks_run', 0)} checks passed over "
        f"{len(matrix_chunks)} chunks.</p>"
        + _table(["#", "check", "status", "chunks passed", "chunks failed", "offending file(s)"], check_rows, "data")
        + (f"<h3>Failures ({len(failed)})</h3>{failures}" if failed else "")
        + f"<details><summary>Every check of every chunk ({len(checks)})</summary>"
          f"<p class='note'>Columns are the checks numbered above; ✓ passed, ✗ failed, · not run (an earlier "
          f"check of the chunk failed).</p>{matrix}</details></section>")

    body = header + run_section + data_section + pictures_section + validation_section
    footer = ("<footer>Written by <code>virnucpro-extract report</code>. One file: inline CSS and SVG, no scripts, "
              "nothing loaded from elsewhere. Machine-readable: <code>pipeline_info/validation.json</code>, "
              "<code>params.json</code>, <code>versions.yml</code>.</footer>")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>virnucpro-extract report: validation {status}</title><style>{STYLE}</style></head>"
            f"<body>{body}{footer}</body></html>\n")


def stages_html(stages: list[dict], not_embedded: list[dict], warnings: list[str], params: dict) -> str:
    """The 'Starting points' table (only when some prefix started before the chunk files), the short chunk files
    left out, and PREFLIGHT's warnings."""
    if not any(s["stage"] != "chunks" for s in stages):
        return ""
    show = lambda v: "-" if v is None else v  # noqa: E731
    rows = [[s["prefix"], s["label"], s["stage"], s["genome_files"] or "-", show(s["records"]), show(s["reads"]),
             show(s["reads_ambiguous"]), show(s["frames_kept"]), show(s["chunk_files_full"]),
             show(s["chunk_files_short"]), s["records_not_embedded"]] for s in stages]
    html_text = ("<h3>Starting points</h3><p class='note'>Each prefix starts from its most advanced stage: chunk files "
                 "as given, unsplit identified FASTA (split here), or RefSeq genomes (reads of "
                 f"{params.get('read_length', 300)} bp and their frames made here, VirNucPro's rules). Split files hold "
                 f"{params.get('sequences_per_file', 10000):,} records; a short last file is "
                 + ("embedded (--keep_partial_files)." if params.get("keep_partial_files") else
                    "not embedded (VirNucPro's rule; --keep_partial_files embeds it).") + "</p>"
                 + _table(["prefix", "label", "started from", "genome files", "records", "reads",
                           "reads dropped (ambiguous bases)", "frames kept", "chunk files full", "short",
                           "records not embedded"], rows, "data"))
    if not_embedded:
        html_text += ("<h3>Short chunk files not embedded</h3>"
                      + _table(["chunk", "records"], [[s["key"], s["records"]] for s in not_embedded], "data"))
    if warnings:
        html_text += "<h3>Warnings</h3><ul>" + "".join(f"<li>{_e(w)}</li>" for w in warnings) + "</ul>"
    return html_text


STYLE = """
:root{--ink:#1f2933;--muted:#6b7280;--line:#e5e7eb;--bg:#f8fafc;--ok:#15803d;--bad:#b91c1c;--warn:#b45309}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--ink);
 margin:0 auto;padding:24px 32px;max-width:1260px;line-height:1.45;font-size:14px;background:#fff}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:28px 0 10px;padding-bottom:4px;border-bottom:2px solid var(--line)}
h3{font-size:15px;margin:14px 0 6px}
code{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12.5px;background:var(--bg);padding:0 3px;
 border-radius:3px;overflow-wrap:anywhere}
nav{margin-top:8px}nav a{margin-right:14px;color:#1d4ed8;text-decoration:none;font-weight:600}
.muted{color:var(--muted)}.note{color:var(--muted);font-size:12.5px;margin:4px 0 0}
.status{font-size:17px;font-weight:700;margin:4px 0}.status.passed,.ok{color:var(--ok)}.status.failed,.bad{color:var(--bad)}
.cards{display:grid;grid-template-columns:repeat(6,1fr);gap:10px;margin:16px 0 4px}
.card{border:1px solid var(--line);border-radius:8px;padding:10px 12px;background:var(--bg);border-top:4px solid #94a3b8}
.card.ok{border-top-color:var(--ok)}.card.bad{border-top-color:var(--bad)}.card.warn{border-top-color:var(--warn)}
.card .k{font-size:11.5px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted)}
.card .v{font-size:21px;font-weight:700;margin:2px 0;overflow-wrap:anywhere}.card .s{font-size:12px;color:var(--muted)}
.cols{display:grid;grid-template-columns:repeat(3,1fr);gap:18px;align-items:start}
table{border-collapse:collapse;margin:6px 0;font-size:13px}
th,td{border-bottom:1px solid var(--line);padding:4px 10px;text-align:left;vertical-align:top}
th{background:var(--bg);font-weight:600;border-bottom:2px solid var(--line)}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tbody tr:nth-child(even){background:#fbfcfd}tfoot td{font-weight:600;border-top:2px solid var(--line)}
table.kv{width:100%}table.kv td:first-child{color:var(--muted);white-space:nowrap}
table.matrix td{text-align:center;padding:2px 6px}table.matrix td:first-child{text-align:left}
table.failures td{font-size:12.5px}
.pill{display:inline-block;padding:0 8px;border-radius:10px;font-size:12px;font-weight:700;color:#fff}
.pill.ok{background:var(--ok)}.pill.bad{background:var(--bad)}
dl.params{display:grid;grid-template-columns:repeat(3,minmax(0,max-content) minmax(0,1fr));gap:3px 12px;margin:4px 0;
 font-size:13px}
dl.params dt{color:var(--muted)}dl.params dd{margin:0;overflow-wrap:anywhere}
.plots{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:18px}
figure.plot{margin:0;border:1px solid var(--line);border-radius:8px;padding:10px 12px 12px;background:#fff}
figure.plot h3{margin:0 0 4px}figure.plot svg{width:100%;height:auto;display:block}
svg text{font-family:inherit;fill:#374151}svg .tick{font-size:11px}svg .value{font-size:10.5px;fill:#4b5563}
svg .label{font-size:12px;font-weight:600}svg .legend{font-size:12px}
svg .grid{stroke:#eef0f3;stroke-width:1}svg .axis{stroke:#6b7280;stroke-width:1}
svg .marker{stroke:#b45309;stroke-width:1.5;stroke-dasharray:5 4}
details{margin:10px 0}summary{cursor:pointer;font-weight:600}
footer{margin-top:32px;padding-top:10px;border-top:1px solid var(--line);color:var(--muted);font-size:12px}
@media (max-width:900px){.cards{grid-template-columns:repeat(2,1fr)}.cols,.plots{grid-template-columns:1fr}}
@media print{nav{display:none}details{display:block}}
"""
