"""The report's numbers are the Parquet's numbers: a real workflow run, a failed cell included."""

from __future__ import annotations

import copy
import html
import re

import pandas as pd
import pytest

from deploybench.plan.config import validate_config
from deploybench.report import appendix, builder
from deploybench.report.data import ReportData
from deploybench.report.specs import BY_ID

from .conftest import SMALL_CONFIG

pytestmark = pytest.mark.workflow


def test_report_tables_equal_the_parquet(small_workflow):
    wf = small_workflow
    config = copy.deepcopy(SMALL_CONFIG)
    # tiny-llama has 512 positions: 510 + 4 is over the limit and becomes a failed row.
    config["studies"]["scaling"] = {"kind": "context_scaling", "models": ["m-llama"], "contexts": [32, 510], "gen": [4]}
    wf.write_config(config)
    wf.snakemake()

    df = pd.read_parquet(wf.root / "results/ape.parquet")
    page = html.unescape((wf.root / "report/report.html").read_text())
    shown = re.sub(r"<[^>]+>", "", page)  # the page's text (a median and its interval sit on two lines)
    data = ReportData(df, validate_config(config))

    (latency,) = builder.build(BY_ID["table-latency-ref"], data)
    for model in ("m-qwen3", "m-llama"):
        row = df[(df.model == model) & (df.context_tokens == 32)].iloc[0]
        for column in ("ttft_ms", "e2e_ms_p50", "e2e_tps", "decode_tps"):
            cell = latency.cell(column, model=model)
            assert cell.value == pytest.approx(row[column]), (model, column)
            assert cell.text in shown

    failed = df[df.status == "failed"]
    assert failed.cell_id.tolist() == ["m-llama/eager-bfloat16/c510-g4-b1-greedy"]
    assert failed.failure_kind.iloc[0] == "context_too_long"
    (failures,) = appendix.failures(data)
    assert [r.key["cell_id"] for r in failures.rows if r.status == "failed"] == failed.cell_id.tolist()
    assert "m-llama/eager-bfloat16/c510-g4-b1-greedy" in page and "context_too_long" in page
    assert not re.search(r"\b(nan|NaN|None)\b", page.split("<body")[1])
    # Every table built: a table that raised is kept as skipped "could not be built", which must not happen.
    manifest = (wf.root / "report/manifest.json").read_text()
    assert "could not be built" not in manifest and "could not be built" not in page
