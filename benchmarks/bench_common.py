"""What the benchmark scripts share: the device, the CPU smoke mode, and one way to time a run."""
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
