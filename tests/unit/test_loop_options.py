"""compiled_loop options in a model entry: checked, canonical, and absent from specs that do not set them."""

from __future__ import annotations

import json

import pytest

from deploybench.enums import DecodeAttentionKernel
from deploybench.plan.loop_options import DEFAULT, CompiledLoopOptions
from deploybench.plan.spec import ModelEntry, SpecError
from tests.unit.test_measure import CARDS, cell_dict, make_cell


def entry(**compiled_loop) -> dict:
    return {"source": "random", "architecture": CARDS["qwen3"], "compiled_loop": compiled_loop}


def test_defaults_are_todays_loop():
    assert DEFAULT.fusions == [] and DEFAULT.decode_attention is DecodeAttentionKernel.GQA_MATMUL
    assert DEFAULT.decode_experts is None


def test_fusions_are_kept_in_one_order_so_equal_settings_give_equal_specs():
    one = make_cell(entry(fusions=["gate_up", "qkv"]), backend="compiled_loop")
    other = make_cell(entry(fusions=["qkv", "gate_up"]), backend="compiled_loop")
    assert one.spec_json() == other.spec_json()
    assert one.model.compiled_loop.fusions == ["qkv", "gate_up"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"fusions": ["qkv", "qkv"]}, "model.compiled_loop.fusions: a fusion is listed twice"),
        ({"fusions": ["o_proj"]}, "model.compiled_loop.fusions[0]: Input should be 'qkv' or 'gate_up'"),
        ({"decode_attention": "flash"}, "model.compiled_loop.decode_attention: Input should be"),
        ({"decode_experts": "eager"}, "model.compiled_loop.decode_experts: Input should be"),
        ({"kernel": "sdpa_gqa"}, "model.compiled_loop.kernel: unknown key"),
    ],
)
def test_a_wrong_option_names_its_key(options, message):
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make_cell(entry(**options), backend="compiled_loop")


def test_an_entry_without_options_has_the_spec_it_had():
    """No key, no change: cells of entries that do not set compiled_loop keep their params (no rerun)."""
    cell = make_cell({"source": "random", "architecture": CARDS["qwen3"]}, backend="compiled_loop")
    assert json.loads(cell.spec_json())["model"] == {"architecture": CARDS["qwen3"], "source": "random"}
    assert cell.model.compiled_loop is None


def test_only_the_keys_written_enter_the_spec():
    cell = make_cell(entry(decode_attention="sdpa_gqa"), backend="compiled_loop")
    assert '"compiled_loop":{"decode_attention":"sdpa_gqa"}' in cell.spec_json()
    assert cell_dict(ModelEntry.model_validate(entry(decode_attention="sdpa_gqa")))["model"]["compiled_loop"] == {
        "decode_attention": "sdpa_gqa"
    }


def test_options_are_frozen_settings():
    options = CompiledLoopOptions(fusions=["qkv"])
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        options.fusions = []
