"""How the report writes numbers, durations and times: the summary keeps numbers as numbers, the page and its
charts format them here, so the two can never disagree on a value."""
from __future__ import annotations

import datetime as dt
import json


def number(value) -> str:
    """Readable numbers: thousands separators for large values, 3 significant digits otherwise."""
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 1):
        return f"{int(value):,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def tick(value) -> str:
    """Axis tick labels stay short (2.5M, 250k) so they do not overlap their neighbours."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e4, "k")):
        if abs(value) >= size:
            return f"{value / size:g}{suffix}" if suffix != "k" else f"{value / 1e3:,.0f}k"
    return number(value)


def whole(value) -> str:
    """A rate as a whole number with thousands separators (reads/s: decimals there would be noise)."""
    return f"{value:,.0f}"


def duration(seconds: float | None) -> str:
    """Seconds as a reader thinks of them (12.5 s, 3 min 04 s, 2 h 05 min); `-` where the time is not known."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def timestamp(iso: str) -> str:
    """The summary's ISO 8601 time with a space instead of the `T` and the zone's name, as a person reads it."""
    return dt.datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def dash(value):
    """`-` for a count that does not apply (a stage a prefix skipped); other values pass as they are, so a
    number stays a number and is written as one."""
    return "-" if value is None else value


def json_text(value) -> str:
    """A parameter's value as it is written in params.json (true, [1, 2]); the page escapes it like any text."""
    return json.dumps(value)


FILTERS = {"number": number, "whole": whole, "duration": duration, "timestamp": timestamp, "json": json_text,
           "dash": dash}
