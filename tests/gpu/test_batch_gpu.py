"""The batch axis's building blocks on a CUDA GPU (tiny cards). Run with -m gpu; not yet run on a GPU."""

from __future__ import annotations

import pytest
import torch

from deploybench.analytic import capacity, kvcache
from deploybench.engines import batch as batching
from deploybench.engines import models
from deploybench.engines.compiled_loop.decode_loop import CompiledDecodeLoop
from deploybench.engines.timing import generation_config
from deploybench.enums import CacheImplementation
from deploybench.instruments import coverage, memory
from deploybench.plan.spec import standard_decoding
from tests.unit.test_measure import CARDS, random_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
GREEDY = standard_decoding("greedy")


def _inputs(loaded, context, batch):
    prompt_batch = batching.prompt_batch(loaded, loaded.model.config, context, batch, 0)
    return batching.batch_tensors(prompt_batch, "cuda")


@pytest.mark.parametrize("family", sorted(CARDS))
def test_batch_generate_kv_and_peak_on_gpu(family):
    loaded = models.load_model(random_model(family), "bfloat16", "cuda")
    weights = memory.allocated_bytes("cuda")
    ids, mask = _inputs(loaded, 256, 4)
    memory.reset_peak("cuda")
    timing, output = batching.timed_generate_batch(
        loaded.model, ids, mask, generation_config(GREEDY, 16, 0), "cuda", seed=0, clock=True
    )
    kv = kvcache.measured_kv_bytes(output.past_key_values)
    assert kv == kvcache.analytic_kv_bytes(loaded.model.config, 256, 16, torch.bfloat16, batch=4)
    assert memory.peak("cuda").peak_allocated_bytes >= weights + kv
    assert timing.new_tokens == 16 and timing.decode_tps > 0


def test_router_choices_stay_on_the_gpu():
    loaded = models.load_model(random_model("gpt_oss"), "bfloat16", "cuda")
    ids, mask = _inputs(loaded, 64, 1)
    with torch.inference_mode(), coverage.RouterRecorder(loaded.model) as recorder:
        loaded.model.generate(input_ids=ids, attention_mask=mask, generation_config=generation_config(GREEDY, 8, 0))
    assert all(t.is_cuda for layer in recorder.calls for t in layer)
    assert recorder.coverage(1).experts_touched_per_layer == loaded.model.config.num_experts_per_tok


@pytest.mark.parametrize("family", ["gpt_oss", "qwen3"])
def test_compiled_loop_at_batch_b_on_gpu(family):
    """CUDA graphs over a (B, context) batch: B x gen tokens, a static cache of B sequences."""
    model = models.load_model(random_model(family), "bfloat16", "cuda").model
    ids = torch.randint(3, 1000, (4, 128), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    loop = CompiledDecodeLoop(model, GREEDY, context=128, gen=16, device="cuda", batch=4)
    for _ in range(2):  # compile, then a replay
        timing, output = loop.run(ids, 16, seed=0, clock=True)
    assert output.sequences.shape == (4, 144) and timing.new_tokens == 16 and len(timing.token_times) == 16
    assert kvcache.measured_kv_bytes(output.past_key_values) == kvcache.analytic_kv_bytes(
        model.config, 128, 16, torch.bfloat16, CacheImplementation.STATIC, batch=4
    )


def test_peak_at_batch_8_is_predicted_from_batch_1():
    """Activations per sequence measured at batch 1 predict the peak at batch 8 (eager prefill scores dominate)."""
    loaded = models.load_model(random_model("gpt_oss"), "bfloat16", "cuda")
    weights = memory.allocated_bytes("cuda")
    kv_per_seq = kvcache.analytic_kv_bytes(loaded.model.config, 512, 8, torch.bfloat16)
    config = generation_config(GREEDY, 8, 0)
    peaks = {}
    for batch in (1, 8):
        ids, mask = _inputs(loaded, 512, batch)
        memory.reset_peak("cuda")
        _, output = batching.timed_generate_batch(loaded.model, ids, mask, config, "cuda", seed=0, clock=False)
        peaks[batch] = memory.peak("cuda").peak_allocated_bytes
        del output
    activation = capacity.activation_bytes_per_seq(peaks[1], weights, kv_per_seq)
    predicted = capacity.bytes_at_batch(weights, kv_per_seq, activation, 8)
    assert 0.7 < peaks[8] / predicted < 1.3, (peaks, predicted)
