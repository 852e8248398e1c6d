"""The engine interface and the typed records of a cell: what each engine reports of what it built, that the
phases close an engine on every exit path, and that a misspelt record field fails where the record is built."""

from __future__ import annotations

import dataclasses
import json
import typing

import pytest
import torch

from deploybench.engines import models
from deploybench.engines.base import (
    DecodeBuild,
    Engine,
    EngineFacts,
    GenerationSettings,
    Implementations,
    LoadFigures,
)
from deploybench.engines.compiled_loop.engine import CompiledLoopEngine
from deploybench.engines.factory import engine_for
from deploybench.engines.generate import GenerateEngine
from deploybench.engines.timing import RunTiming
from deploybench.enums import ExpertsRead, PromptMode
from deploybench.instruments import energy
from deploybench.instruments.memory import PeakMemory
from deploybench.measure import phases as measure
from deploybench.measure import records
from deploybench.measure.runs import Ceilings
from deploybench.results import metrics
from tests.fixtures.engines import ScriptedEngine
from tests.unit.test_measure import make_cell, random_model

ENGINES = {"eager": GenerateEngine, "compiled": GenerateEngine, "compiled_loop": CompiledLoopEngine}


@pytest.mark.parametrize("backend", sorted(ENGINES))
def test_each_engine_reports_typed_settings_and_facts(backend):
    cell = make_cell(random_model("gpt_oss"), context=12, gen=4, dtype="float32", backend=backend)
    engine = engine_for(cell, "cpu", models.model_config(cell.model))
    assert type(engine) is ENGINES[backend]
    with pytest.raises(RuntimeError, match="load the engine first"):
        engine.facts()
    try:
        load = engine.load()
        assert isinstance(load, LoadFigures) and load.context_tokens_measured == 12
        assert load.prompt_mode == PromptMode.RANDOM_IDS and load.load_s > 0
        facts = engine.facts()
        assert isinstance(facts, EngineFacts) and isinstance(facts.implementations, Implementations)
        assert facts.implementations.experts_read_per_token == ExpertsRead.ROUTED  # tiny gpt-oss: grouped_mm
        if backend == "compiled_loop":
            assert facts.build.decode_attention_kernel == "gqa_matmul"  # the default options
            assert facts.build.decode_experts_implementation == "grouped_mm"
        else:
            assert facts.build == DecodeBuild(), "generate() builds no decode step of its own"
        settings = engine.settings()
        assert isinstance(settings, GenerationSettings) and json.loads(settings.to_json())["max_new_tokens"] == 4
        timing, output = engine.run(1, 0, clock=True)  # a TTFT run: the prefill only, nothing compiles
        assert isinstance(timing, RunTiming) and timing.new_tokens == 1 and engine.kv_cache_bytes(output) > 0
        assert isinstance(engine.peak_memory(), PeakMemory) and engine.decode_step_profile() is None  # CPU
        assert engine.compiled() is (backend == "compiled_loop")  # generate() compiles on a GPU only
    finally:
        engine.close()
    assert engine.loaded is None and engine.input_ids is None
    engine.close()  # a second close is harmless


def test_an_engine_must_say_how_it_closes():
    assert {"load", "run", "settings", "facts", "close"} <= Engine.__abstractmethods__
    everything_but_close = {name: lambda self, *a: None for name in Engine.__abstractmethods__ - {"close"}}
    with pytest.raises(TypeError, match="close"):
        type("NoClose", (Engine,), everything_but_close)(None, "cpu")


def _raise(error: BaseException):
    def run(new_tokens, i, clock):
        raise error

    return run


@pytest.mark.parametrize(
    ("error", "propagates"),
    [(torch.OutOfMemoryError("CUDA out of memory"), False), (KeyError("a harness bug"), True)],
)
def test_the_engine_is_closed_when_a_phase_raises(monkeypatch, error, propagates):
    cell = make_cell(random_model("qwen3"), context=8, gen=3)
    engines = []

    def scripted(cell, device, config):
        engines.append(ScriptedEngine(_raise(error), cell, device))
        return engines[-1]

    monkeypatch.setattr(measure, "engine_for", scripted)
    if propagates:
        with pytest.raises(KeyError):
            measure.measure_cell(cell)
    else:
        row = measure.measure_cell(cell)
        assert row["status"] == "failed" and row["failure_kind"] == "oom"
    assert [e.closed for e in engines] == [1]


def test_the_engine_is_closed_after_a_cell_that_ran(monkeypatch):
    cell = make_cell(random_model("qwen3"), context=8, gen=3)
    engines = []

    def scripted(cell, device, config):
        def run(new_tokens, i, clock):
            times = [0.001 * k for k in range(new_tokens)] if clock else []
            return RunTiming(e2e_s=0.01, token_times=times, new_tokens=new_tokens), None

        engines.append(ScriptedEngine(run, cell, device))
        return engines[-1]

    monkeypatch.setattr(measure, "engine_for", scripted)
    row = measure.measure_cell(cell)
    assert row["status"] == "ok" and row["kv_cache_bytes"] == 0 and engines[0].closed == 1
    assert row["generation_settings_json"] == '{"max_new_tokens":3}' and row["fusions"] == []


# Records whose fields are row columns, named as the catalogue names them.
COLUMN_RECORDS = (
    Ceilings,
    LoadFigures,
    Implementations,
    DecodeBuild,
    PeakMemory,
    records.MemoryFigures,
    records.Latency,
    records.Compilation,
    records.EnergyFigures,
    records.Roofline,
    records.Boundness,
    records.Verdict,
)


@pytest.mark.parametrize("record", COLUMN_RECORDS, ids=lambda r: r.__name__)
def test_every_record_field_is_a_catalogued_column(record):
    hints = typing.get_type_hints(record)
    names = [f.name for f in dataclasses.fields(record) if not dataclasses.is_dataclass(hints[f.name])]
    unknown = set(names) - set(metrics.by_name())
    assert not unknown, f"{record.__name__} fields not in the metric catalogue: {sorted(unknown)}"


def test_the_energy_record_leads_with_the_meters_fields():
    leading = [f.name for f in dataclasses.fields(records.EnergyFigures)][: len(energy.ENERGY_FIELDS)]
    assert leading == list(energy.ENERGY_FIELDS)


def test_a_misspelt_field_fails_where_the_record_is_built():
    with pytest.raises(TypeError, match="j_per_decode_tokens"):
        records.EnergyFigures(**energy.unavailable("x"), j_per_decode_tokens=1.0)
    boundness = records.Boundness(boundness_null_reason="gen below 2")
    with pytest.raises(dataclasses.FrozenInstanceError):
        boundness.bound_by = "host"  # a record is not written after it is built


def test_columns_flatten_nested_records_and_lists():
    memory = records.MemoryFigures(PeakMemory(None, None, "cpu"), 10, 10)
    assert records.columns(memory) == {
        "peak_allocated_bytes": None,
        "peak_reserved_bytes": None,
        "memory_null_reason": "cpu",
        "kv_cache_bytes": 10,
        "kv_cache_bytes_analytic": 10,
    }
    facts = EngineFacts(Implementations("sdpa", "n/a", ExpertsRead.NONE), DecodeBuild(fusions=("qkv",)))
    assert records.columns(facts)["fusions"] == ["qkv"] and records.columns(facts)["attn_implementation"] == "sdpa"
