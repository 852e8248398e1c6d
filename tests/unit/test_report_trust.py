"""What a reader acts on (issue 22): the first screen's table of figures to trust per machine, the study's figures as
its paper printed them, figures through host-paced cells, and the smaller things a reader tripped over.

Frames: tests/fixtures/report_demo.py's GPU demo, with the study's rows imported from its released CSVs
(reference/arxiv-2508.16700) through deploybench.results.importer where the printed figures matter.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd
import pytest

from deploybench.report import builder, imported, trust
from deploybench.report.data import ReportData
from deploybench.report.figures import SPECS as FIGURES
from deploybench.report.figures import build as build_figure
from deploybench.report.render import build_report, render_report
from deploybench.report.specs import BY_ID
from deploybench.results import importer
from deploybench.results.schema import to_table
from tests.fixtures.report_demo import (
    IMPORT_SOURCE,
    add_derived,
    demo_config,
    demo_frame,
    demo_rows,
    demo_settings,
    on_second_machine,
)

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "workflow" / "templates"
MODEL_MAP = {"openai/gpt-oss-20b": "gpt-oss-20b", "Qwen/Qwen3-32B": "qwen3-32b", "01-ai/Yi-34B": "yi-34b"}


@functools.cache
def with_the_study():
    """The GPU demo's rows of ours beside the study's rows as the importer reads its released CSVs."""
    spec = {"name": "arxiv-2508.16700", "format": "arxiv_2508_16700", "path": "reference/arxiv-2508.16700"}
    spec["model_map"] = MODEL_MAP
    rows = demo_rows("gpu") + importer.import_table(spec, ROOT)
    df = add_derived(to_table(rows).to_pandas(), {"deploybench": "qwen3-32b", IMPORT_SOURCE: "qwen3-32b"})
    config = demo_config("gpu")
    config["analysis"]["external_tables"] = [spec]
    return df, demo_settings("gpu").model_validate(config)


def test_the_first_screen_holds_one_table_per_machine_of_the_figures_to_trust():
    df, cfg = demo_frame("gpu"), demo_settings("gpu")
    ctx = build_report(on_second_machine(df, "qwen3-32b-eager"), cfg)
    first = ctx["sections"][0]
    assert first["id"] == "sec-trust" and not first["appendix"]
    tables = [it["obj"] for it in first["items"]]
    assert [t.id for t in tables] == ["table-trust", "table-trust-2"]  # one per machine, the larger first
    main, other = tables
    assert "GPU-00000000" in main.title and "GPU-22222222" in other.title
    assert [row.key["model"] for row in other.rows] == ["qwen3-32b-eager"]
    keys = [c.key for c in main.columns]
    assert keys == ["model", "backend", "ttft_ms", "decode_tps", "e2e_tps", "peak_allocated_bytes"] + [
        "j_per_decode_token",
        "bound_by",
    ]
    # every model entry and backend at the reference cell, each median with its interval or its run range
    assert {(row.key["model"], row.key["backend"]) for row in main.rows} >= {
        ("qwen3-32b", "eager"),
        ("qwen3-32b", "compiled"),
        ("qwen3-32b", "compiled_loop"),
        ("gpt-oss-20b-all", "eager"),
    }
    for row in main.rows:
        for key in ("ttft_ms", "decode_tps", "e2e_tps"):
            c = row.cells[key]
            assert c.interval or c.runs, (row.key, key)
    # host-paced figures visibly marked where they stand, GPU-paced ones not; what paces the decode, with evidence
    eager, loop = (main.cell("decode_tps", model="qwen3-32b", backend=b) for b in ("eager", "compiled_loop"))
    assert eager.text.endswith("‡") and eager.host and not loop.text.endswith("‡")
    assert main.cell("j_per_decode_token", model="qwen3-32b", backend="eager").text.endswith("‡")
    assert main.cell("bound_by", model="qwen3-32b", backend="eager").text.startswith("host (20/20 runs host-paced")
    # the machine and the code each table's rows came from, above it
    assert main.lead.startswith("NVIDIA H200 GPU-00000000-demo, power limit 700 W; host 16 cores of AMD EPYC 9654")
    assert "library sources sha256 5eed5eed5eed" in main.lead and "git 4f3c2a1b9d8e" in main.lead
    assert "uncommitted changes (+dirty): the commit alone does not identify the code" in other.lead
    # and the three to five differences the intervals resolve, below it
    assert 3 <= len(ctx["headline"]) <= 5 and all("between" in h for h in ctx["headline"])


def test_the_html_opens_on_the_trust_table_and_the_resolved_findings(tmp_path):
    paths = render_report(demo_frame("gpu"), demo_settings("gpu"), tmp_path, TEMPLATES, pdf=False)
    html = paths["html"].read_text()
    body = html[html.index("<main>") :]
    assert body.index('id="table-trust"') < body.index('id="headline"') < body.index('id="sec-findings"')
    assert body.index("<table") > body.index('id="table-trust"')  # the first table of the page is the trust table
    assert body.index('id="appendix"') > body.index('id="sec-summary"')  # every other table after the main report
    for table_id in ("table-latency-ref", "table-methodology", "table-environment"):
        assert body.index(f'id="{table_id}"') > body.index('id="appendix"')


def test_the_study_column_is_the_paper_s_table_1_with_its_source_and_the_other_csv_beside_it():
    df, cfg = with_the_study()
    (t,) = imported.figures(ReportData(df, cfg))
    energy = pd.read_csv(ROOT / "reference/arxiv-2508.16700/energy/energy_qwen3-32b_fixed.csv")
    latency = pd.read_csv(ROOT / "reference/arxiv-2508.16700/latency/latency_qwen3-32b_universal.csv")
    e = energy[energy.context_length == 2048].iloc[0]
    lat = latency[(latency.prompt_tokens == 2048) & (latency.gen_tokens == 64)].iloc[0]
    ttft = t.cell("theirs", metric="ttft_ms", model="qwen3-32b")
    assert ttft.value == pytest.approx(e.ttft_ms) == pytest.approx(369.4641590118408)  # the paper prints 369.46
    assert t.cell("source", metric="ttft_ms", model="qwen3-32b").text == "energy runs (Table 1); latency runs: 389.2"
    assert ttft.note == "energy/energy_qwen3-32b_fixed.csv"
    tpot = t.cell("theirs", metric="e2e_tps", model="qwen3-32b")  # the study's "TPOT": 23.73, not 23.37
    assert tpot.value == pytest.approx(e.decode_tokens_per_second) and tpot.text == "23.73"
    assert (
        t.cell("source", metric="e2e_tps", model="qwen3-32b").text
        == f"energy runs (Table 1); latency runs: {lat.TPOT_tokps:.2f}"
    )
    ours = t.cell("ours", metric="ttft_ms", model="qwen3-32b").value
    assert t.cell("ratio", metric="ttft_ms", model="qwen3-32b").value == pytest.approx(ours / e.ttft_ms)
    peak = t.cell("source", metric="peak_allocated_bytes", model="qwen3-32b").text
    assert peak.startswith("memory runs; printed 62.16 “GB” (GiB)")  # as its table printed MiB ÷ 1024
    assert t.cell("source", metric="j_per_1k_tokens", model="qwen3-32b").text == "energy runs"
    assert any(
        "energy/energy_qwen3-32b_fixed.csv" in n and "latency/latency_qwen3-32b_universal.csv" in n for n in t.notes
    )
    # the energy breakdown reads power and speed from that same energy CSV: they multiply to the ratio shown
    factors = t.cell("factors", metric="j_per_1k_tokens", model="qwen3-32b").text
    shown = t.cell("ratio", metric="j_per_1k_tokens", model="qwen3-32b").text
    assert factors.endswith(f"= {shown}")


def test_the_models_list_says_what_the_all_experts_path_computes():
    ctx = build_report(demo_frame("gpu"), demo_settings("gpu"))
    facts = {m["name"]: m for m in ctx["summary"]["models"]}
    said = facts["gpt-oss-20b-all"]["params"]
    assert "3.61 B active by the model card's convention" in said
    assert "(all_experts) multiplies every token by all experts: 20.3 B parameters computed per token" in said
    assert "its APE divides by the card's 3.61 B" in said
    assert facts["gpt-oss-20b"]["params"] == "20.9 B parameters, 3.61 B active"  # the routed path: as the card says


def test_figures_through_host_paced_cells_show_run_ranges_or_are_not_drawn():
    df, cfg = demo_frame("gpu"), demo_settings("gpu")
    spec = next(s for s in FIGURES if s.id == "fig-tps-context")
    fig = build_figure(spec, ReportData(df, cfg))  # every main-study cell host-paced: nothing to compare
    assert fig.skipped.startswith("e2e tok/s and decode tok/s not drawn: every cell it would draw is host-paced")
    yi = (df.model == "yi-34b") & (df.source == "deploybench")
    mixed = df.assign(gpu_kernel_ms_per_token=df.gpu_kernel_ms_per_token.where(~yi, None))
    mixed = mixed.assign(bound_by=mixed.bound_by.where(~yi, "memory_bandwidth"))  # yi-34b GPU-paced, the rest not
    fig = build_figure(spec, ReportData(mixed, cfg))
    decode = next(p for p in fig.panels if p.title.startswith("decode tok/s"))
    series = {s.name: s for s in decode.series}
    assert not any(series["yi-34b"].paced) and all(series["qwen3-32b"].paced)
    assert all(end is not None for end in series["qwen3-32b"].ends)  # each host-paced point with its range
    assert any("Hollow markers" in n for n in fig.notes)


def test_smaller_things_a_reader_tripped_over():
    from tests.unit.test_report_batch import _batch_rows, _data

    rows = [r | {"max_batch_fit": 49.0} for r in _batch_rows()]
    (batch,) = builder.build(BY_ID["table-batch"], _data(rows))
    assert batch.cell("max_batch_fit", model="dense", batch=4).text == "49"  # a batch size, not "49.0"
    no_dense_4 = [r for r in rows if (r["model"], r.get("batch_size")) != ("dense", 4)]
    (batch,) = builder.build(BY_ID["table-batch"], _data(no_dense_4))
    assert ("dense", 4) not in [(row.key["model"], row.key["batch"]) for row in batch.rows]  # no row of dashes
    assert any(n.startswith("Not in the data") and "dense, 4" in n for n in batch.notes)  # named once instead
    only_one = [r for r in rows if r.get("batch_size") == 1]  # batch 4 and 8 not measured: nothing scales
    (batch,) = builder.build(BY_ID["table-batch"], _data(only_one))
    assert batch.skipped.startswith("only batch 1 was measured")
    frontier = build_figure(next(s for s in FIGURES if s.id == "fig-batch-frontier"), _data(only_one))
    assert frontier.skipped == "only batch 1 was measured: no frontier to draw"
    df, cfg = demo_frame("gpu"), demo_settings("gpu")
    (tpot,) = imported.tpot_check(ReportData(df, cfg))  # only the flagged rows, the others counted
    flagged = df[(df.source != "deploybench") & df.tpot_artifact]
    assert len(tpot.rows) == len(flagged) < 12 and "the others are not listed" in tpot.notes[-1]
    clean = df.assign(tpot_artifact=False)
    (none,) = imported.tpot_check(ReportData(clean, cfg))
    assert none.skipped.startswith("none of the 12 imported rows carries the artifact")
    assert trust.code([{"code_revision": "abc+dirty", "source_sha256": "f" * 64}]).startswith("library sources")
