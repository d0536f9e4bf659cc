"""`report`: one self-contained HTML page (inline SVG, no scripts, no network) summarising a run."""
from __future__ import annotations

import html
import importlib.metadata
import json
import platform
from collections import Counter, defaultdict
from pathlib import Path

PALETTE = {"viral": "#d62728", "host": "#1f77b4"}
PACKAGES = ("torch", "transformers", "numpy", "click", "jsonschema")


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


# ----------------------------------------------------------------------------------------------
# SVG charts
# ----------------------------------------------------------------------------------------------
def _svg(width: int, height: int, body: str, title: str) -> str:
    return (f'<figure><svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">'
            f'<rect width="100%" height="100%" fill="#fff"/>{body}</svg>'
            f'<figcaption>{html.escape(title)}</figcaption></figure>')


def bar_chart(values: dict, title: str, colors: dict | None = None, width=560, height=260) -> str:
    """Vertical bars with labels; `values` maps category -> number."""
    if not values:
        return f"<p>No data for {html.escape(title)}.</p>"
    left, bottom, top = 50, 60, 15
    top_value = max(values.values()) or 1
    slot = (width - left - 10) / len(values)
    parts = [f'<line x1="{left}" y1="{height - bottom}" x2="{width - 5}" y2="{height - bottom}" stroke="#333"/>',
             f'<text x="{left - 5}" y="{top + 4}" text-anchor="end" font-size="10">{_fmt(top_value)}</text>',
             f'<text x="{left - 5}" y="{height - bottom}" text-anchor="end" font-size="10">0</text>']
    for k, (name, value) in enumerate(values.items()):
        bar = (height - bottom - top) * value / top_value
        x = left + k * slot + slot * 0.1
        color = (colors or {}).get(name, "#4c72b0")
        parts.append(f'<rect x="{x:.1f}" y="{height - bottom - bar:.1f}" width="{slot * 0.8:.1f}" '
                     f'height="{bar:.1f}" fill="{color}"><title>{html.escape(str(name))}: {value}</title></rect>')
        if len(values) <= 40:
            parts.append(f'<text x="{x + slot * 0.4:.1f}" y="{height - bottom + 12}" font-size="10" '
                         f'transform="rotate(35 {x + slot * 0.4:.1f} {height - bottom + 12})">'
                         f'{html.escape(str(name))[:24]}</text>')
    return _svg(width, height, "".join(parts), title)


def histogram(series: dict, title: str, bins: int = 30, width=560, height=260) -> str:
    """Overlaid histograms, one per series (e.g. per label), on shared bins."""
    values = [v for vs in series.values() for v in vs]
    if not values:
        return f"<p>No data for {html.escape(title)}.</p>"
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    left, bottom, top = 50, 40, 15
    counts = {name: Counter(min(bins - 1, int((v - lo) / span * bins)) for v in vs) for name, vs in series.items()}
    top_count = max(max(c.values(), default=1) for c in counts.values())
    step = (width - left - 10) / bins
    parts = [f'<line x1="{left}" y1="{height - bottom}" x2="{width - 5}" y2="{height - bottom}" stroke="#333"/>',
             f'<text x="{left}" y="{height - bottom + 14}" font-size="10">{_fmt(lo)}</text>',
             f'<text x="{width - 10}" y="{height - bottom + 14}" font-size="10" text-anchor="end">{_fmt(hi)}</text>',
             f'<text x="{left - 5}" y="{top + 4}" text-anchor="end" font-size="10">{top_count}</text>']
    for n, (name, c) in enumerate(counts.items()):
        color = PALETTE.get(name, "#4c72b0")
        for b, count in c.items():
            h = (height - bottom - top) * count / top_count
            parts.append(f'<rect x="{left + b * step:.1f}" y="{height - bottom - h:.1f}" width="{step:.1f}" '
                         f'height="{h:.1f}" fill="{color}" fill-opacity="0.55"/>')
        parts.append(f'<text x="{width - 15}" y="{top + 12 + 14 * n}" font-size="11" text-anchor="end" '
                     f'fill="{color}">■ {html.escape(name)} (n={len(series[name])})</text>')
    return _svg(width, height, "".join(parts), title)


def scatter(points: dict, title: str, width=560, height=400) -> str:
    """2-D scatter, one colour per series; `points` maps name -> list of (x, y)."""
    xy = [p for ps in points.values() for p in ps]
    if len(xy) < 2:
        return f"<p>Too few points for {html.escape(title)}.</p>"
    xs, ys = [p[0] for p in xy], [p[1] for p in xy]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    pad = 20
    sx = lambda x: pad + (x - x0) / ((x1 - x0) or 1) * (width - 2 * pad)
    sy = lambda y: height - pad - (y - y0) / ((y1 - y0) or 1) * (height - 2 * pad)
    parts = [f'<rect x="{pad}" y="{pad}" width="{width - 2 * pad}" height="{height - 2 * pad}" fill="none" stroke="#ccc"/>']
    for n, (name, ps) in enumerate(points.items()):
        color = PALETTE.get(name, "#4c72b0")
        parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.2" fill="{color}" fill-opacity="0.6"/>' for x, y in ps]
        parts.append(f'<text x="{width - pad - 5}" y="{pad + 14 + 14 * n}" font-size="11" text-anchor="end" '
                     f'fill="{color}">■ {html.escape(name)} (n={len(ps)})</text>')
    return _svg(width, height, "".join(parts), title)


def _fmt(value) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


# ----------------------------------------------------------------------------------------------
# Data model
# ----------------------------------------------------------------------------------------------
def pca_2d(sample: dict) -> dict:
    """Project the sampled merged features onto their first two principal components, by label."""
    import torch

    rows, labels = [], []
    for chunk in sample.get("chunks", []):
        if "features" in chunk and len(chunk["features"]):
            rows.append(chunk["features"].float())
            labels += [chunk["label"]] * len(chunk["features"])
    if not rows or sum(len(r) for r in rows) < 3:
        return {}
    x = torch.cat(rows)
    x = x - x.mean(0)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    projected = (x @ v[:2].T).tolist()
    points = defaultdict(list)
    for label, point in zip(labels, projected):
        points[label].append(tuple(point))
    return dict(points)


def build_report(validation: dict, sample: dict, preflight: dict, embed_stats: list[dict], merge_stats: list[dict],
                 params: dict, nextflow_version: str = "") -> str:
    chunks = validation.get("chunks", [])
    per_group = defaultdict(int)
    group_label = {}
    for c in chunks:
        per_group[c["group"]] += c.get("proteins", 0)
        group_label[c["group"]] = c["label"]
    lengths = Counter()
    for c in chunks:
        lengths.update({int(k): v for k, v in c.get("length_counts", {}).items()})
    norms = defaultdict(list)
    for c in sample.get("chunks", []):
        if "protein_norms" in c:
            norms[c["label"]] += [float(v) for v in c["protein_norms"]]
    embed_chunks = [c for s in embed_stats for c in s.get("chunks", [])]
    throughput = {f"task {k + 1}": round(sum(c["proteins"] for c in s["chunks"]) / max(s["total_seconds"], 1e-9))
                  for k, s in enumerate(embed_stats) if s.get("chunks")}
    dropped = [(m["key"], i) for m in merge_stats for i in m.get("dropped_dnabert_only", []) + m.get("dropped_protein_only", [])]
    models = {(s.get("model"), s.get("config_hash"), s.get("precision"), s.get("device")) for s in embed_stats}

    checks = validation.get("checks", [])
    by_name = defaultdict(lambda: [0, 0])
    for c in checks:
        by_name[c["check"]][0 if c["passed"] else 1] += 1
    failed = [c for c in checks if not c["passed"]]
    status = "PASSED" if validation.get("passed") else "FAILED"

    def table(header, rows):
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    length_hist = {str(k): v for k, v in sorted(lengths.items())}
    if len(length_hist) > 60:
        length_series = [k for k, v in lengths.items() for _ in range(min(v, 5000))]
        length_plot = histogram({"proteins": length_series}, "Protein length (residues)")
    else:
        length_plot = bar_chart(length_hist, "Protein length (residues): proteins per length")
    sections = [
        f"<h1>virnucpro-extract report</h1><p class='status {status.lower()}'>Validation {status}: "
        f"{validation.get('checks_run', 0) - len(failed)} of {validation.get('checks_run', 0)} checks passed</p>",
        "<h2>Run</h2>" + table(["what", "value"], [
            ["Nextflow", nextflow_version or "-"],
            *[[k, v] for k, v in package_versions().items()],
            *[["model", f"{m} (config {h}, {p}, {d})"] for m, h, p, d in sorted(models, key=str)],
            ["embedding wall time (s)", round(sum(s.get("total_seconds", 0) for s in embed_stats), 1)],
        ]),
        "<h2>Parameters</h2>" + table(["param", "value"], [[k, json.dumps(v)] for k, v in sorted(params.items())]),
        "<h2>Data</h2>" + table(["group", "label", "chunks", "proteins"], [
            [g, group_label[g], sum(1 for c in chunks if c["group"] == g), n] for g, n in sorted(per_group.items())]),
        f"<p>{sum(per_group.values()):,} proteins in {len(chunks)} chunks; "
        f"{preflight.get('truncated', sum(c.get('truncated', 0) for c in embed_chunks))} truncated to "
        f"{preflight.get('max_length', params.get('max_length', 1022))} residues; {len(dropped)} ids dropped "
        f"(--allow_missing {'on' if params.get('allow_missing') else 'off'}).</p>",
        (table(["chunk", "dropped id"], dropped[:200]) if dropped else ""),
        "<h2>Pictures</h2><div class='plots'>"
        + bar_chart(dict(per_group), "Proteins per group", {g: PALETTE[l] for g, l in group_label.items()})
        + length_plot
        + histogram(dict(norms), "Protein embedding L2 norm by label")
        + scatter(pca_2d(sample), "PCA of a sample of merged 2048-d features")
        + bar_chart(throughput, "EMBED_PROTEINS throughput (proteins/s per task)") + "</div>",
        "<h2>Validation</h2>" + table(["check", "passed", "failed"], [[n, p, f] for n, (p, f) in sorted(by_name.items())]),
        (("<h3>Failures</h3>" + table(["chunk", "check", "file", "detail", "fix"],
                                      [[c["chunk"], c["check"], c["file"], c["detail"], c["fix"]] for c in failed]))
         if failed else ""),
    ]
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px;font-size:13px;"
             "text-align:left}th{background:#f3f3f3}.status{font-size:18px;font-weight:bold}.passed{color:#2a7a2a}"
             ".failed{color:#b22}.plots{display:flex;flex-wrap:wrap;gap:16px}figure{margin:0}"
             "figcaption{font-size:13px;color:#555}")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>virnucpro-extract report</title>"
            f"<style>{style}</style></head><body>{''.join(sections)}</body></html>\n")
