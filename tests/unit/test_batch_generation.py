"""Generation at batch B on CPU: every row gets exactly gen tokens, KV is B x one sequence's, compiled_loop too."""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from deploybench.analytic.kvcache import analytic_kv_bytes, measured_kv_bytes
from deploybench.engines import batch as batching
from deploybench.engines import models
from deploybench.engines.compiled_loop.decode_loop import CompiledDecodeLoop
from deploybench.engines.timing import GenerationCountError, generation_config, timed_generate
from deploybench.enums import CacheImplementation
from deploybench.plan.spec import DecodingMode, standard_decoding
from tests.unit.test_measure import CARDS, _eos_first_model, random_model

GREEDY = standard_decoding("greedy")


def _batch(loaded, context, batch, seed=0):
    config = loaded.model.config
    prompt_batch = batching.prompt_batch(loaded, config, context, batch, seed)
    assert prompt_batch.context_tokens_measured == context and prompt_batch.batch == batch
    return batching.batch_tensors(prompt_batch, "cpu")


@pytest.mark.parametrize("family", sorted(CARDS))
@pytest.mark.parametrize("cache", [CacheImplementation.DYNAMIC, CacheImplementation.STATIC])
@pytest.mark.parametrize("context", [8, 40])  # tiny gpt-oss slides over 32 tokens: inside the window, and past it
def test_every_row_gets_gen_tokens_and_kv_is_batch_times_one_sequence(family, cache, context):
    loaded = models.load_model(random_model(family), "bfloat16", "cpu")
    config = loaded.model.config
    batch, gen = 3, 7
    ids, mask = _batch(loaded, context, batch)
    static = cache if cache is CacheImplementation.STATIC else None
    timing, output = batching.timed_generate_batch(
        loaded.model, ids, mask, generation_config(GREEDY, gen, 0, static), "cpu", seed=0, clock=True
    )
    assert output.sequences.shape == (batch, context + gen)
    assert timing.new_tokens == gen and len(timing.token_times) == gen  # one stamp per step of B tokens
    measured = measured_kv_bytes(output.past_key_values)
    one = analytic_kv_bytes(config, context, gen, torch.bfloat16, cache)
    assert measured == analytic_kv_bytes(config, context, gen, torch.bfloat16, cache, batch=batch) == batch * one > 0
    assert timing.decode_tps > 0  # steps per second; the row's aggregate (x B): test_batch_cells


def test_eos_cannot_stop_any_row():
    model, eos = _eos_first_model()  # every greedy choice is EOS
    ids = torch.randint(3, 1000, (4, 16), generator=torch.Generator().manual_seed(0))
    _, output = batching.timed_generate_batch(
        model, ids, torch.ones_like(ids), generation_config(DecodingMode(), 9, 0), "cpu", seed=0, clock=False
    )
    assert output.sequences[:, 16:].tolist() == [[eos] * 9] * 4


class _EosForRow(LogitsProcessor):
    """Forces EOS in one row at one step (the others keep generating)."""

    def __init__(self, row: int, step: int, eos: int, context: int):
        self.row, self.step, self.eos, self.context = row, step, eos, context

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] - self.context == self.step - 1:
            scores[self.row] = float("-inf")
            scores[self.row, self.eos] = 0.0
        return scores


def test_a_row_that_stopped_early_is_caught_per_row(monkeypatch):
    loaded = models.load_model(random_model("llama"), "float32", "cpu")
    model, eos = loaded.model, loaded.model.config.eos_token_id
    ids, mask = _batch(loaded, 12, 3)
    config = generation_config(GREEDY, 8, 0)
    config.eos_token_id = [eos]  # a setting that lets EOS end a row, as a checkpoint's generation config could
    real_generate = model.generate

    def generate_with_row_1_stopping(**kwargs):
        return real_generate(**kwargs, logits_processor=LogitsProcessorList([_EosForRow(1, 3, eos, 12)]))

    monkeypatch.setattr(model, "generate", generate_with_row_1_stopping)
    # The batch as a whole ran the full length: only a per-row check sees that row 1 stopped at step 3.
    timing, output = timed_generate(model, ids, mask, config, "cpu", seed=0, clock=False)
    assert timing.new_tokens == 8
    assert batching.new_tokens_per_row(output.sequences, 12, [eos]) == [8, 3, 8]
    with pytest.raises(GenerationCountError, match=r"rows \[1\] got \[3\]"):
        batching.timed_generate_batch(model, ids, mask, config, "cpu", seed=0, clock=False)


def test_new_tokens_per_row_counts_up_to_the_first_eos():
    sequences = torch.tensor([[5, 5, 7, 2, 0, 0], [5, 5, 7, 7, 7, 7], [5, 5, 2, 2, 2, 2]])
    assert batching.new_tokens_per_row(sequences, 2, [2]) == [2, 4, 1]
    assert batching.new_tokens_per_row(sequences, 2, []) == [4, 4, 4]


@pytest.fixture
def own_compile_cache():
    """Compiled variants of CompiledDecodeLoop._decode_step count against one recompile limit per process:
    give back the ones compiled here, so the suite's later compiled_loop tests keep their budget."""
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("family, context", [("llama", 30), ("gpt_oss", 40)])  # gpt-oss: sliding layers full
def test_compiled_loop_runs_a_batch_unchanged(family, context, own_compile_cache):
    """CompiledDecodeLoop as it is: a (B, context) batch gives generate()'s tokens at batch B, each row
    the tokens of that prompt alone, and a static cache of B x one sequence."""
    torch.manual_seed(0)
    model = models.load_model(random_model(family), "float32", "cpu").model
    batch, gen = 3, 8
    ids = torch.randint(3, 1000, (batch, context), generator=torch.Generator().manual_seed(1))
    loop = CompiledDecodeLoop(model, GREEDY, context=context, gen=gen, device="cpu", batch=batch)
    timing, output = loop.run(ids, gen, seed=0, clock=True)
    assert timing.new_tokens == gen and output.sequences.shape == (batch, context + gen)
    config = generation_config(GREEDY, gen, 0, CacheImplementation.STATIC)
    _, reference = timed_generate(model, ids, torch.ones_like(ids), config, "cpu", seed=0, clock=False)
    assert torch.equal(output.sequences, reference.sequences)
    alone = [timed_generate(model, row[None], torch.ones_like(row[None]), config, "cpu", 0, False)[1] for row in ids]
    assert torch.equal(output.sequences, torch.cat([a.sequences for a in alone]))
    assert measured_kv_bytes(output.past_key_values) == analytic_kv_bytes(
        model.config, context, gen, torch.float32, CacheImplementation.STATIC, batch=batch
    )
    # The static cache holds the batch the loop was built for: another batch is refused, naming both.
    with pytest.raises(ValueError, match="runs batch 3.*for batch 2"):
        loop.run(ids[:2], gen, seed=0, clock=False)
