"""The roofline at batch B: bytes and FLOPs of a decode step of B sequences, against hand-computed numbers."""

from __future__ import annotations

import pytest
import torch

from deploybench.analytic import kvcache, roofline
from deploybench.analytic.params import build_meta_model, count_params, expert_split
from deploybench.engines.models import load_card

TINY_MOE = "workflow/architectures/tiny-gpt-oss.json"
# tiny gpt-oss by hand: hidden 64, 4 layers, 4 query heads and 2 KV heads of 16, vocab 1024, 8 experts of
# intermediate 64 with biases, top-2, attention biases, untied head, windows of 32 on layers 0 and 2.
H, INTER, LAYERS, E, K, VOCAB = 64, 64, 4, 8, 2, 1024
ATTENTION = (H * 64 + 64) + 2 * (H * 32 + 32) + (64 * H + H) + 4  # q, k, v, o (all with biases), 4 sinks
ROUTER = E * H + E
PER_LAYER_DENSE = ATTENTION + ROUTER + 2 * H  # + two RMS norms
DENSE = LAYERS * PER_LAYER_DENSE + H + VOCAB * H  # + the final norm and the output head; the input lookup excluded
PER_EXPERT = H * 2 * INTER + 2 * INTER + INTER * H + H  # gate_up and down projections with their biases


@pytest.fixture(scope="module")
def tiny():
    config = load_card(TINY_MOE)
    meta = build_meta_model(config)
    return config, expert_split(meta), count_params(meta)


def test_dense_and_expert_split_of_the_tiny_card(tiny):
    _, split, counts = tiny
    assert (DENSE, PER_EXPERT) == (118128, 12480)
    assert split == {
        "dense_params": DENSE,
        "expert_params": LAYERS * E * PER_EXPERT,
        "params_per_expert": PER_EXPERT,
        "moe_layers": LAYERS,
        "n_experts": E,
        "top_k": K,
    }
    assert counts["active_params"] == DENSE + K * PER_EXPERT * LAYERS
    assert counts["all_experts_params"] == DENSE + E * PER_EXPERT * LAYERS


@pytest.mark.parametrize("card", ["gpt-oss-20b", "qwen3-32b", "yi-34b"])
def test_split_identities_on_the_full_size_cards(card):
    meta = build_meta_model(load_card(f"workflow/architectures/{card}.json"))
    split, counts = expert_split(meta), count_params(meta)
    assert (
        counts["active_params"]
        == split["dense_params"] + split["top_k"] * split["params_per_expert"] * split["moe_layers"]
    )
    assert counts["all_experts_params"] == split["dense_params"] + split["expert_params"]
    if card == "gpt-oss-20b":  # 24 layers x 32 experts of 24.9 M; 1.22 B outside the experts
        assert (split["moe_layers"], split["n_experts"], split["top_k"]) == (24, 32, 4)
        assert split["params_per_expert"] == 24_891_840 and split["dense_params"] == 1_218_690_624
    else:
        assert split["expert_params"] == split["moe_layers"] == 0


def test_a_batch_step_by_hand(tiny):
    """B = 4 at context 40, gen 8, bf16, 5.5 experts touched per layer."""
    config, split, counts = tiny
    batch, touched = 4, 5.5
    figures = roofline.decode_step_figures(
        config, split, counts["active_params"], touched, torch.bfloat16, 40, 8, batch
    )
    weights = DENSE + 5.5 * PER_EXPERT * LAYERS  # 392688 parameters read once for the step
    # KV: 2 (K, V) x 2 heads x 16 x 2 bytes = 128 bytes per position per layer; decode steps 1..7 attend
    # 41..47 positions (mean 44) on the two full layers and the 32 of the window on the two sliding ones.
    kv_per_seq = 128 * (2 * 44 + 2 * 32)  # 19456
    assert figures["weights_read_per_step"] == weights == 392688
    assert figures["decode_bytes_per_step"] == 2 * weights + batch * kv_per_seq == 863200
    attention = 4 * 4 * 16 * (2 * 44 + 2 * 32)  # 38912 per sequence
    assert figures["decode_flops_per_step"] == 2 * (DENSE + K * PER_EXPERT * LAYERS) * batch + batch * attention
    assert figures["decode_flops_per_step"] == 1899392
    roofs = roofline.batch_roofline(2.0e6, 1e12, 1e14, 863200, 1899392, batch)
    assert roofs["roofline_tps"] == pytest.approx(4e12 / 863200)  # 4.634 M tok/s: B x bandwidth / bytes per step
    assert roofs["roofline_fraction"] == pytest.approx(2.0e6 / (4e12 / 863200))
    assert roofs["roofline_compute_tps"] == pytest.approx(4e14 / 1899392)  # 210.6 k tok/s: B x rate / FLOPs per step


def test_batch_1_with_top_k_touched_is_the_batch_1_roofline(tiny):
    config, split, counts = tiny
    figures = roofline.decode_step_figures(config, split, counts["active_params"], K, torch.bfloat16, 40, 8, 1)
    kv = kvcache.kv_bytes_read_per_token(config, 40, 8, torch.bfloat16)
    # batch 1: the active weights once (2 bytes each in bf16) plus one sequence's KV; 2 FLOPs per weight + attention
    assert figures["decode_bytes_per_step"] == counts["active_params"] * 2 + kv
    flops = 2 * counts["active_params"] + kvcache.attention_flops_per_token(config, 40, 8)
    assert figures["decode_flops_per_step"] == flops
    assert roofline.batch_roofline(50.0, 1e12, None, figures["decode_bytes_per_step"], flops, 1) == {
        **roofline.roofline(50.0, 1e12, figures["decode_bytes_per_step"]),
        "roofline_compute_tps": None,
    }


def test_every_expert_read_is_the_all_experts_weights(tiny):
    config, split, counts = tiny
    figures = roofline.decode_step_figures(config, split, counts["all_experts_params"], E, torch.float32, 40, 8, 4)
    assert figures["weights_read_per_step"] == counts["all_experts_params"]


def test_dense_model_bytes_do_not_depend_on_experts():
    config = load_card("workflow/architectures/tiny-llama.json")
    meta = build_meta_model(config)
    split, counts = expert_split(meta), count_params(meta)
    figures = [
        roofline.decode_step_figures(config, split, counts["active_params"], t, torch.bfloat16, 32, 4, 8)
        for t in (0, 7)
    ]
    assert figures[0] == figures[1]
    assert figures[0]["weights_read_per_step"] == counts["active_params"]


def test_kv_and_attention_of_b_sequences_are_b_times_one():
    config = load_card(TINY_MOE)
    one = kvcache.kv_bytes_read_per_token(config, 100, 16, torch.float16)
    assert kvcache.kv_bytes_read_per_step(config, 100, 16, torch.float16, batch=6) == 6 * one
    assert kvcache.attention_flops_per_step(config, 100, 16, 6) == 6 * kvcache.attention_flops_per_token(
        config, 100, 16
    )


def test_roofs_are_null_without_ceilings():
    assert roofline.compute_roof_tps(None, 1.0, 4) is None
    assert roofline.batch_roofline(None, None, None, 10.0, 10.0, 2) == {
        "roofline_tps": None,
        "roofline_fraction": None,
        "roofline_compute_tps": None,
    }
