"""The code passes the project's ruff configuration (pyproject.toml): unused names, import order, bugbear."""
import shutil
import subprocess

import pytest

from conftest import REPO


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff not installed (requirements-test.txt)")
def test_ruff_finds_nothing():
    run = subprocess.run(["ruff", "check", "--output-format", "concise", str(REPO)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
