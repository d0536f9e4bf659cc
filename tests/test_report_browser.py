"""The report in a real browser: headless Chromium (Debian's `chromium`) loads report.html with no console
message at all, and a screenshot of the expected size shows the plots (the viral and host colours are drawn).

The report has no scripts and a Content-Security-Policy that forbids loading anything, so any console
message (a blocked fetch, a parse problem) is a defect. The report comes from the CLI steps
(preflight → embed → merge, the cli_outputs fixture, then validate → report) on the tiny CPU model.
"""
from __future__ import annotations

import re
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from test_report import FIGURES, make_report

CHROMIUM = Path("/usr/bin/chromium")
WIDTH, HEIGHT = 1280, 2400
VIRAL_RGB, HOST_RGB = (0xD6, 0x27, 0x28), (0x1F, 0x77, 0xB4)  # report.PALETTE
CONSOLE_LINE = re.compile(r":CONSOLE[(:]")  # Chromium's --enable-logging lines for console messages

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs headless Chromium at /usr/bin/chromium "
                       "(Debian: apt-get install -y chromium)"),
]


def chromium(url: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium, offline and quiet, console messages logged to stderr."""
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args, url]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def console_messages(run: subprocess.CompletedProcess) -> list[str]:
    return [line for line in run.stderr.splitlines() if CONSOLE_LINE.search(line)]


def decode_png(data: bytes) -> np.ndarray:
    """An 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes) -> uint8 [height, width, channels]."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0, header
    bpp = 3 if color == 2 else 4
    stride = width * bpp
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8).reshape(height, stride + 1)
    image = np.zeros((height, stride), dtype=np.uint8)
    previous = np.zeros(stride, dtype=np.uint8)
    for y in range(height):
        kind, line = raw[y, 0], raw[y, 1:]
        if kind == 0:  # None
            row = line.copy()
        elif kind == 1:  # Sub: a running sum per channel
            row = np.cumsum(line.reshape(-1, bpp), axis=0, dtype=np.uint8).reshape(-1)
        elif kind == 2:  # Up
            row = line + previous
        else:  # Average (3) and Paeth (4) depend on the pixel just decoded: one byte at a time
            out, up = bytearray(line.tobytes()), previous.tobytes()
            for i in range(stride):
                a = out[i - bpp] if i >= bpp else 0
                b = up[i]
                if kind == 3:
                    out[i] = (out[i] + ((a + b) >> 1)) & 255
                else:
                    c = up[i - bpp] if i >= bpp else 0
                    pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                    out[i] = (out[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
            row = np.frombuffer(bytes(out), dtype=np.uint8)
        image[y] = row
        previous = row
    return image.reshape(height, width, bpp)[:, :, :3]


def pixels_near(image: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 12) -> int:
    return int((np.abs(image.astype(np.int16) - np.array(rgb, dtype=np.int16)).max(axis=2) <= tolerance).sum())


@pytest.fixture(scope="module")
def report(tmp_path_factory, cli_outputs) -> Path:
    path, validation = make_report(tmp_path_factory.mktemp("browser_report"), cli_outputs)
    assert validation["passed"] is True
    return path


def test_console_messages_are_caught(tmp_path):
    """The check below is not vacuous: a page that fetches something under the report's policy logs it."""
    from virnucpro_extract.report import CSP

    page = tmp_path / "fetches.html"
    page.write_text(f'<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="{CSP}">'
                    '</head><body><img src="http://127.0.0.1:9/x.png" alt=""></body></html>')
    run = chromium(page.as_uri(), tmp_path / "profile", "--dump-dom")
    assert run.returncode == 0, run.stderr[-3000:]
    assert console_messages(run), run.stderr[-3000:]


def test_report_loads_in_chromium_without_console_messages(report, tmp_path):
    run = chromium(report.as_uri(), tmp_path / "profile", "--dump-dom")
    assert run.returncode == 0, run.stderr[-3000:]
    assert console_messages(run) == [], "\n".join(console_messages(run))
    dom = run.stdout
    assert "Validation PASSED" in dom and dom.count("<svg") == len(FIGURES)
    for title in FIGURES:
        assert f"<h3>{title}</h3>" in dom, title


def test_report_screenshot_shows_the_plots(report, tmp_path):
    shot = tmp_path / "report.png"
    run = chromium(report.as_uri(), tmp_path / "profile", f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}")
    assert run.returncode == 0 and shot.is_file(), run.stderr[-3000:]
    assert console_messages(run) == [], "\n".join(console_messages(run))
    image = decode_png(shot.read_bytes())
    assert image.shape == (HEIGHT, WIDTH, 3)
    not_white = (image < 245).any(axis=2).mean()
    assert not_white > 0.05, f"screenshot nearly blank ({not_white:.1%} of pixels not white)"
    colours = len(np.unique(image.reshape(-1, 3)[::7], axis=0))
    assert colours > 50, f"only {colours} colours: text and tables but no plots?"
    # Bars, histograms and points in the label colours: the SVG plots were drawn, not only their captions.
    assert pixels_near(image, VIRAL_RGB) > 500 and pixels_near(image, HOST_RGB) > 500, \
        (pixels_near(image, VIRAL_RGB), pixels_near(image, HOST_RGB))
