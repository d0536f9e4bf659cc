"""The `virnucpro-extract` command line: one entry point, one subcommand per pipeline step.

Each subcommand runs on its own outside Nextflow; the pipeline's modules call exactly these.
Rejected input prints one contract line per problem (`error: <file>: <record>: <problem> — <fix>`)
and exits with status 1, which Nextflow does not retry; a CUDA out-of-memory that batch splitting
could not absorb exits with EXIT_RETRY (75), which it retries with half the token budget.
"""
from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click

from .defaults import DEFAULT_COMPILE_MIN_TOKENS, DEFAULT_DNABERT_MODEL, DEFAULT_ESM_MODEL, DEFAULT_MAX_LENGTH, GENBANK_READERS, VERSION
from .errors import InputError, InputErrors, out_of_memory_error
from .files import write_json, write_text

EXAMPLE = "\n\n\b\nExample:\n  "


def reports_input_errors(command):
    """Turn InputError(s) into contract lines on stderr and their exit status (1, or EXIT_RETRY for a
    CUDA out-of-memory that batch splitting could not catch)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (InputError, InputErrors) as exc:
            failure = exc
        except Exception as exc:  # torch.OutOfMemoryError, matched by name: torch is not imported here
            if type(exc).__name__ != "OutOfMemoryError":
                raise
            failure = out_of_memory_error(exc)
        for error in getattr(failure, "errors", [failure]):
            click.echo(str(error), err=True)
        sys.exit(failure.exit_status)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
             epilog=EXAMPLE + "virnucpro-extract preflight --data_dir data/ --esm_model ./FastESM2_650 --outdir qc/\n"
             "  virnucpro-extract <command> --help   (each command's options, with an example)")
@click.version_option(package_name=None, version=VERSION, prog_name="virnucpro-extract")
def main():
    """FastESM2 + DNABERT-S training features for VirNucPro, one step per subcommand."""


# ----------------------------------------------------------------------------------------------
@main.command(epilog=EXAMPLE + "virnucpro-extract preflight --data_dir data/ --esm_model ./FastESM2_650 --outdir qc/")
@click.option("--params_json", type=click.Path(exists=True, dir_okay=False), help="Pipeline params as JSON (from Nextflow).")
@click.option("--schema", type=click.Path(exists=True, dir_okay=False), help="nextflow_schema.json to validate params against.")
@click.option("--input", "input_", help="Samplesheet CSV: id,label,protein_fasta,dnabert_embeddings[,group].")
@click.option("--data_dir", help="A VirNucPro data/ folder to discover chunks in.")
@click.option("--esm_model", default=None, help="Hub id or local directory of the protein model.")
@click.option("--max_length", type=int, default=None, help=f"Residues kept per protein (default {DEFAULT_MAX_LENGTH}).")
@click.option("--balance_hosts", is_flag=True, default=None, help="Sample host files as VirNucPro does.")
@click.option("--seed", type=int, default=None, help="Seed of --balance_hosts (default 42).")
@click.option("--allow_missing", is_flag=True, default=None, help="Drop ids present on one side only.")
@click.option("--dnabert_model", default=None, help="DNABERT-S hub id or directory (checked when a chunk needs it).")
@click.option("--recompute_dnabert", is_flag=True, default=None,
              help="Mark every chunk with a nucleotide FASTA for DNABERT-S computation.")
@click.option("--staged", type=click.Path(exists=True, dir_okay=False),
              help="Nextflow's staged inputs: lines of <staged path><TAB><the path the user knows it by>. Only these "
                   "files are read; errors and the manifest name the user's paths.")
@click.option("--esm_model_dir", type=click.Path(file_okay=False), help="Staged local directory of --esm_model.")
@click.option("--dnabert_model_dir", type=click.Path(file_okay=False), help="Staged local directory of --dnabert_model.")
@click.option("--outdir", default=".", show_default=True, help="Where chunks.csv and preflight.json go.")
@click.option("--workers", type=int, default=1, show_default=True, help="Processes reading chunk files.")
@click.option("--discover_only", is_flag=True, help="List chunks without reading them (the pipeline's stub run).")
@click.option("--launch_dir", type=click.Path(file_okay=False), default=".",
              help="Folder that relative model paths are relative to (Nextflow's launch directory).")
@reports_input_errors
def preflight(params_json, schema, input_, data_dir, esm_model, max_length, balance_hosts, seed, allow_missing,
              dnabert_model, recompute_dnabert, staged, esm_model_dir, dnabert_model_dir, outdir, workers,
              discover_only, launch_dir):
    """Check parameters and every input file; write the chunk manifest (chunks.csv)."""
    from .preflight import InputFiles, run_preflight

    params = json.loads(Path(params_json).read_text()) if params_json else {}
    for name, value in dict(input=input_, data_dir=data_dir, esm_model=esm_model, max_length=max_length,
                            balance_hosts=balance_hosts, seed=seed, allow_missing=allow_missing,
                            dnabert_model=dnabert_model, recompute_dnabert=recompute_dnabert).items():
        if value is not None:
            params[name] = value
    params.setdefault("esm_model", DEFAULT_ESM_MODEL)
    files = InputFiles.from_tsv(staged) if staged else InputFiles()
    model_dirs = {"esm_model": esm_model_dir, "dnabert_model": dnabert_model_dir}
    summary = run_preflight(params, outdir, schema, workers, discover_only, Path(launch_dir), files,
                            {k: Path(v) for k, v in model_dirs.items() if v})
    click.echo(f"preflight: {summary['chunks_selected']} chunks, {summary['proteins']} proteins, "
               f"{summary['truncated']} longer than {summary['max_length']} residues (will be truncated)", err=True)


# ----------------------------------------------------------------------------------------------
def parse_chunk(value: str) -> tuple[str, str]:
    """`GROUP/ID=path.fa` -> (key, path); a bare `path.fa` is keyed by its stem.

    The path is resolved through symbolic links, so errors name the user's file, not a task's staged link.
    """
    key, sep, path = value.partition("=")
    key, path = (key, path) if sep else (Path(value).stem, value)
    return key, os.path.realpath(path) if os.path.exists(path) else path


@main.command(epilog=EXAMPLE + "virnucpro-extract embed viral.1.1/output_1=output_1.fa --esm_model ./FastESM2_650 "
              "--outdir esm/")
@click.argument("chunks", nargs=-1, required=True)
@click.option("--outdir", default=".", show_default=True, help="Writes <outdir>/<key>_ESM.pt per chunk.")
@click.option("--esm_model", default=DEFAULT_ESM_MODEL, show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default=None,
              help="Default bf16 on GPU (fp16 before compute capability 8.0), fp32 on CPU.")
@click.option("--use_gpu", type=bool, default=True, show_default=True)
@click.option("--toks_per_batch", type=click.IntRange(min=1), default=None, help="Token budget per forward pass (default from free memory).")
@click.option("--max_length", type=click.IntRange(min=1), default=DEFAULT_MAX_LENGTH, show_default=True)
@click.option("--trust_remote_code", type=bool, default=False, show_default=True,
              help="Use the checkpoint's own model classes instead of transformers' EsmModel.")
@click.option("--compile", "compile_model", type=bool, default=True, show_default=True,
              help="torch.compile the model on GPU (ignored on CPU); compiled kernels are cached in TORCHINDUCTOR_CACHE_DIR.")
@click.option("--compile_min_tokens", type=click.IntRange(min=0), default=DEFAULT_COMPILE_MIN_TOKENS, show_default=True,
              help="Compile only a task (or, with --gpus, a worker's share) of at least this many tokens: "
                   "every process pays the compile again, which smaller tasks do not win back.")
@click.option("--gpus", type=click.IntRange(min=0), default=1, show_default=True,
              help="Worker processes, one per visible GPU (CUDA_VISIBLE_DEVICES); 0: every visible GPU.")
@click.option("--fast_forward", type=bool, default=True, show_default=True,
              help="Our packed ESM-2 forward (same weights and maths as transformers' EsmModel, no padding); "
                   "false: transformers' EsmModel.")
@click.option("--fused_kernels", type=bool, default=True, show_default=True,
              help="On GPU, run the fast forward through our Triton kernels (fused bias + residual + LayerNorm, "
                   "in-place rotary), eager, with nothing to compile; false: one torch.compile'd layer for all.")
@click.option("--attempt", type=click.IntRange(min=1), default=1, show_default=True,
              help="Nextflow's task.attempt: each retry halves the token budget.")
@click.option("--stats", type=click.Path(dir_okay=False), help="Write per-chunk statistics as JSON here.")
@reports_input_errors
def embed(chunks, outdir, esm_model, precision, use_gpu, toks_per_batch, max_length, trust_remote_code, compile_model,
          compile_min_tokens, gpus, fast_forward, fused_kernels, attempt, stats):
    """Embed protein FASTA chunks (GROUP/ID=FASTA or FASTA) with an ESM-2-family model."""
    import os

    from .devices import plan_workers, run_workers, visible_devices
    from .embed import run_embed

    parsed = [parse_chunk(c) for c in chunks]
    devices = [None]
    if gpus != 1:
        import torch

        count = torch.cuda.device_count() if use_gpu else 0
        devices = plan_workers(visible_devices(os.environ.get("CUDA_VISIBLE_DEVICES"), count), gpus)
    if len(devices) > 1:
        worker_args = ["--outdir", outdir, "--esm_model", esm_model, "--use_gpu", str(use_gpu), "--max_length",
                       str(max_length), "--trust_remote_code", str(trust_remote_code), "--compile", str(compile_model),
                       "--compile_min_tokens", str(compile_min_tokens), "--fast_forward", str(fast_forward),
                       "--fused_kernels", str(fused_kernels),
                       *(["--precision", precision] if precision else []),
                       *(["--toks_per_batch", str(toks_per_batch)] if toks_per_batch else []), "--attempt", str(attempt)]
        summary = run_workers(parsed, devices, worker_args)
    else:
        summary = run_embed(parsed, outdir, esm_model, precision, use_gpu, toks_per_batch, max_length,
                            trust_remote_code, compile_model and use_gpu, attempt,
                            compile_min_tokens=compile_min_tokens, fast_forward=fast_forward,
                            fused_kernels=fused_kernels)
    if stats:
        write_json(stats, summary)


# ----------------------------------------------------------------------------------------------
@main.command("embed-dna", epilog=EXAMPLE + "virnucpro-extract embed-dna viral.1.1/output_1=output_1.fa "
              "--dnabert_model ./DNABERT-S --outdir dnabert/")
@click.argument("chunks", nargs=-1, required=True)
@click.option("--outdir", default=".", show_default=True, help="Writes <outdir>/<key>_DNABERT_S.pt per chunk.")
@click.option("--dnabert_model", default=DEFAULT_DNABERT_MODEL, show_default=True,
              help="Hub id or local directory of DNABERT-S (its own model code is used, with PyTorch attention).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default=None,
              help="Default bf16 on GPU (fp16 before compute capability 8.0), fp32 on CPU.")
@click.option("--use_gpu", type=bool, default=True, show_default=True)
@click.option("--toks_per_batch", type=click.IntRange(min=1), default=None, help="Token budget per forward pass (default from free memory).")
@click.option("--attempt", type=click.IntRange(min=1), default=1, show_default=True,
              help="Nextflow's task.attempt: each retry halves the token budget.")
@click.option("--stats", type=click.Path(dir_okay=False), help="Write per-chunk statistics as JSON here.")
@reports_input_errors
def embed_dna(chunks, outdir, dnabert_model, precision, use_gpu, toks_per_batch, attempt, stats):
    """Embed nucleotide FASTA chunks (GROUP/ID=FASTA or FASTA) with DNABERT-S, as VirNucPro did (mean over all tokens)."""
    from .embed_dna import run_embed_dna

    summary = run_embed_dna([parse_chunk(c) for c in chunks], outdir, dnabert_model, precision, use_gpu, toks_per_batch,
                            attempt)
    if stats:
        write_json(stats, summary)


# ----------------------------------------------------------------------------------------------
@main.command(epilog=EXAMPLE + "virnucpro-extract merge --table merge.csv --stats group_0.merge.json\n"
              "  virnucpro-extract merge --dnabert output_1_DNABERT_S.pt --esm output_1_ESM.pt --label viral "
              "--output viral.1.1_merged/output_1_merged.pt")
@click.option("--table", type=click.Path(exists=True, dir_okay=False),
              help="CSV of chunks to merge: key,group,id,label,dnabert_embeddings,esm,merged (output path).")
@click.option("--dnabert", type=click.Path(dir_okay=False), help="One chunk instead of a table: its DNABERT-S .pt ...")
@click.option("--esm", type=click.Path(dir_okay=False), help="... its *_ESM.pt ...")
@click.option("--label", type=click.Choice(["viral", "host"]), help="... its label ...")
@click.option("--output", type=click.Path(dir_okay=False), help="... and the merged file to write.")
@click.option("--allow_missing", type=bool, default=False, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Chunks merged in parallel.")
@click.option("--stats", type=click.Path(dir_okay=False), help="Write per-chunk row and dropped-id counts as JSON here.")
@reports_input_errors
def merge(table, dnabert, esm, label, output, allow_missing, workers, stats):
    """Join DNABERT-S (768) and ESM (1280) vectors by id into 2048-column features, for one chunk or a table."""
    from .formats import read_manifest
    from .merge import run_merge

    if table:
        rows = read_manifest(table)
    elif dnabert and esm and label and output:
        # named as the pipeline lays it out, <group>_merged/<id>_merged.pt, where it is
        group = Path(output).parent.name.removesuffix("_merged") or label
        chunk_id = Path(output).stem.removesuffix("_merged")
        rows = [{"key": f"{group}/{chunk_id}", "group": group, "id": chunk_id, "label": label,
                 "dnabert_embeddings": dnabert, "esm": esm, "merged": output}]
    else:
        raise click.UsageError("give --table, or --dnabert, --esm, --label and --output")
    result = run_merge(rows, allow_missing, workers)
    if stats:
        write_json(stats, result)


# ----------------------------------------------------------------------------------------------
@main.command(epilog=EXAMPLE + "virnucpro-extract validate --manifest results/pipeline_info/chunks.csv "
              "--outdir results --out validation.json")
@click.option("--table", type=click.Path(exists=True, dir_okay=False),
              help="CSV with key,group,id,label,protein_fasta,dnabert_embeddings,esm,merged.")
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False), help="chunks.csv of preflight ...")
@click.option("--outdir", type=click.Path(file_okay=False), help="... with the published outputs under here.")
@click.option("--allow_missing", type=bool, default=False, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Chunks checked in parallel.")
@click.option("--out", default="validation.json", show_default=True)
@click.option("--sample", default=None, help="Also write a sample of features for the report (.pt).")
@reports_input_errors
def validate(table, manifest, outdir, allow_missing, workers, out, sample):
    """Check every output: widths, NaN/Inf, counts, id alignment, labels."""
    from .files import save_pt
    from .formats import read_manifest
    from .validate import failure_lines, outputs_table, run_validate

    if table:
        rows = read_manifest(table)
    elif manifest and outdir:
        rows = outputs_table(read_manifest(manifest), outdir)
    else:
        raise click.UsageError("give --table, or --manifest with --outdir")
    document, plot_sample = run_validate(rows, allow_missing, workers=workers)
    write_json(out, document)
    if sample:
        save_pt(plot_sample, sample)
    for line in failure_lines(document):
        click.echo(line, err=True)
    click.echo(f"validate: {document['checks_run'] - document['checks_failed']}/{document['checks_run']} checks "
               f"passed over {len(rows)} chunks", err=True)
    sys.exit(0 if document["passed"] else 1)


# ----------------------------------------------------------------------------------------------
@main.command(epilog=EXAMPLE + "virnucpro-extract report --validation group_0.validation.json --sample group_0.sample.pt "
              "--preflight pipeline_info/preflight.json --embed_stats pipeline_info/embed/group_0.embed.json "
              "--params_json pipeline_info/params.json --out report.html")
@click.option("--validation", "validations", required=True, multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="validation.json of validate (repeat per task group).")
@click.option("--sample", "samples", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Feature sample from validate --sample (repeat per task group).")
@click.option("--preflight", "preflight_json", type=click.Path(exists=True, dir_okay=False), help="preflight.json.")
@click.option("--embed_stats", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Statistics of one embed task (<task>.embed.json; repeat per task): throughput per task.")
@click.option("--merge_stats", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Statistics of one merge task (<task>.merge.json; repeat per task): dropped ids.")
@click.option("--dna_stats", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Statistics of one embed-dna task (<task>.embed_dna.json; repeat per task), where DNABERT-S "
                   "was computed.")
@click.option("--identify_stats", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Statistics of one identify task (repeat per task), for prefixes started from genomes.")
@click.option("--split_stats", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Statistics of one split task (repeat per prefix split here).")
@click.option("--plan", "plan_json", type=click.Path(exists=True, dir_okay=False), help="plan.json of PLAN_CHUNKS.")
@click.option("--params_json", type=click.Path(exists=True, dir_okay=False), help="The run's params as JSON.")
@click.option("--versions", "versions_yml", type=click.Path(exists=True, dir_okay=False),
              help="The run's pipeline_info/versions.yml (software of every process); default: this environment's.")
@click.option("--nextflow_version", default="", help="Shown with the other versions.")
@click.option("--validation_out", default=None, help="Also write the combined validation document here.")
@click.option("--versions_out", default=None, help="Also write the software versions shown as JSON here.")
@click.option("--out", default="report.html", show_default=True)
@reports_input_errors
def report(validations, samples, preflight_json, embed_stats, merge_stats, dna_stats, identify_stats, split_stats,
           plan_json, params_json, versions_yml, nextflow_version, validation_out, versions_out, out):
    """Write the self-contained HTML report of a run."""
    from .files import load_pt
    from .report import (
        build_report,
        combine_samples,
        combine_validations,
        merge_chunk_stats,
        package_versions,
        read_stats,
        read_versions,
        starting_points,
    )

    def read(path) -> dict:
        return read_stats(path) if path else {}

    validation = combine_validations([read(p) for p in validations])
    sample = combine_samples([load_pt(p) for p in samples])
    versions = read_versions(versions_yml) if versions_yml else package_versions()
    preflight, plan_document = read(preflight_json), read(plan_json)
    stages = starting_points(preflight, [read(p) for p in identify_stats], [read(p) for p in split_stats], plan_document)
    html = build_report(validation, sample, preflight, [read(p) for p in embed_stats],
                        merge_chunk_stats([read(p) for p in merge_stats]),
                        {k: v for k, v in read(params_json).items() if not k.startswith("_")}, nextflow_version,
                        dna_stats=[read(p) for p in dna_stats], versions=versions, stages=stages,
                        not_embedded=plan_document.get("not_embedded", []))
    write_text(out, html)
    if validation_out:
        write_json(validation_out, validation)
    if versions_out:
        write_json(versions_out, {"nextflow": nextflow_version, **versions})


# ----------------------------------------------------------------------------------------------
@main.command(epilog=EXAMPLE + "virnucpro-extract identify --fasta viral.1.1.genomic.fna.gz --genbank viral.1.genomic.gbff.gz "
              "--nucleotide_out viral.1.1.identified_nucleotide.fa --protein_out viral.1.1.identified_protein.fa")
@click.option("--fasta", required=True, type=click.Path(exists=True, dir_okay=False), help="Genome FASTA (plain or .gz).")
@click.option("--genbank", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The GenBank file annotating it (plain or .gz).")
@click.option("--read_length", type=click.IntRange(min=3), default=300, show_default=True,
              help="Read window length (VirNucPro: 300 or 500).")
@click.option("--first_record", type=click.IntRange(min=0), default=0, show_default=True,
              help="Identify the FASTA's records from this index ...")
@click.option("--last_record", type=click.IntRange(min=0), default=None, help="... up to (not including) this one.")
@click.option("--genbank_reader", type=click.Choice(GENBANK_READERS), default="scan", show_default=True,
              help="How the GenBank file's CDS translations are read: the fast scan of NCBI's layout, or Biopython "
                   "(PREFLIGHT picks it for a file the scan would read otherwise).")
@click.option("--nucleotide_out", required=True, type=click.Path(dir_okay=False))
@click.option("--protein_out", required=True, type=click.Path(dir_okay=False))
@click.option("--stats", type=click.Path(dir_okay=False), help="Write records, reads, frames kept ... as JSON here.")
@reports_input_errors
def identify(fasta, genbank, read_length, first_record, last_record, genbank_reader, nucleotide_out, protein_out,
             stats):
    """RefSeq genomes -> identified FASTA, as VirNucPro's make_train_dataset_300/500.py writes it."""
    from .genomes import identify_genome

    result = identify_genome(fasta, genbank, read_length, nucleotide_out, protein_out, first_record, last_record,
                             genbank_reader)
    if stats:
        write_json(stats, result.as_dict())
    click.echo(f"identify: {result.records} records, {result.reads} reads ({result.reads_ambiguous} with ambiguous "
               f"bases), {result.frames_kept} frames kept", err=True)


@main.command(epilog=EXAMPLE + "virnucpro-extract split --prefix viral.1.1 --protein viral.1.1.identified_protein.fa "
              "--nucleotide viral.1.1.identified_nucleotide.fa --outdir chunks")
@click.option("--prefix", required=True, help="The chunks' prefix: <prefix>.identified_{protein,nucleotide}/.")
@click.option("--protein", "proteins", required=True, multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Identified protein FASTA (repeat for the shards of one genome FASTA, in order).")
@click.option("--nucleotide", "nucleotides", required=True, multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Its nucleotide FASTA (as many, in the same order).")
@click.option("--sequences_per_file", type=click.IntRange(min=1), default=10000, show_default=True)
@click.option("--max_length", type=click.IntRange(min=1), default=DEFAULT_MAX_LENGTH, show_default=True,
              help="Proteins longer than this are counted (they will be truncated).")
@click.option("--outdir", default="chunks", show_default=True)
@click.option("--identified_outdir", default=None,
              help="Also write the identified pair as one file each here (the shards of a genome FASTA joined).")
@click.option("--genome", default=None, help="The genome FASTA the shards come from: no frame at all is then an error.")
@click.option("--stats", type=click.Path(dir_okay=False), help="Write one row per chunk file as JSON here.")
@reports_input_errors
def split(prefix, proteins, nucleotides, sequences_per_file, max_length, outdir, identified_outdir, genome, stats):
    """Identified FASTA -> chunk files of --sequences_per_file records (VirNucPro's split_fasta_file)."""
    from .split import concatenate, split_identified

    rows = split_identified(prefix, list(proteins), list(nucleotides), outdir, sequences_per_file, max_length)
    if genome and not rows:
        raise InputError(genome, "-", "no frame of any read was kept (no stop-free frame is a substring of a CDS "
                         "translation of its GenBank records)", "check that the GenBank file is the one annotating "
                         "this genome FASTA (the same record ids), or leave the genome out")
    if identified_outdir:
        concatenate(list(nucleotides), Path(identified_outdir) / f"{prefix}.identified_nucleotide.fa")
        concatenate(list(proteins), Path(identified_outdir) / f"{prefix}.identified_protein.fa")
    if stats:
        write_json(stats, {"prefix": prefix, "chunks": rows})
    full = sum(r["full"] for r in rows)
    click.echo(f"split: {prefix}: {sum(r['proteins'] for r in rows)} records in {len(rows)} files ({full} full)",
               err=True)


@main.command(epilog=EXAMPLE + "virnucpro-extract plan --candidates candidates.csv --chunks_per_task 128 --out plan.json")
@click.option("--candidates", required=True, type=click.Path(exists=True, dir_okay=False),
              help="CSV of every chunk: key,id,group,label,origin (given or split),full,proteins.")
@click.option("--balance_hosts", type=bool, default=False, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--keep_partial_files", type=bool, default=False, show_default=True)
@click.option("--chunks_per_task", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The plan as JSON.")
@click.option("--manifest", type=click.Path(dir_okay=False), help="Also write the chunks to embed as the run's chunks.csv.")
@reports_input_errors
def plan(candidates, balance_hosts, seed, keep_partial_files, chunks_per_task, out, manifest):
    """The chunks to embed and their task groups, once every chunk exists."""
    from .formats import read_manifest, write_manifest
    from .plan import plan_chunks

    result = plan_chunks(read_manifest(candidates), balance_hosts, seed, keep_partial_files, chunks_per_task)
    if manifest:
        write_manifest(manifest, result["rows"])
    write_json(out, {k: v for k, v in result.items() if k != "rows"})
    click.echo(f"plan: {len(result['groups'])} chunks to embed, {len(result['not_embedded'])} short file(s) "
               f"({result['records_not_embedded']} records) not embedded", err=True)


# ----------------------------------------------------------------------------------------------
@main.command("make-test-model", epilog=EXAMPLE + "virnucpro-extract make-test-model tiny_esm/")
@click.argument("outdir")
@click.option("--layers", type=int, default=1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--fast_esm_layout", is_flag=True, help="Lay it out as a FastESM2 checkpoint.")
@click.option("--saved_by_transformers", is_flag=True,
              help="With --fast_esm_layout: weights written by transformers' own save_pretrained (legacy key names).")
def make_test_model_command(outdir, layers, seed, fast_esm_layout, saved_by_transformers):
    """Save a tiny random-weight ESM-2-architecture model (hidden 1280, ESM-2 vocabulary)."""
    from .testdata import make_test_model

    click.echo(make_test_model(outdir, layers, seed, fast_esm_layout, saved_by_transformers))


@main.command("make-test-dna-model", epilog=EXAMPLE + "virnucpro-extract make-test-dna-model tiny_dnabert/")
@click.argument("outdir")
@click.option("--layers", type=int, default=1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def make_test_dna_model_command(outdir, layers, seed):
    """Save a tiny random-weight BERT (hidden 768) with a small DNA tokenizer, a stand-in for DNABERT-S."""
    from .testdata import make_test_dna_model

    click.echo(make_test_dna_model(outdir, layers, seed))


@main.command("make-demo-data", epilog=EXAMPLE + "virnucpro-extract make-demo-data demo/data")
@click.argument("outdir")
@click.option("--viral_chunks", type=int, default=2, show_default=True)
@click.option("--host_chunks", type=int, default=2, show_default=True)
@click.option("--proteins_per_chunk", type=int, default=20, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--nucleotides", is_flag=True, help="Also write nucleotide FASTA (random 300-bp reads, same ids).")
@click.option("--no_dnabert", is_flag=True, help="Leave out the DNABERT-S .pt files (the pipeline computes them).")
def make_demo_data_command(outdir, viral_chunks, host_chunks, proteins_per_chunk, seed, nucleotides, no_dnabert):
    """Write a small VirNucPro data/ folder (protein FASTA + DNABERT-S files) of random records."""
    from .testdata import make_demo_data

    click.echo(make_demo_data(outdir, viral_chunks, host_chunks, proteins_per_chunk, seed,
                              nucleotides=nucleotides, dnabert=not no_dnabert))


@main.command("fetch-model", epilog=EXAMPLE + "virnucpro-extract fetch-model Synthyra/FastESM2_650 --outdir /shared/models/FastESM2_650")
@click.argument("source")
@click.option("--outdir", default=None, help="Write the model here as plain files (default: into the Hugging Face cache).")
@click.option("--revision", default=None, help="Hub branch, tag or commit (default main).")
@click.option("--cache_dir", default=None, help="Hugging Face hub cache to use (default $HF_HOME/hub).")
@reports_input_errors
def fetch_model_command(source, outdir, revision, cache_dir):
    """Download a hub model (or copy a local one) for nodes without internet; print its directory."""
    from .fetch import fetch_model

    click.echo(fetch_model(source, outdir, revision, cache_dir, log=lambda line: click.echo(line, err=True)))


if __name__ == "__main__":
    main()
