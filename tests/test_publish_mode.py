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


@pytest.mark.pipeline
def test_copy_publishing_repairs_a_cut_off_copy_on_resume(tmp_path, demo_data, tiny_model):
    """Nextflow's 'copy' is not atomic; a file cut off by a kill mid-copy must not survive -resume (Nextflow
    would skip republishing a cached task's file unless told to overwrite)."""
    from conftest import nextflow, nextflow_output
    from test_pipeline import trace_rows

    args = ["-profile", "test", "--data_dir", demo_data, "--esm_model", tiny_model, "--publish_dir_mode", "copy",
            "--outdir", tmp_path / "results"]
    run = nextflow(*args, cwd=tmp_path)
    assert run.returncode == 0, nextflow_output(run)[-4000:]
    published = sorted((tmp_path / "results" / "data_merge").rglob("*_merged.pt"))
    assert published and not any(p.stat().st_nlink > 1 for p in published)  # copies, not links
    whole = published[0].read_bytes()
    published[0].write_bytes(whole[: len(whole) // 3])  # as a kill mid-copy leaves it
    resumed = nextflow(*args, "-resume", cwd=tmp_path)
    assert resumed.returncode == 0, nextflow_output(resumed)[-4000:]
    assert {r["status"] for r in trace_rows(tmp_path / "results")} == {"CACHED"}, [(r["process"], r["status"]) for r in trace_rows(tmp_path / "results")]
    assert published[0].read_bytes() == whole
