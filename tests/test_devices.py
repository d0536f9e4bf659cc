"""Several GPUs per EMBED_PROTEINS task: device lists, one worker per card, failures.

No GPU here: the worker processes run on CPU, each pinned (through CUDA_VISIBLE_DEVICES) to a fake
card of a fake device list; what is tested is the assignment and orchestration, not CUDA.
"""
import json
import re

import pytest
import torch

from conftest import cli, cli_process, demo_chunks, expect_errors, write_fasta
from virnucpro_extract.devices import plan_workers, split_chunks, visible_devices
from virnucpro_extract.errors import InputError


@pytest.mark.parametrize("env, count, expected", [
    (None, 4, ["0", "1", "2", "3"]),                       # unset: every card the driver shows
    ("2,3", 8, ["2", "3"]),                                # Slurm / Docker give the task its own cards
    ("GPU-aa11,GPU-bb22", 8, ["GPU-aa11", "GPU-bb22"]),    # UUIDs pass through untouched
    ("1, 0", 2, ["1", "0"]),
    ("0,-1,2", 3, ["0"]),                                  # CUDA stops at the first invalid entry
    ("", 4, []),                                           # set but empty: no card at all
    (None, 0, []),
])
def test_visible_devices(env, count, expected):
    assert visible_devices(env, count) == expected


def test_plan_workers_one_card_each_and_never_more_workers_than_cards():
    assert plan_workers(["4", "5", "6"], 0) == ["4", "5", "6"]
    assert plan_workers(["4", "5", "6"], 2) == ["4", "5"]
    workers = plan_workers([str(i) for i in range(8)], 8)
    assert len(set(workers)) == len(workers) == 8
    with pytest.raises(InputError, match="3 GPUs asked for but 2 visible"):
        plan_workers(["0", "1"], 3)
    with pytest.raises(InputError, match="no GPU is visible"):
        plan_workers([], 0)


def test_split_chunks_more_workers_than_chunks_and_more_chunks_than_workers():
    chunks = [f"c{i}" for i in range(5)]
    shares = split_chunks(chunks, 2)
    assert shares == [["c0", "c2", "c4"], ["c1", "c3"]]
    assert sorted(c for share in split_chunks(chunks, 8) for c in share) == chunks
    assert all(split_chunks(chunks, 8))  # no worker is started without work


def chunk_args(demo_data):
    return [f"{c['key']}={c['fasta']}" for c in demo_chunks(demo_data)]


def test_two_workers_match_one_process(tmp_path, demo_data, tiny_model, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    common = ["--esm_model", tiny_model, "--use_gpu", "false", "--toks_per_batch", "1024"]
    split = cli_process("embed", *chunk_args(demo_data), *common, "--gpus", "0", "--outdir", tmp_path / "two",
                        "--stats", tmp_path / "two.json")
    assert split.exit_code == 0, split.stderr
    single = cli("embed", *chunk_args(demo_data), *common, "--outdir", tmp_path / "one")  # in-process: one worker
    assert single.exit_code == 0, single.stderr
    stats = json.loads((tmp_path / "two.json").read_text())
    assert sorted(w["cuda_visible_devices"] for w in stats["workers"]) == ["3", "5"]
    # each worker's progress lines reach the task's log, tagged with its card
    for device in ("3", "5"):
        assert re.search(rf"^\[gpu {device}\] embed: \[#+ *\] 1/\d+ chunks, ", split.stderr, re.M), split.stderr
    keys = [c["key"] for c in demo_chunks(demo_data)]
    assert sorted(c["key"] for c in stats["chunks"]) == sorted(keys)
    for key in keys:
        one, two = (torch.load(tmp_path / d / f"{key}_ESM.pt", weights_only=True) for d in ("one", "two"))
        assert one["proteins"] == two["proteins"]
        assert torch.equal(one["data"], two["data"])


def test_a_failing_worker_fails_the_task_with_its_error_line_and_keeps_the_others_outputs(tmp_path, demo_data,
                                                                                          tiny_model, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    bad = write_fasta(tmp_path / "bad.fa", [("p1", "MKV*LL")])
    good = demo_chunks(demo_data)[0]
    args = [f"{good['key']}=" + str(good["fasta"]), f"bad/output_9={bad}"]
    result = cli_process("embed", *args, "--esm_model", tiny_model, "--use_gpu", "false", "--gpus", "2",
                         "--outdir", tmp_path / "esm")
    expect_errors(result, (bad, r"record p1.*", "stop codon"))
    assert (tmp_path / "esm" / f"{good['key']}_ESM.pt").is_file()
    assert not (tmp_path / "esm" / "bad").exists() or not list((tmp_path / "esm" / "bad").iterdir())
    # Fixed, the task's rerun succeeds over the outputs the failed one left (in-process, one worker: what is
    # checked is the outdir the two workers left, not the workers again).
    write_fasta(bad, [("p1", "MKVLL")])
    again = cli("embed", *args, "--esm_model", tiny_model, "--use_gpu", "false", "--outdir", tmp_path / "esm")
    assert again.exit_code == 0, again.stderr
    assert (tmp_path / "esm" / "bad" / "output_9_ESM.pt").is_file()


def test_more_gpus_than_visible_is_an_error_line(tmp_path, demo_data, tiny_model, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    result = cli("embed", *chunk_args(demo_data), "--esm_model", tiny_model, "--use_gpu", "false",
                 "--gpus", "2", "--outdir", tmp_path)
    expect_errors(result, ("--gpus", "2", "2 GPUs asked for but 1 visible"))


def test_each_retry_halves_the_token_budget(tmp_path, demo_data, tiny_model):
    from virnucpro_extract.runtime import retry_budget

    assert [retry_budget(4096, attempt) for attempt in (1, 2, 3)] == [4096, 2048, 1024]
    assert retry_budget(100, 5) == 64
    chunk = chunk_args(demo_data)[0]
    result = cli("embed", chunk, "--esm_model", tiny_model, "--use_gpu", "false", "--toks_per_batch", 4096,
                 "--attempt", 3, "--outdir", tmp_path, "--stats", tmp_path / "s.json")
    assert result.exit_code == 0, result.stderr
    assert json.loads((tmp_path / "s.json").read_text())["token_budget"] == 1024


def test_out_of_memory_halves_run_after_the_failed_batch_is_released():
    """The halves of a batch that ran out of memory must not run while the failed forward's activations are still
    held (by the exception's traceback): on a GPU that memory is what the halves need."""
    import gc
    import weakref

    import torch

    from virnucpro_extract.runtime import split_on_out_of_memory

    failed_activations, alive_at_retry, done = [], [], []

    def run(batch):
        alive_at_retry.append(sum(ref() is not None for ref in failed_activations))
        activations = torch.zeros(1000)       # what a forward holds in its frame when the allocator gives up
        if len(batch) > 2:
            failed_activations.append(weakref.ref(activations))
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        done.extend(batch)

    gc.disable()                              # reference counting alone must release them, as it does on the GPU
    try:
        split_on_out_of_memory(list(range(8)), run, lambda index: AssertionError(index))
    finally:
        gc.enable()
    assert done == list(range(8))
    assert alive_at_retry == [0] * len(alive_at_retry), alive_at_retry


def test_default_precision_is_fp16_on_cards_without_bf16_and_varlen_flash_only_where_it_runs(monkeypatch):
    """Before compute capability 8.0 there are no bf16 tensor cores and no FlashAttention ('only supports Ampere
    GPUs or newer'): the default precision is fp16 there and mixed lengths take the padded SDPA route."""
    from types import SimpleNamespace

    import torch

    from virnucpro_extract.esm_forward import varlen_flash_applies
    from virnucpro_extract.runtime import choose_dtype

    cuda = torch.device("cuda")
    assert choose_dtype(None, torch.device("cpu")) == (torch.float32, "fp32")
    for capability, precision, flash in (((7, 5), "fp16", False), ((8, 0), "bf16", True), ((9, 0), "bf16", True)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        assert choose_dtype(None, cuda)[1] == precision
        assert choose_dtype("bf16", cuda)[1] == "bf16"                 # asked for: kept
        for dtype, takes in ((torch.bfloat16, flash), (torch.float16, flash), (torch.float32, False)):
            q = SimpleNamespace(is_cuda=True, dtype=dtype, device=cuda)
            assert varlen_flash_applies(q) is takes, (capability, dtype)
    assert not varlen_flash_applies(SimpleNamespace(is_cuda=False, dtype=torch.bfloat16, device="cpu"))


def test_fused_kernels_fall_back_with_a_warning_where_triton_cannot_run(monkeypatch):
    """A card too old for Triton's bf16 kernels gets the same maths without them, and one warning line."""
    import torch

    from virnucpro_extract.embed import fused_kernels_decision

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert fused_kernels_decision(True, cpu, torch.float32) == (False, None)
    assert fused_kernels_decision(False, cuda, torch.bfloat16) == (False, None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    assert fused_kernels_decision(True, cuda, torch.float16) == (True, None)
    fused, why = fused_kernels_decision(True, cuda, torch.bfloat16)
    assert not fused and why.startswith("--fused_kernels: Tesla T4 (compute capability 7.5) cannot run")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert fused_kernels_decision(True, cuda, torch.bfloat16) == (True, None)


def test_small_tasks_run_eager_and_large_ones_compile():
    """Each process pays torch.compile again; a task too small to win it back runs eager, and says why."""
    import torch

    from virnucpro_extract.embed import compile_decision

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert compile_decision(None, cuda, 20_000_000, 15_000_000) == (True, "compiled: 20,000,000 tokens in this task")
    compiled, why = compile_decision(True, cuda, 8_120_255, 15_000_000)
    assert not compiled and why.startswith("eager: 8,120,255 tokens in this task < --compile_min_tokens 15,000,000")
    assert compile_decision(True, cuda, 1, 0)[0] is True  # 0: always compile
    assert compile_decision(False, cuda, 10**9, 0) == (False, "eager: --compile false")
    assert compile_decision(True, cpu, 10**9, 0) == (False, "eager on CPU")
    # the fused Triton kernels replace the compiled layer: a large task with them compiles nothing
    assert compile_decision(True, cuda, 10**9, 0, fused_kernels=True) == (
        False, "eager with the fused Triton kernels: nothing to compile")


def test_embed_stats_record_the_compile_decision_and_the_task_size(tmp_path, demo_data, tiny_model):
    from virnucpro_extract.fasta import count_fasta

    chunk = chunk_args(demo_data)[0]
    result = cli("embed", chunk, "--esm_model", tiny_model, "--use_gpu", "false", "--outdir", tmp_path,
                 "--stats", tmp_path / "s.json")
    assert result.exit_code == 0, result.stderr
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["compiled"] is False and stats["compile_decision"] == "eager on CPU"
    assert "eager on CPU" in result.stderr
    records, letters = count_fasta(chunk.split("=", 1)[1])
    assert records == stats["chunks"][0]["proteins"] and letters == stats["chunks"][0]["residues"]
