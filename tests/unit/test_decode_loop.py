"""The compiled_loop backend on CPU: same tokens as generate(), exact lengths, a complete row."""

from __future__ import annotations

import pytest
import torch

from deploybench.analytic.kvcache import analytic_kv_bytes, measured_kv_bytes
from deploybench.engines import models
from deploybench.engines.compiled_loop import attention
from deploybench.engines.compiled_loop.decode_loop import CompiledDecodeLoop
from deploybench.engines.timing import generation_config, timed_generate
from deploybench.enums import CacheImplementation
from deploybench.measure import phases as measure
from deploybench.plan.loop_options import CompiledLoopOptions
from deploybench.plan.spec import ModelEntry, standard_decoding
from tests.fixtures.compare import randomise_zero_parameters
from tests.unit.test_measure import CARDS, make_cell, random_model


@pytest.fixture(scope="module")
def llama():
    torch.manual_seed(0)
    return models.load_model(random_model("llama"), "float32", "cpu").model


def test_greedy_tokens_equal_generate_with_a_static_cache(llama):
    ids = torch.randint(3, 1000, (1, 30), generator=torch.Generator().manual_seed(1))
    loop = CompiledDecodeLoop(llama, standard_decoding("greedy"), context=30, gen=12, device="cpu")
    timing, output = loop.run(ids, 12, seed=0, clock=True)
    config = generation_config(standard_decoding("greedy"), 12, 0, CacheImplementation.STATIC)
    _, reference = timed_generate(llama, ids, torch.ones_like(ids), config, "cpu", seed=0, clock=False)
    assert torch.equal(output.sequences, reference.sequences)
    assert timing.new_tokens == 12 and len(timing.token_times) == 12
    assert timing.token_times == sorted(timing.token_times) and timing.decode_tps > 0
    # The cache holds context + gen - 1 tokens, as the analytic formula says for a static cache.
    assert measured_kv_bytes(output.past_key_values) == analytic_kv_bytes(
        llama.config, 30, 12, torch.float32, CacheImplementation.STATIC
    )


def test_rerun_resets_the_cache_and_sampling_is_seeded(llama):
    ids = torch.randint(3, 1000, (1, 20), generator=torch.Generator().manual_seed(2))
    loop = CompiledDecodeLoop(llama, standard_decoding("top_k"), context=20, gen=10, device="cpu")
    first = [loop.run(ids, 10, seed=7, clock=False)[1].sequences.clone() for _ in range(2)]
    other = loop.run(ids, 10, seed=8, clock=False)[1].sequences
    assert torch.equal(first[0], first[1])
    assert not torch.equal(first[0], other)
    one = loop.run(ids, 1, seed=7, clock=True)[0]  # the TTFT run: prefill only
    assert one.new_tokens == 1 and len(one.token_times) == 1


def test_compiled_loop_row_is_complete_and_valid():
    cell = make_cell(random_model("llama"), context=32, gen=8, dtype="float32", backend="compiled_loop")
    row = measure.measure_cell(cell)
    assert row["status"] == "ok" and row["valid"], row["invalid_reasons"]
    assert row["cache_implementation"] == "static" and row["compiled"] is True
    assert row["attn_implementation"] == attention.GQA_SDPA_PREFILL  # llama supports SDPA
    # Today's defaults: no fusion, the grouped-query matmul; a dense model has no experts path.
    assert row["fusions"] == [] and row["decode_attention_kernel"] == "gqa_matmul"
    assert row["decode_experts_implementation"] is None
    assert row["compile_s"] is not None and row["compile_s"] >= 0
    assert row["kv_cache_bytes"] == row["kv_cache_bytes_analytic"] > 0
    assert row["gen_tokens_measured"] == 8 and len(row["itl_ms_samples"]) == 2 * 7


def test_compile_cache_counts_say_whether_the_step_was_compiled_or_loaded():
    """compile_s is a cold start's only where nothing came from the machine's Inductor cache: in an empty cache the
    first cell compiles its step, the same cell again loads it, and the row of each says which."""
    from torch._inductor.utils import fresh_cache

    cell = make_cell(random_model("llama"), context=32, gen=8, dtype="float32", backend="compiled_loop")

    def in_a_new_process():  # a measure job is one: nothing compiled in memory yet
        torch._dynamo.reset()
        return measure.measure_cell(cell)

    with fresh_cache():
        cold, warm = in_a_new_process(), in_a_new_process()
    assert cold["status"] == warm["status"] == "ok"
    assert cold["compile_cache_misses"] >= 1 and cold["compile_cache_hits"] == 0
    assert warm["compile_cache_hits"] >= 1 and warm["compile_cache_misses"] == 0
    eager = measure.measure_cell(make_cell(random_model("llama"), context=32, gen=8, dtype="float32"))
    assert eager["compile_cache_hits"] is None and eager["compile_cache_misses"] is None


@pytest.mark.parametrize("family", ["llama", "qwen3", "gpt_oss"])  # gpt-oss: sinks and sliding layers
def test_gqa_attention_equals_eager_attention(family):
    torch.manual_seed(0)
    model = models.load_model(random_model(family), "float32", "cpu").model
    ids = torch.randint(3, 1000, (1, 50), generator=torch.Generator().manual_seed(3))
    outputs = []
    for implementation in ("eager", attention.register()):
        model.set_attn_implementation(implementation)
        with torch.no_grad():
            logits = model(ids).logits
        config = generation_config(standard_decoding("greedy"), 12, 0, CacheImplementation.STATIC)
        _, generated = timed_generate(model, ids, torch.ones_like(ids), config, "cpu", seed=0, clock=False)
        outputs.append((logits, generated.sequences))
    assert model.config._attn_implementation == attention.GQA_EAGER
    assert torch.allclose(outputs[0][0], outputs[1][0], atol=1e-5)
    assert torch.equal(outputs[0][1], outputs[1][1])


@pytest.mark.parametrize("context", [40, 20])  # tiny gpt-oss slides over 32 tokens: full from the start, or later
def test_sliding_layers_compile_once_when_full_and_match_generate(context):
    torch.manual_seed(0)
    model = models.load_model(random_model("gpt_oss"), "float32", "cpu").model
    ids = torch.randint(3, 1000, (1, context), generator=torch.Generator().manual_seed(4))
    gen = 16
    graphs_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    loop = CompiledDecodeLoop(model, standard_decoding("greedy"), context=context, gen=gen, device="cpu")
    runs = [loop.run(ids, gen, seed=0, clock=False)[1] for _ in range(2)]
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs_before
    config = generation_config(standard_decoding("greedy"), gen, 0, CacheImplementation.STATIC)
    _, reference = timed_generate(model, ids, torch.ones_like(ids), config, "cpu", seed=0, clock=False)
    assert all(torch.equal(run.sequences, reference.sequences) for run in runs)
    assert measured_kv_bytes(runs[-1].past_key_values) == analytic_kv_bytes(
        model.config, context, gen, torch.float32, CacheImplementation.STATIC
    )
    if context > model.config.sliding_window:
        assert graphs == 1  # one decode graph for every position (transformers' own layer recompiles)


@pytest.mark.parametrize("family, prefill_sdpa", [("llama", True), ("qwen3", True), ("gpt_oss", False)])
def test_prefill_runs_sdpa_where_the_model_has_it_and_decode_steps_never(family, prefill_sdpa, monkeypatch):
    torch.manual_seed(0)
    model = models.load_model(random_model(family), "float32", "cpu").model
    ids = torch.randint(3, 1000, (1, 24), generator=torch.Generator().manual_seed(5))
    loop = CompiledDecodeLoop(model, standard_decoding("greedy"), context=24, gen=6, device="cpu")
    loop.run(ids, 6, seed=0, clock=False)  # compile first: the spy below must not enter the graph
    query_lengths = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(query, *args, **kwargs):
        query_lengths.append(query.shape[2])
        return real(query, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    _, output = loop.run(ids, 6, seed=0, clock=False)
    layers = model.config.num_hidden_layers
    assert query_lengths == ([24] * layers if prefill_sdpa else [])
    reference_config = generation_config(standard_decoding("greedy"), 6, 0, CacheImplementation.STATIC)
    model.set_attn_implementation("eager")
    _, reference = timed_generate(model, ids, torch.ones_like(ids), reference_config, "cpu", seed=0, clock=False)
    assert torch.equal(output.sequences, reference.sequences)


# Every non-default option runs compiled: each decode kernel in gpt-oss (sinks, sliding layers) and in a dense
# card, each experts path, and the fusions throughout.
FUSED = {"fusions": ["qkv", "gate_up"]}
VARIANTS = [
    ("gpt_oss", {**FUSED, "decode_attention": "sdpa_gqa", "decode_experts": "batched_mm"}),
    ("gpt_oss", {"decode_attention": "sdpa_folded"}),
    ("gpt_oss", {**FUSED, "decode_attention": "flex_decoding", "decode_experts": "gathered_reduction"}),
    ("qwen3", {**FUSED, "decode_attention": "sdpa_folded"}),
    ("qwen3", {**FUSED, "decode_attention": "flex_decoding"}),
    ("llama", {**FUSED, "decode_attention": "sdpa_gqa"}),
    ("llama", {"decode_attention": "flex_decoding"}),
]


def _variant_id(family: str, options: dict) -> str:
    return "-".join([family, *("+".join(v) if isinstance(v, list) else v for v in options.values())])


@pytest.mark.parametrize(("family", "options"), VARIANTS, ids=[_variant_id(*v) for v in VARIANTS])
def test_every_variant_generates_the_tokens_and_cache_of_generate(family, options):
    torch._dynamo.reset()  # a fresh compile per variant: the variants must not share a cached step
    torch.manual_seed(0)
    model = randomise_zero_parameters(models.load_model(random_model(family), "float32", "cpu").model)
    ids = torch.randint(3, 1000, (1, 20), generator=torch.Generator().manual_seed(6))
    gen = 16  # tiny gpt-oss's sliding layers (window 32) fill up during the decode steps
    config = generation_config(standard_decoding("greedy"), gen, 0, CacheImplementation.STATIC)
    model.set_attn_implementation("eager")
    _, reference = timed_generate(model, ids, torch.ones_like(ids), config, "cpu", seed=0, clock=False)
    loop = CompiledDecodeLoop(model, standard_decoding("greedy"), 20, gen, "cpu", CompiledLoopOptions(**options))
    _, output = loop.run(ids, gen, seed=0, clock=False)
    assert torch.equal(output.sequences, reference.sequences)
    for layer, expected in zip(output.past_key_values.layers, reference.past_key_values.layers):
        assert torch.allclose(layer.keys, expected.keys, atol=1e-5)
        assert torch.allclose(layer.values, expected.values, atol=1e-5)
    built = loop.build
    assert list(built.fusions) == [f for f in options.get("fusions", []) if family != "gpt_oss" or f == "qkv"]
    assert built.decode_attention_kernel == options["decode_attention"]
    expected_experts = options.get("decode_experts", "grouped_mm") if family == "gpt_oss" else None
    assert built.decode_experts_implementation == expected_experts


# Every option off its default: what a row records of them.
ALL_CHANGED = {
    "fusions": ["gate_up", "qkv"],
    "decode_attention": "flex_decoding",
    "decode_experts": "gathered_reduction",
}


def test_the_row_records_the_variant_that_ran():
    entry = ModelEntry(source="random", architecture=CARDS["gpt_oss"], compiled_loop=ALL_CHANGED)
    row = measure.measure_cell(make_cell(entry, context=24, gen=6, dtype="float32", backend="compiled_loop"))
    assert row["status"] == "ok" and row["valid"], row["invalid_reasons"]
    assert row["fusions"] == ["qkv"] and row["fusions_skipped"][0].startswith("gate_up:")
    assert row["decode_attention_kernel"] == "flex_decoding"
    assert row["attn_implementation"] == attention.implementation_name(False, "flex_decoding")
    assert row["decode_experts_implementation"] == "gathered_reduction"
    assert row["experts_implementation"] == "grouped_mm"  # the prefill's, as before
    assert '"compiled_loop":{"decode_attention":"flex_decoding"' in row["spec_json"]


def test_other_backends_record_no_variant():
    row = measure.measure_cell(make_cell(random_model("gpt_oss"), context=16, gen=4, dtype="float32"))
    assert row["status"] == "ok"
    assert row["fusions"] == [] and row["fusions_skipped"] == []
    assert row["decode_attention_kernel"] is None and row["decode_experts_implementation"] is None


def test_one_loop_runs_one_batch_size(llama):
    loop = CompiledDecodeLoop(llama, standard_decoding("greedy"), context=10, gen=3, device="cpu", batch=2)
    ids = torch.randint(3, 1000, (2, 10), generator=torch.Generator().manual_seed(6))
    assert loop.run(ids, 3, seed=0, clock=False)[1].sequences.shape == (2, 13)
    with pytest.raises(ValueError, match="this loop runs batch 2"):
        loop.run(ids[:1], 3, seed=0, clock=False)
