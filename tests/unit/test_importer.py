"""Importer: the study's released CSVs land in the columns whose definitions they match."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from deploybench.results.importer import FORMATS, ImportFormatError, import_table, register_format
from deploybench.results.schema import to_table

ROOT = Path(__file__).resolve().parents[2]
REF = "reference/arxiv-2508.16700"
MODEL_MAP = {
    "openai/gpt-oss-20b": "gpt-oss-20b",
    "Qwen/Qwen3-32B": "qwen3-32b",
    "01-ai/Yi-34B": "yi-34b",
}
SPEC = {"name": "arxiv-2508.16700", "format": "arxiv_2508_16700", "path": REF, "model_map": MODEL_MAP}
MIB = 2**20


@pytest.fixture(scope="module")
def rows():
    return {r["cell_id"]: r for r in import_table(SPEC, ROOT)}


def copy_ref(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / REF, tmp_path / "ref")
    return tmp_path / "ref"


def test_one_row_per_cell_with_source_and_identity(rows):
    # 36 latency cells + context 4096 + 5 decoding modes + 3 precisions
    assert len(rows) == 45
    assert {r["source"] for r in rows.values()} == {"import:arxiv-2508.16700"}
    assert {r["weights_source"] for r in rows.values()} == {"pretrained"}
    assert {r["backend"] for r in rows.values()} == {"eager"}
    assert {r["model"] for r in rows.values()} == {"gpt-oss-20b", "qwen3-32b", "yi-34b"}
    assert all(r["valid"] is None for r in rows.values())
    assert all(r["e2e_ms_samples"] is None for r in rows.values() if "e2e_ms_samples" in r)
    to_table(list(rows.values()))  # acceptable to the schema


def test_gpt_oss_2048_64_latency_in_the_right_columns(rows):
    r = rows["gpt-oss-20b/eager-bfloat16/c2048-g64-b1-greedy"]
    assert (r["model"], r["context_tokens"], r["gen_tokens"]) == ("gpt-oss-20b", 2048, 64)
    assert (r["decoding"], r["dtype"], r["model_ref"]) == ("greedy", "bfloat16", "openai/gpt-oss-20b")
    assert r["ttft_ms"] == 475.80862045288086  # their TTFT_ms
    assert r["e2e_tps"] == 31.11733977893926  # their TPOT_tokps: end-to-end, not decode
    assert r.get("decode_tps") is None and r.get("tpot_ms") is None
    assert r["e2e_ms_p50"] == 2056.731104850769
    assert r["e2e_ms_p95"] == r["e2e_ms_p99"] == 2060.7223510742188
    assert r["n_runs"] == 10 and r["do_sample"] is False
    assert any("both equal the maximum over 10 runs" in n for n in r["notes"])


def test_qwen_and_yi_cells(rows):
    q = rows["qwen3-32b/eager-bfloat16/c128-g256-b1-greedy"]
    assert q["ttft_ms"] == 47.223567962646484 and q["e2e_tps"] == 26.620523873417948
    assert q["prompt_mode"] == "chat_template"
    y = rows["yi-34b/eager-bfloat16/c512-g64-b1-greedy"]
    assert y["prompt_mode"] == "raw_text"  # their "completion"
    assert y["e2e_ms_p50"] == 2078.2281160354614


def test_memory_is_mib_and_kv_columns_are_not_kv_cache(rows):
    r = rows["gpt-oss-20b/eager-bfloat16/c2048-g64-b1-greedy"]
    assert r["peak_allocated_bytes"] == 45_591_968_256 == round(43479.88916015625 * MIB)
    assert r["peak_reserved_bytes"] == 45202 * MIB
    # Its 2048 cell says 39925.65 MiB after load, 32 MiB left from the cell before: the model's first, 39893.65
    assert r["weights_bytes"] == round(39893.65478515625 * MIB)
    assert rows["gpt-oss-20b/eager-bfloat16/c128-g64-b1-greedy"]["weights_bytes"] == r["weights_bytes"]
    assert (r["attn_implementation"], r["experts_read_per_token"]) == ("eager", "all")  # the study's transformers
    assert rows["yi-34b/eager-bfloat16/c512-g64-b1-greedy"]["attn_implementation"] == "sdpa"
    assert r.get("kv_cache_bytes") is None  # their kv_cache_alloc_mb is mostly activations
    assert any("3554.2 MiB" in n and "not the KV cache" in n for n in r["notes"])
    assert rows["gpt-oss-20b/eager-bfloat16/c2048-g128-b1-greedy"].get("peak_allocated_bytes") is None


def test_energy_per_1k_decoded_tokens(rows):
    r = rows["qwen3-32b/eager-bfloat16/c1024-g64-b1-greedy"]
    assert r["j_per_1k_tokens"] == 12000.422213108092
    assert r["tokens_per_j"] == pytest.approx(1000 / 12000.422213108092, rel=1e-12)
    assert r["avg_power_w"] == 304.929
    assert r.get("idle_power_w") is None  # their baseline reading is not idle power
    assert r["ttft_ms"] == 193.1784152984619  # the latency table's TTFT, not the energy run's


def test_precision_ablation_failed_rows(rows):
    fp16 = rows["gpt-oss-20b/eager-float16/cNA.precision-g64-b1-greedy"]
    fp32 = rows["gpt-oss-20b/eager-float32/cNA.precision-g64-b1-greedy"]
    for row, found in ((fp16, "Half"), (fp32, "Float")):
        assert row["status"] == "failed" and row["failure_kind"] == "unsupported"
        assert row["error"] == f"expected scalar type BFloat16 but found {found}"
        assert row.get("e2e_tps") is None and row["context_tokens"] is None
    bf16 = rows["gpt-oss-20b/eager-bfloat16/cNA.precision-g64-b1-greedy"]
    assert bf16["status"] == "ok" and bf16["e2e_tps"] == 38.65763065496588
    assert bf16["e2e_ms_p50"] == pytest.approx(1655.5593013763428, rel=1e-12)


def test_decoding_ablation_modes(rows):
    ids = {cid for cid in rows if "cNA.decoding" in cid}
    assert {cid.rsplit("-", 1)[-1] for cid in ids} == {"greedy", "top_p", "top_k", "high_temp", "low_temp"}
    r = rows["gpt-oss-20b/eager-bfloat16/cNA.decoding-g64-b1-top_p"]
    assert (r["do_sample"], r["temperature"], r["top_p"], r["seed"]) == (True, 0.7, 0.9, 1234)
    assert r["e2e_tps"] == 38.706091871568695 and r["n_runs"] == 5
    assert r["e2e_ms_p50"] == pytest.approx(1653.4864902496338, rel=1e-12)
    assert rows["gpt-oss-20b/eager-bfloat16/cNA.decoding-g64-b1-top_k"]["top_k"] == 50
    assert r["context_tokens"] is None and any("context not recorded" in n for n in r["notes"])


def test_context_scaling_adds_4096_and_notes_overlap(rows):
    r = rows["gpt-oss-20b/eager-bfloat16/c4096-g64-b1-greedy"]
    assert r["e2e_tps"] == 21.779047964289028 and r["context_tokens_measured"] == 4096
    assert r["gen_tokens_measured"] == 64 and r["e2e_ms_p95"] == pytest.approx(3078.3321857452393)
    main = rows["gpt-oss-20b/eager-bfloat16/c1024-g64-b1-greedy"]
    assert main["e2e_tps"] == 35.9487514389481  # latency table kept, ablation (34.53) noted
    assert any("context-scaling ablation" in n and "34.53" in n for n in main["notes"])


def test_study_parameter_counts_labelled(rows):
    r = rows["gpt-oss-20b/eager-bfloat16/c128-g64-b1-greedy"]
    assert (r["active_params"], r["total_params"]) == (3_600_000_000, 20_000_000_000)
    assert "study" in r["active_params_source"]
    assert rows["yi-34b/eager-bfloat16/c128-g64-b1-greedy"]["active_params"] == 34_000_000_000


def test_unknown_columns_name_the_file_and_expected_columns(tmp_path):
    ref = copy_ref(tmp_path)
    path = ref / "latency/latency_qwen3-32b_universal.csv"
    path.write_text(path.read_text().replace("TPOT_tokps", "tok_per_s", 1))
    with pytest.raises(ImportFormatError) as err:
        import_table({**SPEC, "path": "ref"}, tmp_path)
    msg = str(err.value)
    assert str(path) in msg and "TPOT_tokps" in msg and "tok_per_s" in msg and "TTFT_ms" in msg


def test_unknown_file_and_unknown_format_are_errors(tmp_path):
    ref = copy_ref(tmp_path)
    (ref / "latency/extra.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ImportFormatError, match="extra.csv"):
        import_table({**SPEC, "path": "ref"}, tmp_path)
    with pytest.raises(ImportFormatError, match="unknown format 'nope'"):
        import_table({**SPEC, "format": "nope"}, ROOT)


def test_unmapped_model_and_unknown_decoding_are_errors(tmp_path):
    with pytest.raises(ImportFormatError, match="'01-ai/Yi-34B' is not in model_map"):
        import_table({**SPEC, "model_map": {k: v for k, v in MODEL_MAP.items() if "Yi" not in k}}, ROOT)
    ref = copy_ref(tmp_path)
    path = ref / "ablations/ablation_decoding_parameters_openai_gpt-oss-20b.csv"
    path.write_text(path.read_text().replace("Low Temp", "Beam"))
    with pytest.raises(ImportFormatError, match="unknown decoding_method 'Beam'"):
        import_table({**SPEC, "path": "ref"}, tmp_path)


def test_formats_registry_accepts_new_formats(tmp_path):
    @register_format("toy")
    def toy(spec, folder):
        return [{"cell_id": "m/eager-bfloat16/c1-g1-b1-greedy", "model": spec["model_map"]["x"]}]

    try:
        out = import_table({"name": "t", "format": "toy", "path": ".", "model_map": {"x": "m"}}, tmp_path)
        assert out[0]["source"] == "import:t" and out[0]["model"] == "m"
    finally:
        del FORMATS["toy"]


def _cut(text: str, keep: str) -> str:
    """The file cut right after the first occurrence of `keep` on its last line."""
    head, last = text.rstrip("\n").rsplit("\n", 1)
    return f"{head}\n{last[: last.index(keep) + len(keep)]}"


@pytest.mark.parametrize(
    ("damage", "line_column"),
    [
        # the last line cut mid p50_ms: the 8655.0 imported with its other figures empty
        (
            lambda t: _cut(t, "2048,256,386.3859176635742,9909"),
            "line 13, column 'p50_ms': 6 fields where the header has 9",
        ),
        (lambda t: _cut(t, "25.83"), "line 13, column 'TPOT_tokps': the file does not end with a newline"),
        (
            lambda t: t.replace("9909.939646720886", "9909.939x", 1),
            "line 13, column 'p50_ms': '9909.939x' is not a number",
        ),
        (lambda t: t.replace("386.3859176635742,", '"386.38,', 1), "line 13: not a well-formed CSV line"),
        (lambda t: t.replace("386.3859176635742,", "386.38,1,", 1), "line 13, column 'TPOT_tokps': 10 fields"),
    ],
)
def test_a_table_that_does_not_parse_completely_is_refused_naming_file_line_and_column(tmp_path, damage, line_column):
    """Issue 21 item 3: truncated, malformed or non-numeric: refused naming the file, the line and the column
    (a truncated last line was imported with wrong figures, a non-number failed in Arrow naming neither)."""
    ref = copy_ref(tmp_path)
    path = ref / "latency/latency_qwen3-32b_universal.csv"
    path.write_text(damage(path.read_text()))
    with pytest.raises(ImportFormatError) as err:
        import_table({**SPEC, "path": "ref"}, tmp_path)
    assert str(err.value).startswith(f"{path}: {line_column}"), str(err.value)
