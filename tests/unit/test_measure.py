"""The measurement engine on CPU: rows, KV agreement, exact generation, failures, dtypes, loading."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pynvml
import pytest
import torch

from deploybench.analytic import params
from deploybench.analytic.kvcache import analytic_kv_bytes, measured_kv_bytes
from deploybench.engines import models
from deploybench.engines.timing import generation_config, timed_generate
from deploybench.enums import FailureKind, ThrottleReason
from deploybench.instruments import energy, nvml
from deploybench.measure import cell_figures, failures, uncertainty
from deploybench.measure import phases as measure
from deploybench.measure.records import EnergyFigures
from deploybench.plan.spec import (
    STANDARD_DECODING,
    CellSpec,
    DecodingMode,
    ModelEntry,
    SpecError,
    parse_cell,
    standard_decoding,
)
from deploybench.results.schema import read_rows, write_row
from tests.fixtures.tokenizers import save_tokenizer

CARDS = {
    "gpt_oss": "workflow/architectures/tiny-gpt-oss.json",
    "qwen3": "workflow/architectures/tiny-qwen3.json",
    "llama": "workflow/architectures/tiny-llama.json",
}
FAST = {"warmup_runs": 1, "n_runs": 2, "max_measure_s": 0}  # exactly n_runs per phase


def cell_dict(
    model: dict | ModelEntry,
    context=24,
    gen=6,
    dtype="bfloat16",
    decoding="greedy",
    name="m",
    backend="eager",
    batch=1,
    **measurement,
):
    """A cell spec as it travels in JSON (model given as a dict or an entry)."""
    if isinstance(model, ModelEntry):
        model = model.model_dump(mode="json", exclude_unset=True)
    return {
        "model_name": name,
        "model": model,
        "decoding_name": decoding,
        "decoding": dict(STANDARD_DECODING[decoding]),
        "measurement": {**FAST, **measurement},
        "context": context,
        "gen": gen,
        "dtype": dtype,
        "backend": backend,
        "batch": batch,
    }


def make_cell(model, **kwargs) -> CellSpec:
    return parse_cell(cell_dict(model, **kwargs))


def random_model(family: str) -> ModelEntry:
    return ModelEntry(source="random", architecture=CARDS[family])


@pytest.mark.parametrize("family", sorted(CARDS))
@pytest.mark.parametrize("context", [8, 40, 100])  # tiny gpt-oss slides over 32 tokens
def test_kv_cache_measured_equals_analytic(family, context):
    loaded = models.load_model(random_model(family), "bfloat16", "cpu")
    config = loaded.model.config
    ids = torch.randint(3, 1000, (1, context))
    gen_config = generation_config(DecodingMode(do_sample=False), 7, pad_token_id=0)
    timing, output = timed_generate(loaded.model, ids, torch.ones_like(ids), gen_config, "cpu", seed=0, clock=True)
    assert timing.new_tokens == 7 and len(timing.token_times) == 7
    measured = measured_kv_bytes(output.past_key_values)
    assert measured == analytic_kv_bytes(config, context, 7, torch.bfloat16)
    assert measured > 0


def test_sliding_window_layers_are_capped():
    config = models.load_card(CARDS["gpt_oss"])  # 2 sliding (window 32) + 2 full layers, 2 kv heads x 16
    per_token_layer = 2 * 2 * 16 * 2
    assert analytic_kv_bytes(config, 100, 7, torch.bfloat16) == per_token_layer * (2 * 106 + 2 * 31)


def _eos_first_model():
    """A tiny llama whose every greedy choice is the EOS token."""
    loaded = models.load_model(random_model("llama"), "float32", "cpu")
    model = loaded.model
    eos = model.config.eos_token_id
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    torch.nn.init.zeros_(head.weight)
    with torch.no_grad():
        head.bias.zero_()
        head.bias[eos] = 100.0
    model.lm_head = head
    return model, eos


def test_exactly_gen_tokens_even_when_first_choice_is_eos():
    model, eos = _eos_first_model()
    ids = torch.randint(3, 1000, (1, 16))
    mask = torch.ones_like(ids)
    # Plain generate stops at once: the model really prefers EOS.
    stock = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert stock.shape[1] - 16 < 12
    timing, output = timed_generate(
        model, ids, mask, generation_config(DecodingMode(), 12, 0), "cpu", seed=0, clock=True
    )
    assert timing.new_tokens == 12
    assert output.sequences[0, 16:].tolist() == [eos] * 12


def test_row_of_a_random_cell_is_complete_and_valid(tmp_path):
    row = measure.measure_cell(make_cell(random_model("gpt_oss"), context=48, gen=8))
    assert row["status"] == "ok" and row["valid"], row["invalid_reasons"]
    assert row["context_tokens_measured"] == 48 and row["gen_tokens_measured"] == 8
    assert len(row["ttft_ms_samples"]) == 2 and len(row["e2e_ms_samples"]) == 2
    assert len(row["itl_ms_samples"]) == 2 * 7
    assert row["tpot_ms"] == pytest.approx(1000 / row["decode_tps"])
    assert row["e2e_tps"] == pytest.approx(8 / (row["e2e_ms_p50"] / 1000))
    assert row["n_runs"] == row["ttft_runs"] == row["decode_runs"] == 2
    assert row["ttft_stop_reason"] == row["decode_stop_reason"] == "time_cap"  # max_measure_s 0: exactly n_runs
    # Two runs support no tail percentile, and no 95% interval of a median.
    assert row["e2e_ms_p50"] == pytest.approx(sum(row["e2e_ms_samples"]) / 2)
    assert row["e2e_ms_p95"] is None and row["e2e_ms_p99"] is None
    assert row["itl_ms_p95"] is None and row["itl_ms_p99"] is None  # 2 x 7 pooled steps
    assert row["tail_null_reason"] == (
        "e2e_ms_p95, e2e_ms_p99: 2 runs (p95 needs 20, p99 needs 100); "
        "itl_ms_p95, itl_ms_p99: 14 pooled steps (p95 needs 20, p99 needs 100)"
    )
    assert row["decode_tps_ci95_low"] is None and "decode_tps: 2 samples" in row["ci_null_reason"]
    assert row["kv_cache_bytes"] == row["kv_cache_bytes_analytic"]
    # CPU: allocator fields null with a reason, host RSS under its own name, energy null with reason.
    assert row["peak_allocated_bytes"] is None and "cpu" in row["memory_null_reason"]
    assert row["host_peak_rss_bytes"] > 0
    assert row["energy_j"] is None and row["energy_source"].startswith("unavailable")
    assert row["experts_implementation"] == "grouped_mm" and row["experts_read_per_token"] == "routed"
    assert row["active_params"] < row["total_params"]
    path = write_row(row, tmp_path / "cell.parquet")
    assert read_rows(path)[0]["cell_id"] == row["cell_id"]
    assert pq.read_schema(path).metadata[b"deploybench_schema_version"] == b"2.0"


def test_a_cpu_cell_row_has_intervals_that_bracket_its_medians():
    # Whether 40 CPU runs admit an interval depends on how correlated the host made them (a busy CI
    # machine gave n_eff 3), so the row is checked against its own raw samples: each interval is
    # the one its samples give, brackets its median, or is withheld with a reason naming it.
    row = measure.measure_cell(make_cell(random_model("llama"), context=8, gen=3, n_runs=40))
    assert row["status"] == "ok" and row["ttft_runs"] == row["decode_runs"] == 40
    withheld = []
    for median, prefix in (("ttft_ms", "ttft_ms"), ("decode_tps", "decode_tps"), ("e2e_ms_p50", "e2e_ms")):
        expected = uncertainty.median_interval(row[f"{prefix}_samples"])
        low, high = row[f"{median}_ci95_low"], row[f"{median}_ci95_high"]
        assert (low, high) == (expected.low, expected.high) and row[f"{prefix}_n_eff"] == expected.n_eff
        assert 0 < row[f"{prefix}_n_eff"] <= 40
        if low is None:
            withheld.append(median)
            assert f"{median}: 40 samples" in row["ci_null_reason"]
        else:
            assert low <= row[median] <= high
    assert (row["ci_null_reason"] is None) == (not withheld)
    assert row["e2e_ms_p95"] is not None and row["e2e_ms_p99"] is None  # 40 runs: p95 yes, p99 no
    assert row["itl_ms_p95"] is not None and row["itl_ms_p99"] is None  # 40 x 2 pooled steps
    assert row["tail_null_reason"] == (
        "e2e_ms_p99: 40 runs (p99 needs 100); itl_ms_p99: 80 pooled steps (p99 needs 100)"
    )


def test_a_phase_that_reaches_max_runs_says_so_in_the_row():
    row = measure.measure_cell(
        make_cell(random_model("qwen3"), context=8, gen=3, n_runs=3, max_runs=3, max_measure_s=600)
    )
    assert (row["ttft_runs"], row["decode_runs"], row["n_runs"]) == (3, 3, 3)
    assert row["ttft_stop_reason"] == row["decode_stop_reason"] == "max_runs"


@pytest.mark.parametrize("family", sorted(CARDS))
@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_every_dtype_runs_for_every_family(family, dtype):
    row = measure.measure_cell(make_cell(random_model(family), context=16, gen=4, dtype=dtype, n_runs=1))
    assert row["status"] == "ok", row["error"]
    assert row["kv_cache_bytes"] == row["kv_cache_bytes_analytic"]


@pytest.mark.parametrize("decoding", sorted(n for n, s in STANDARD_DECODING.items() if s.get("do_sample")))
def test_sampling_modes_are_seeded(decoding):
    # The run's seed decides the sample: the same seed, the same tokens; another seed, others.
    model = models.load_model(random_model("qwen3"), "float32", "cpu").model
    ids = torch.randint(3, 1000, (1, 12))
    config = generation_config(standard_decoding(decoding), 8, 0)
    runs = [timed_generate(model, ids, torch.ones_like(ids), config, "cpu", seed=s, clock=False)[1] for s in (5, 5, 6)]
    assert torch.equal(runs[0].sequences, runs[1].sequences)
    assert not torch.equal(runs[0].sequences, runs[2].sequences)


def test_active_params_in_the_entry_counts_a_moe_the_counter_cannot_read(tmp_path):
    # A card that says mixture-of-experts but whose modules hold no stacked experts: the counter refuses
    # it and its error asks for active_params; with active_params set, the cell runs and reads that many.
    card = json.loads(Path(CARDS["llama"]).read_text()) | {"num_experts_per_tok": 2}
    (tmp_path / "moe-llama.json").write_text(json.dumps(card))
    entry = ModelEntry(source="random", architecture=str(tmp_path / "moe-llama.json"))
    with pytest.raises(params.ParamCountError, match="set active_params"):
        measure.measure_cell(make_cell(entry, context=8, gen=3))
    row = measure.measure_cell(make_cell(entry.model_copy(update={"active_params": 123_456}), context=8, gen=3))
    assert row["status"] == "ok", row.get("error")
    assert row["active_params"] == 123_456 and row["active_params_source"] == "config override"
    assert row["params_read_per_token"] == 123_456 and row["total_params"] > 123_456


def test_context_over_the_limit_is_a_failed_row_before_loading(monkeypatch):
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("must not load"))
    row = measure.measure_cell(make_cell(random_model("llama"), context=510, gen=16))  # max positions 512
    assert row["status"] == "failed" and row["failure_kind"] == "context_too_long"
    assert "512" in row["error"] and row["valid"] is False


def test_out_of_memory_is_a_failed_row(monkeypatch):
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 253.00 GiB")

    monkeypatch.setattr(models, "load_model", oom)
    row = measure.measure_cell(make_cell(random_model("qwen3")))
    assert row["status"] == "failed" and row["failure_kind"] == "oom"
    assert "253.00 GiB" in row["error"]


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (torch.OutOfMemoryError("CUDA out of memory"), FailureKind.OOM),
        (RuntimeError("CUDA error: out of memory"), FailureKind.OOM),
        (failures.ContextTooLongError("context 510 + gen 16 exceeds 512"), FailureKind.CONTEXT_TOO_LONG),
        (RuntimeError("\"addmm_impl_cpu_\" not implemented for 'Half'"), FailureKind.UNSUPPORTED),
        (KeyError("a harness bug"), None),
    ],
)
def test_failures_are_classified_as_failure_kinds(error, kind):
    assert failures.classify(error) is kind


def test_unexpected_errors_propagate(monkeypatch):
    def bug(*args, **kwargs):
        raise KeyError("a harness bug")

    monkeypatch.setattr(models, "load_model", bug)
    with pytest.raises(KeyError):
        measure.measure_cell(make_cell(random_model("qwen3")))


# An energy-metered window that passes every other check.
_METERED = EnergyFigures(
    **energy.unavailable("x") | {"energy_j": 10.0, "energy_window_s": 5.0, "energy_counter_sampler_rel_diff": 0.01}
)


def test_a_window_that_saw_the_power_brake_is_invalid():
    # The names the meter writes into the row, decoded from NVML's own bit.
    seen = nvml.decode_throttle_reasons(pynvml.nvmlClocksEventReasonHwPowerBrakeSlowdown)
    assert cell_figures.energy_reasons(replace(_METERED, throttle_reasons=seen), 5.0) == [
        "GPU throttled: hw_power_brake_slowdown"
    ]


@pytest.mark.parametrize("reason", list(ThrottleReason))
def test_throttling_invalidates_a_row_unless_it_is_the_power_cap(reason):
    window = replace(_METERED, throttle_reasons=nvml.decode_throttle_reasons(reason.nvml_bit))
    reasons = cell_figures.energy_reasons(window, 5.0)
    assert reasons == ([f"GPU throttled: {reason}"] if reason is not ThrottleReason.SW_POWER_CAP else [])


BAD_SPECS = {
    "context": lambda c: c.update(context=0),
    "gen": lambda c: c.update(gen=-1),
    "dtype": lambda c: c.update(dtype="float8"),
    "backend": lambda c: c.update(backend="vllm"),
    "decoding.num_beams": lambda c: c["decoding"].update(num_beams=4),
    "model.source": lambda c: c["model"].update(source="s3"),
    "model.architecture": lambda c: c["model"].update(architecture="nope.json"),
    "measurement.n_runs": lambda c: c["measurement"].update(n_runs=0),
    "measurement.max_runs": lambda c: c["measurement"].update(max_runs=1),  # below n_runs (2)
    "measurement.ci_target_rel": lambda c: c["measurement"].update(ci_target_rel=0),
    "model_name": lambda c: c.pop("model_name"),
    "card_sha256": lambda c: c.update(card_sha256={"tiny-qwen3.json": "0" * 64}),
}


@pytest.mark.parametrize("field", sorted(BAD_SPECS))
def test_bad_spec_names_the_field_before_loading(field, monkeypatch):
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("must not load"))
    cell = cell_dict(random_model("qwen3"))
    BAD_SPECS[field](cell)
    with pytest.raises(SpecError, match=rf"^{re.escape(field)}: "):
        parse_cell(json.dumps(cell))  # as the measure job parses its params


def test_card_that_does_not_parse(tmp_path):
    card = tmp_path / "broken.json"
    card.write_text("{ not json")
    with pytest.raises(SpecError, match="architecture.*not valid JSON"):
        make_cell({"source": "random", "architecture": str(card)})


def test_spec_json_round_trips_to_the_same_text():
    cell = make_cell(random_model("gpt_oss"), decoding="top_p").model_copy(update={"card_sha256": None})
    assert parse_cell(cell.spec_json()).spec_json() == cell.spec_json()
    assert json.loads(cell.spec_json())["model"] == {"source": "random", "architecture": CARDS["gpt_oss"]}


FAMILY_TOKENIZER = {"gpt_oss": "system_chat", "qwen3": "plain_chat", "llama": "no_template"}


@pytest.mark.parametrize("family", sorted(CARDS))
def test_pretrained_from_a_local_directory(family, tmp_path):
    """The path real users take: save_pretrained, then from_pretrained through the harness."""
    directory = tmp_path / family
    model = models.load_model(random_model(family), "float32", "cpu").model
    model.save_pretrained(directory)
    save_tokenizer(FAMILY_TOKENIZER[family], directory)
    row = measure.measure_cell(make_cell(ModelEntry(source="pretrained", id=str(directory)), context=60, gen=5))
    assert row["status"] == "ok" and row["valid"], row["invalid_reasons"]
    assert row["weights_source"] == "pretrained"
    assert row["prompt_mode"] == ("raw_text" if family == "llama" else "chat_template")
    assert row["context_tokens_measured"] == 60


def test_command_line_measures_one_cell(tmp_path):
    out = tmp_path / "cell.parquet"
    cmd = [sys.executable, "-m", "deploybench", "measure", "--architecture", CARDS["qwen3"], "--context", "20"]
    measurement = json.dumps({"n_runs": 1, "max_measure_s": 0})  # exactly one run per phase
    cmd += ["--gen", "4", "--decoding", "top_k", "--measurement-json", measurement, "--out", str(out)]
    cmd += ["--archive-dir", str(tmp_path / "archive")]
    subprocess.run(cmd, check=True, timeout=300, capture_output=True)
    row = read_rows(out)[0]
    assert row["cell_id"] == "tiny-qwen3/eager-bfloat16/c20-g4-b1-top_k" and row["top_k"] == 50
    assert row["ttft_runs"] == row["decode_runs"] == 1
    assert len(list((tmp_path / "archive").rglob("*.parquet"))) == 1


def test_command_line_rejects_bad_input_naming_the_field(tmp_path):
    cmd = [sys.executable, "-m", "deploybench", "measure", "--architecture", CARDS["qwen3"], "--context", "0"]
    proc = subprocess.run([*cmd, "--gen", "4", "--out", str(tmp_path / "x.parquet")], capture_output=True, text=True)
    assert proc.returncode == 2 and "context" in proc.stderr
    assert not (tmp_path / "x.parquet").exists()
