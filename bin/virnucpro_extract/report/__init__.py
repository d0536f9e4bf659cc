"""`report`: one self-contained HTML page summarising a run: the run, the data, validation, pictures.

Self-contained means: inline CSS and inline SVG only, no scripts, no fonts or images to fetch. A
Content-Security-Policy meta tag makes the browser refuse (and log) anything else, so the browser
test's "no console messages" also proves nothing is loaded from anywhere at view time.

`summary.build_summary` gathers what the page shows as plain data; `render_report` writes it with the
autoescaping Jinja template `templates/report.html.j2`, so no input text reaches the page unescaped.
"""
from __future__ import annotations

import datetime as dt
import functools
from pathlib import Path

import jinja2
from markupsafe import Markup

from .filters import FILTERS
from .plots import PALETTE, TEMPLATE_FUNCTIONS, nice_ticks
from .summary import (
    build_summary,
    chunk_key,
    combine_samples,
    combine_validations,
    merge_chunk_stats,
    package_versions,
    read_stats,
    read_versions,
    starting_points,
    task_name,
    throughput,
)

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
# Beside this file, not on a package path: the CLI runs from bin/ (put on sys.path), installed or not.
TEMPLATES = Path(__file__).resolve().parent / "templates"

# What the CLI and the tests import from `report` (the module this package replaced), plus the two halves.
__all__ = ["CSP", "PALETTE", "build_report", "build_summary", "chunk_key", "combine_samples", "combine_validations",
           "merge_chunk_stats", "nice_ticks", "package_versions", "read_stats", "read_versions", "render_report",
           "starting_points", "task_name", "throughput"]


@functools.cache
def _environment() -> jinja2.Environment:
    """One environment per process. StrictUndefined turns a misspelt summary field into an error, not a blank."""
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                     undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                                     keep_trailing_newline=True)
    environment.filters.update(FILTERS)
    environment.globals.update(TEMPLATE_FUNCTIONS)
    return environment


def render_report(summary: dict) -> str:
    """The page for a summary from `build_summary`. The stylesheet and the policy are our own text, inserted as
    they are: escaping would break their quotes (a <style> element does not decode entities)."""
    style = Markup((TEMPLATES / "report.css").read_text())
    return _environment().get_template("report.html.j2").render(**summary, csp=Markup(CSP), style=style)


def build_report(validation: dict, sample: dict, preflight: dict, embed_stats: list[dict], merge_stats: list[dict],
                 params: dict, nextflow_version: str = "", generated_at: dt.datetime | None = None,
                 dna_stats: list[dict] = (), versions: dict | None = None, stages: list[dict] = (),
                 not_embedded: list[dict] = ()) -> str:
    """The report's HTML: `build_summary`'s arguments (see there), rendered."""
    return render_report(build_summary(validation, sample, preflight, embed_stats, merge_stats, params,
                                       nextflow_version, generated_at, dna_stats, versions, stages, not_embedded))
