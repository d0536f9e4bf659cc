"""What the benchmark scripts share: the device, the CPU smoke mode, and one way to time a run."""
import functools
import os
import time
from pathlib import Path

import torch

SMOKE = os.environ.get("BENCH_SMOKE") == "1"  # a CPU run of a script's plumbing, tiny model and counts
DEVICE = torch.device("cpu" if SMOKE else "cuda")
if SMOKE:  # no CUDA: the timing calls become no-ops
    torch.cuda.synchronize = torch.cuda.reset_peak_memory_stats = lambda *a: None
    torch.cuda.max_memory_allocated = lambda *a: 0
    torch.cuda.get_device_name = lambda *a: "cpu (smoke)"


def timed(fn):
    """(fn(), seconds, peak GPU GiB), synchronised before and after so queued GPU work is counted."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = fn()
    torch.cuda.synchronize()
    return result, time.perf_counter() - start, torch.cuda.max_memory_allocated() / 2**30


class _Nvml:
    """The card's energy counter and clock-limit reasons through the driver's NVML (ctypes, no package): on an
    H200 the forward runs at the card's power limit, so joules per token, not a kernel's time at boost clock,
    decide the steady state. The CUDA device's index is taken as its NVML index (one visible card)."""

    POWER_CAP_REASONS = 0x4 | 0x80                  # software power cap, hardware power brake

    def __init__(self):
        import ctypes

        self.ctypes = ctypes
        self.lib, self.handle = None, ctypes.c_void_p()
        try:
            lib = ctypes.CDLL("libnvidia-ml.so.1")
            if lib.nvmlInit_v2() == 0 and lib.nvmlDeviceGetHandleByIndex_v2(
                    torch.cuda.current_device(), ctypes.byref(self.handle)) == 0:
                self.lib = lib
        except (OSError, RuntimeError, AssertionError):
            pass

    def energy_j(self) -> float | None:
        """Joules the card has used since the driver loaded, or None without NVML."""
        value = self.ctypes.c_ulonglong()
        if self.lib is None or self.lib.nvmlDeviceGetTotalEnergyConsumption(self.handle, self.ctypes.byref(value)):
            return None
        return value.value / 1e3

    def clock_reasons(self) -> int | None:
        """The bit mask of what holds the clocks down now (NVML clocks event reasons), or None."""
        value = self.ctypes.c_ulonglong()
        if self.lib is None or self.lib.nvmlDeviceGetCurrentClocksEventReasons(self.handle, self.ctypes.byref(value)):
            return None
        return value.value

    def power_capped(self) -> bool | None:
        """Whether the power limit holds the clocks down now, or None without NVML."""
        reasons = self.clock_reasons()
        return None if reasons is None else bool(reasons & self.POWER_CAP_REASONS)


@functools.cache
def nvml() -> _Nvml:
    """One NVML session per process."""
    return _Nvml()


def energy_timed(fn):
    """(fn(), seconds, peak GPU GiB, joules or None, power-capped at the end or None), as `timed`."""
    meter = nvml()
    before = meter.energy_j()
    result, seconds, peak = timed(fn)
    after = meter.energy_j()
    joules = after - before if before is not None and after is not None else None
    return result, seconds, peak, joules, meter.power_capped()


def joules_per_call(call, seconds: float = 3.0, preheat_s: float = 2.0) -> dict:
    """ms and mJ per call of `call()` run back to back for `seconds` after `preheat_s` of the same: long
    enough for the card to settle at its power limit, as it does in the forward (a burst of 20 calls runs at
    boost clock and ranks kernels differently)."""
    meter = nvml()

    def run_for(duration):
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < duration:
            for _ in range(5):
                call()
            calls += 5
            torch.cuda.synchronize()
        return calls, time.perf_counter() - start

    run_for(preheat_s)
    before = meter.energy_j()
    calls, elapsed = run_for(seconds)
    after = meter.energy_j()
    row = {"ms": round(elapsed / calls * 1e3, 3), "calls": calls}
    if before is not None and after is not None:
        row.update(mj=round((after - before) / calls * 1e3, 2), watts=round((after - before) / elapsed, 1))
    row["power_capped"] = meter.power_capped()
    return row


def seconds_per_call(call, repeats: int) -> float:
    """Mean seconds of `call()` on the GPU over `repeats` calls, after one call outside the clock (its compile)."""
    call()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def dnabert2_model_dir(code_dir: Path, out_dir: Path, seed: int = 0, layers: int | None = None) -> Path:
    """A DNABERT-S-shaped model directory with random weights: DNABERT-2's own code (`code_dir`: its
    bert_layers.py, bert_padding.py, configuration_bert.py, flash_attn_triton.py and config.json, e.g. from
    MAGICS-LAB/DNABERT_S evaluate/model_codes/, not shipped here) and a byte-level BPE tokenizer of 4,096 tokens
    trained on random DNA (DNABERT-2's tokenizer is BPE of that size: a 300-bp read becomes ~60-90 tokens).

    The worker's loader then builds and loads it as it would DNABERT-S (remote code, PyTorch attention path).
    """
    import json
    import random
    import shutil

    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    out_dir.mkdir(parents=True, exist_ok=True)
    for file in code_dir.iterdir():
        shutil.copy(file, out_dir / file.name)
    config_path = out_dir / "config.json"
    config = json.loads(config_path.read_text())
    if layers:
        config["num_hidden_layers"] = layers
    config_path.write_text(json.dumps(config, indent=1))
    specials = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
    bpe = Tokenizer(models.BPE(unk_token="[UNK]"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    rng = random.Random(seed)
    corpus = ("".join(rng.choices("ACGT", k=300)) for _ in range(20000))
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=config["vocab_size"], special_tokens=specials))
    bpe.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", bpe.token_to_id("[CLS]")), ("[SEP]", bpe.token_to_id("[SEP]"))])
    PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]", model_max_length=512).save_pretrained(out_dir)
    config_obj = __import__("transformers").AutoConfig.from_pretrained(out_dir, trust_remote_code=True)
    model_class = get_class_from_dynamic_module(config_obj.auto_map["AutoModel"], out_dir)
    torch.manual_seed(seed)
    model = model_class(config_obj)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out_dir / "model.safetensors"))
    return out_dir


def kernel_profile(embedder, tokens, sort_by: str = "self_cuda_time_total", rows: int = 16) -> list[str]:
    """The top CUDA kernels over one embedding pass of `tokens`: where a worker's GPU time goes (printed, and
    returned as lines for the results JSON)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        embedder.embed(tokens)
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by=sort_by, row_limit=rows, max_name_column_width=70)
    print(table, flush=True)
    return table.splitlines()
