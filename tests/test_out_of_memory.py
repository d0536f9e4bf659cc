"""CUDA out-of-memory: batches are split down to single proteins / reads, nothing is dropped, and one that does
not fit alone is an error line naming file, record and length. OOM is simulated (no GPU here) by a forward that
raises torch.OutOfMemoryError above a batch size."""
import numpy as np
import pytest
import torch

from conftest import ERROR_LINE
from virnucpro_extract.embed import EsmEmbedder, ProteinEncoder
from virnucpro_extract.errors import InputError
from virnucpro_extract.models import load_esm_model, load_tokenizer
from virnucpro_extract.runtime import split_on_out_of_memory


def test_split_on_out_of_memory_runs_every_item_once_in_halves():
    ran = []

    def run(part):
        if len(part) > 3:
            raise torch.OutOfMemoryError("simulated")
        ran.append(list(part))

    split_on_out_of_memory(list(range(10)), run, lambda i: InputError("f", i, "too big", "fix"))
    assert sorted(i for part in ran for i in part) == list(range(10))
    assert max(len(part) for part in ran) <= 3


def test_an_item_that_does_not_fit_alone_raises_its_error():
    def run(part):
        raise torch.OutOfMemoryError("simulated")

    with pytest.raises(InputError, match="item 0 too big"):
        split_on_out_of_memory([0, 1], run, lambda i: InputError("f", "r", f"item {i} too big", "fix"))


@pytest.fixture(scope="module")
def embedder(tiny_model):
    model = load_esm_model(tiny_model, torch.float32, torch.device("cpu"))
    encoder = ProteinEncoder(load_tokenizer(tiny_model, model), 1022)
    return EsmEmbedder(model, encoder, torch.device("cpu"), token_budget=100_000)


def test_esm_embeddings_after_oom_splits_equal_unsplit_ones(embedder, monkeypatch):
    rng = np.random.default_rng(0)
    tokens = [embedder.encoder.encode("".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), size=n)))
              for n in rng.integers(20, 60, size=12)]
    expected = embedder.embed(tokens)
    real_pool = embedder.pool

    def pool_that_runs_out_of_memory(input_ids, residue_mask):
        if len(input_ids) > 2:
            raise torch.OutOfMemoryError("simulated")
        return real_pool(input_ids, residue_mask)

    monkeypatch.setattr(embedder, "pool", pool_that_runs_out_of_memory)
    got = embedder.embed(tokens)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5)


def test_a_protein_too_big_alone_is_an_error_line(embedder, monkeypatch):
    tokens = [embedder.encoder.encode("MKV" * 10), embedder.encoder.encode("MKVL" * 50)]

    def pool(input_ids, residue_mask):
        if input_ids.shape[1] > 100:
            raise torch.OutOfMemoryError("simulated")
        return torch.zeros(len(input_ids), 1280)

    monkeypatch.setattr(embedder, "pool", pool)
    with pytest.raises(InputError) as error:
        embedder.embed(tokens, "chunk.fa", ["short", "long"])
    match = ERROR_LINE.match(str(error.value))
    assert match and match["file"] == "chunk.fa" and match["where"] == "record long"
    assert "200 residues" in match["problem"] and "--max_length" in match["fix"]


def test_out_of_memory_outside_batch_splitting_exits_for_a_retry(tmp_path, tiny_model, demo_data, monkeypatch):
    """Loading the model (or copying results) can run out of memory where no batch can be split: the
    task exits 75, which conf/base.config retries with half the token budget, not 1 (bad input)."""
    import virnucpro_extract.embed as embed_module
    from conftest import cli, demo_chunks, expect_errors

    def load_that_runs_out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(embed_module, "load_esm_model", load_that_runs_out_of_memory)
    chunk = demo_chunks(demo_data)[0]
    result = cli("embed", f"{chunk['key']}={chunk['fasta']}", "--esm_model", tiny_model, "--use_gpu", "false",
                 "--outdir", tmp_path)
    expect_errors(result, ("GPU", "-", r"^out of memory outside batch splitting \(CUDA out of memory\. .*\)$"))
    assert result.exit_code == 75
    assert not list(tmp_path.rglob("*_ESM.pt"))


def test_only_errors_that_are_all_retryable_ask_for_a_retry():
    from virnucpro_extract.errors import EXIT_RETRY, InputErrors, out_of_memory_error

    memory = out_of_memory_error(torch.OutOfMemoryError("CUDA out of memory"))
    assert InputErrors([memory, memory]).exit_status == EXIT_RETRY
    assert InputErrors([memory, InputError("f.fa", "record p1", "stop codon", "fix")]).exit_status == 1
    assert InputError.from_line(str(memory), EXIT_RETRY).exit_status == EXIT_RETRY
