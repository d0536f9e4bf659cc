"""Hard-link publishing (the atomic default) across file systems is caught in PREFLIGHT, with its fix."""
import os
from pathlib import Path

import pytest

from conftest import ERROR_LINE
from virnucpro_extract.preflight import check_publish_mode

OTHER_FS = Path("/dev/shm")


def test_outdir_beside_the_work_dir_is_fine(tmp_path):
    assert check_publish_mode({"outdir": str(tmp_path / "results" / "new"), "publish_dir_mode": "link"}, tmp_path) == []


@pytest.mark.skipif(not OTHER_FS.is_dir() or os.stat(OTHER_FS).st_dev == os.stat(Path.cwd()).st_dev,
                    reason="needs /dev/shm on another file system than the work directory")
def test_outdir_on_another_file_system_is_an_error_line_unless_copying(tmp_path):
    params = {"outdir": str(OTHER_FS / "virnucpro-not-created" / "results"), "publish_dir_mode": "link"}
    errors = check_publish_mode(params, tmp_path)
    assert len(errors) == 1
    match = ERROR_LINE.match(str(errors[0]))
    assert match and match["where"] == "--publish_dir_mode link"
    assert "another file system" in match["problem"] and "--publish_dir_mode copy" in match["fix"]
    assert not (OTHER_FS / "virnucpro-not-created").exists()
    assert check_publish_mode({**params, "publish_dir_mode": "copy"}, tmp_path) == []
