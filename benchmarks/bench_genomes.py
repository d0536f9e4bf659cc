"""Genomes -> identified FASTA, per core: VirNucPro's own way (benchmarks/virnucpro_way.py) against the pipeline's
identification (`genomes.identify_genome`, what `virnucpro-extract identify` runs), on the same .gz inputs, each in
its own process pinned to one core; the outputs compared byte for byte. reads/s is over the work from the .gz files
to the identified FASTA, timed inside each process (interpreter start and imports left out, for both), the median
of --rounds runs of each way (the two ways alternating); peak memory is the process's max RSS.

Inputs (synthetic, random sequence, stop-free genes on both strands, annotated as RefSeq annotates them: a source
feature, a gene feature before each CDS, the CDS with RefSeq's usual qualifiers before its /translation):
  bacterial  one record of 2.2 Mb with 2,000 CDS (shared/virnucpro-reference.md's measurement);
  viral      1,000 records of 2-60 kb (a viral.1.1-like file), 2 to 40 CDS each;
  viral_1000_records_cds_only  the same records with CDS features holding a /translation only (what the sets
             were before: less for VirNucPro's Biopython parse to read, so a harder ratio for us).

Usage: python benchmarks/bench_genomes.py --out benchmarks/results/reads_<machine>.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bin"))
from virnucpro_extract.testdata import random_genome, write_refseq_pair  # noqa: E402

SETS = {"bacterial_2.2Mb_2000cds": (1, (2_200_000, 2_200_000), True), "viral_1000_records": (1000, (2_000, 60_000), True),
        "viral_1000_records_cds_only": (1000, (2_000, 60_000), False)}
TIME = ["/usr/bin/time", "-f", "%e %M"] if Path("/usr/bin/time").exists() else []


def make_set(folder: Path, name: str, records: int, lengths: tuple[int, int], refseq_features: bool,
             seed: int = 0) -> tuple[Path, Path]:
    rng = random.Random(seed)
    entries, annotations = [], {}
    for k in range(records):
        sequence, genes = random_genome(rng, rng.randint(*lengths))
        if name.startswith("bacterial"):
            genes = genes[:2000]
        record_id = f"NC_{k:06d}.1"
        entries.append((record_id, sequence))
        annotations[record_id] = genes
    write_refseq_pair(folder, "set", {1: entries}, annotations, refseq_features)
    return folder / "set.1.genomic.fna.gz", folder / "set.genomic.gbff.gz"


DRIVER = """
import sys, time
sys.path.insert(0, {bin!r}); sys.path.insert(0, {benchmarks!r})
way, fasta, genbank, out = sys.argv[1:5]
if way == "ours":
    import Bio.SeqIO.FastaIO  # noqa: F401  (imported before the clock, as the other way's module imports Bio.SeqIO)
    from virnucpro_extract.genomes import identify_genome
    start = time.perf_counter()
    identify_genome(fasta, genbank, 300, out + "/identified_nucleotide.fa", out + "/identified_protein.fa")
else:
    from pathlib import Path
    from virnucpro_way import make_identified
    start = time.perf_counter()
    make_identified(Path(fasta), Path(genbank), Path(out), 300)
print("work_seconds", time.perf_counter() - start)
"""


def timed(command: list[str], cwd: Path) -> dict:
    """Work seconds (as the process timed them), wall seconds and peak RSS (GiB) of one process on one core."""
    pin = ["taskset", "-c", "0"] if subprocess.run(["which", "taskset"], capture_output=True).returncode == 0 else []
    start = time.perf_counter()
    run = subprocess.run(pin + TIME + command, cwd=cwd, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    wall = time.perf_counter() - start
    if run.returncode != 0:
        raise RuntimeError(run.stderr[-3000:])
    peak = None
    if TIME:
        last = run.stderr.strip().splitlines()[-1].split()
        wall, peak = float(last[0]) or wall, int(last[1]) / 2**20
    work = float(next(line.split()[1] for line in run.stdout.splitlines() if line.startswith("work_seconds")))
    return {"seconds": round(work, 3), "process_wall_s": round(wall, 2),
            "peak_rss_gib": round(peak, 3) if peak is not None else None}


def cpu_model() -> str:
    """The processor's model name as Linux gives it (/proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def median_run(runs: list[dict]) -> dict:
    """The run of median work seconds, with every round's seconds beside it."""
    middle = sorted(runs, key=lambda run: run["seconds"])[(len(runs) - 1) // 2]
    return {**middle, "rounds_seconds": [run["seconds"] for run in runs]}


def identify_stats(fasta: Path) -> dict:
    """Records, bases, reads and frames of the set (counted, not timed)."""
    from virnucpro_extract.genomes import fasta_records, read_windows

    records = list(fasta_records(fasta))
    frames = (fasta.parent / "ours" / "identified_protein.fa").read_text().count(">")
    return {"records": len(records), "bases": sum(len(s) for _, s in records),
            "reads": sum(len(read_windows(len(s), 300)) for _, s in records), "frames_kept": frames}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--rounds", type=int, default=3, help="runs of each way, alternating; the median is reported")
    args = parser.parse_args()
    doc = {"machine": platform.node(), "cpu": cpu_model(), "cores_on_machine": os.cpu_count(), "python": platform.python_version(),
           "cores_used": 1, "rounds": args.rounds, "statistic": "median of the rounds, each way", "sets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in args.sets.split(","):
            folder = tmp / name
            fasta, genbank = make_set(folder, name, *SETS[name])
            driver = DRIVER.format(bin=str(REPO / "bin"), benchmarks=str(REPO / "benchmarks"))
            for way in ("ours", "theirs"):
                (folder / way).mkdir(exist_ok=True)
            runs = {"ours": [], "theirs": []}
            for _ in range(args.rounds):   # the two ways alternate, so both meet the machine's moods alike
                for way in runs:
                    runs[way].append(timed([sys.executable, "-c", driver, way, str(fasta), str(genbank),
                                            str(folder / way)], folder))
            ours, theirs = (median_run(runs[way]) for way in ("ours", "theirs"))
            same = all((folder / "ours" / name).read_bytes() == (folder / "theirs" / name).read_bytes()
                       for name in ("identified_nucleotide.fa", "identified_protein.fa"))
            stats = identify_stats(fasta)
            reads = stats["reads"]
            row = {"records": stats["records"], "bases": stats["bases"], "reads": reads, "frames_kept": stats["frames_kept"],
                   "virnucpro": {**theirs, "reads_per_s": round(reads / theirs["seconds"])},
                   "ours": {**ours, "reads_per_s": round(reads / ours["seconds"])},
                   "identical_output": same}
            row["speedup_vs_virnucpro"] = round(theirs["seconds"] / ours["seconds"], 1)
            doc["sets"][name] = row
            print(f"{name}: {reads:,} reads; VirNucPro {row['virnucpro']['reads_per_s']:,} reads/s "
                  f"({theirs['peak_rss_gib']} GiB), ours {row['ours']['reads_per_s']:,} reads/s "
                  f"({ours['peak_rss_gib']} GiB): {row['speedup_vs_virnucpro']}x, identical: {same}", flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
