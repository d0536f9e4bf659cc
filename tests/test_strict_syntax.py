"""The pipeline also parses under Nextflow's strict syntax (NXF_SYNTAX_PARSER=v2, the default from Nextflow
26.04): a user's own current Nextflow must run it, not only the 25.04 installed here."""
import os
import subprocess

import pytest
from test_pipeline import PROCESSES, files_under, process_name, trace_rows

from conftest import REPO, demo_chunks, nextflow_output

pytestmark = pytest.mark.pipeline
STRICT = {**os.environ, "NXF_OFFLINE": "true", "NXF_ANSI_LOG": "false", "NXF_SYNTAX_PARSER": "v2"}


def strict_errors(text: str) -> list[str]:
    """Parser errors (its warnings about config options it does not know yet are not errors)."""
    return [line for line in text.splitlines() if line.startswith(("Error ", "ERROR"))]


# Together these two read every config file (a profile's includeConfig is read only when it is selected).
@pytest.mark.parametrize("profile", ["docker", "test,slurm,singularity"])
def test_every_profile_parses_under_the_strict_syntax(profile, tmp_path):
    run = subprocess.run(["nextflow", "config", str(REPO), "-profile", profile], cwd=tmp_path, env=STRICT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and not strict_errors(run.stdout + run.stderr), run.stdout + run.stderr


def test_stub_run_from_fasta_only_under_the_strict_syntax(tmp_path, fasta_only_data, tiny_model, tiny_dna_model):
    """Every process's stub, EMBED_DNA included (no DNABERT-S files given), parsed and run under the strict syntax."""
    run = subprocess.run(["nextflow", "run", str(REPO / "main.nf"), "-ansi-log", "false", "-profile", "test",
                          "-stub-run", "--data_dir", str(fasta_only_data), "--esm_model", str(tiny_model),
                          "--dnabert_model", str(tiny_dna_model), "--outdir", str(tmp_path / "results")],
                         cwd=tmp_path, env=STRICT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and not strict_errors(run.stdout + run.stderr), nextflow_output(run)[-6000:]
    assert {process_name(r) for r in trace_rows(tmp_path / "results")} == set(PROCESSES) | {"EMBED_DNA"}
    chunks = demo_chunks(fasta_only_data)
    assert files_under(tmp_path / "results" / "dnabert") == {f"{c['group']}/{c['id']}_DNABERT_S.pt" for c in chunks}
    assert files_under(tmp_path / "results" / "data_merge") == {f"{c['group']}_merged/{c['id']}_merged.pt"
                                                                for c in chunks}
