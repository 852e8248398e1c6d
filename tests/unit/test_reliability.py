"""Issue 21, in pure Python: a failed attempt keeps the last good row, out of memory on any device is a row,
a model that cannot be built is one readable line, config files are named with their line, the warm server
serves only clients under its own limits. The real Snakemake runs: tests/workflow/test_reliability.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deploybench import cli
from deploybench.analytic import capacity
from deploybench.engines import model_check
from deploybench.enums import FailureKind
from deploybench.measure import failures
from deploybench.plan.config import ConfigError, validate_config
from deploybench.plan.config_files import check_overlays, load_yaml_file
from deploybench.results import archive
from deploybench.results.rule_log import rule_log
from deploybench.results.schema import read_rows
from tests.fixtures.small_config import SMALL_CONFIG

ROOT = Path(__file__).resolve().parents[2]
QWEN3 = str(ROOT / "workflow/architectures/tiny-qwen3.json")
LLAMA = ROOT / "workflow/architectures/tiny-llama.json"
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a host where measurement.device cuda fails")


# ------------------------------------------------------------------ item 1: a failed attempt keeps the last good row


def _measure_argv(tmp_path, **measurement) -> list[str]:
    settings = {"n_runs": 1, "max_measure_s": 0, "warmup_runs": 1} | measurement
    argv = ["measure", "--architecture", QWEN3, "--context", "16", "--gen", "2"]
    argv += ["--measurement-json", json.dumps(settings), "--out", str(tmp_path / "cell.parquet")]
    return [*argv, "--archive-dir", str(tmp_path / "archive")]


def _cell_row(tmp_path) -> dict:
    (row,) = read_rows(tmp_path / "cell.parquet")
    return row


@no_gpu
def test_a_failed_attempt_keeps_the_last_good_row_and_a_revert_restores_it(tmp_path):
    """Item 1: an attempt that raises (device cuda on a CPU host) leaves the cell's file holding its last good row,
    marked superseded with the error, and the job succeeds; going back to the good settings puts that row back
    without measuring; forcing the same settings again measures."""
    good_argv, failing_argv = _measure_argv(tmp_path), _measure_argv(tmp_path, device="cuda")
    assert cli.main(good_argv) == 0
    good = _cell_row(tmp_path)
    assert good["status"] == "ok" and not good.get("superseded_by_failure")

    assert cli.main(failing_argv) == 0
    kept = _cell_row(tmp_path)
    assert kept["status"] == "ok" and kept["superseded_by_failure"] is True and kept["valid"] is False
    assert kept["ttft_ms_samples"] == good["ttft_ms_samples"] and kept["spec_json"] == good["spec_json"]
    assert "torch sees no CUDA device" in kept["failed_attempt_error"]
    assert json.loads(kept["failed_attempt_spec_json"])["measurement"]["device"] == "cuda"
    assert any(reason.startswith("superseded: the attempt of") for reason in kept["invalid_reasons"])
    attempts = archive.history(tmp_path / "archive", good["cell_id"])
    assert [row["status"] for row in attempts] == ["ok", "failed"]  # the attempt's own row is archived

    assert cli.main(good_argv) == 0  # reverted: the last good row comes back, nothing measured
    restored = _cell_row(tmp_path)
    assert (restored["started_at"], restored["ttft_ms_samples"]) == (good["started_at"], good["ttft_ms_samples"])
    assert restored["valid"] == good["valid"] and not restored.get("superseded_by_failure")

    assert cli.main(good_argv) == 0  # the same settings forced again: measured anew
    again = _cell_row(tmp_path)
    assert again["status"] == "ok" and again["ttft_ms_samples"] != good["ttft_ms_samples"]


@no_gpu
def test_a_failed_attempt_without_a_good_row_still_fails_the_job(tmp_path):
    """Item 1: with nothing to keep, an unexpected error fails the job as before (and is archived)."""
    with pytest.raises(RuntimeError, match="torch sees no CUDA device"):
        cli.main(_measure_argv(tmp_path, device="cuda"))
    assert not (tmp_path / "cell.parquet").exists()
    assert [
        row["status"] for row in archive.history(tmp_path / "archive", "tiny-qwen3/eager-bfloat16/c16-g2-b1-greedy")
    ] == ["failed"]


def test_a_killed_measuring_process_keeps_the_last_good_row(tmp_path):
    """Item 1: the warm server's child killed by a signal (the OOM killer) -> the last good row, marked."""
    argv = _measure_argv(tmp_path)
    cell = cli.cell_from_args(cli._parser().parse_args(argv))
    good = archive.crash_row(cell, "", "2026-01-01T00:00:00+00:00") | {
        "status": "ok",
        "failure_kind": None,
        "error": None,
        "valid": True,
        "invalid_reasons": [],
        "ttft_ms": 12.5,
    }
    assert cli.after_killed(argv, -9) == -9  # no good row yet: the job fails
    archive.archive_row(good, tmp_path / "archive", when="2026-01-01T00:00:01+00:00")
    assert cli.after_killed(argv, -9) == 0
    kept = _cell_row(tmp_path)
    assert kept["ttft_ms"] == 12.5 and kept["superseded_by_failure"] and "SIGKILL" in kept["failed_attempt_error"]


def test_archive_entries_of_one_second_never_overwrite_each_other(tmp_path):
    """Item 1: two attempts stamped in the same second are both kept, in order."""
    argv = _measure_argv(tmp_path)
    cell = cli.cell_from_args(cli._parser().parse_args(argv))
    first = archive.crash_row(cell, "first", "2026-01-01T00:00:00+00:00")
    second = archive.crash_row(cell, "second", "2026-01-01T00:00:00+00:00")
    archive.archive_row(first, tmp_path)
    archive.archive_row(second, tmp_path)
    assert [row["error"] for row in archive.history(tmp_path, cell.cell_id)] == ["first", "second"]


# ------------------------------------------------------------------ item 4: out of memory on any device is oom


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: can't allocate memory: you tried to "
            "allocate 1099511627776 bytes. Error code 12 (Cannot allocate memory)"
        ),
        RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB, other allocations: 1.00 GB)"),
        RuntimeError("XPU out of memory. Tried to allocate 2.00 GiB"),
        MemoryError(),
        torch.OutOfMemoryError("CUDA out of memory"),
    ],
)
def test_out_of_memory_on_any_device_is_oom(error):
    """Item 4: CPU (DefaultCPUAllocator), MPS, XPU and Python's MemoryError are oom rows, not crashes."""
    assert failures.classify(error) is FailureKind.OOM


def test_the_batch_estimate_on_cpu_is_judged_against_host_memory():
    """Item 4: on CPU the free memory of the batch check is the host's, so an absurd batch is refused before
    loading (it raised nothing on CPU before: the check ran on CUDA only)."""
    free = capacity.free_bytes("cpu")
    assert free is not None and 0 < free
    estimate = capacity.BatchEstimate(free, weights_bytes=10**6, kv_bytes_per_seq=10**4, activation_bytes_per_seq=0)
    with pytest.raises(capacity.PredictedOutOfMemoryError) as caught:
        capacity.check_batch_fits(10 * free // 10**4, estimate)
    assert failures.classify(caught.value) is FailureKind.OOM


def test_ulimit_v_bounds_the_host_memory_a_check_counts():
    """Item 4 (and 6): under ulimit -v the free host memory is what the address space still allows."""
    code = "from deploybench.analytic import capacity; print(capacity.free_bytes('cpu'))"
    limit = 6 * 10**9
    free = subprocess.run(
        ["prlimit", f"--as={limit}", sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert 0 < int(free.stdout) < limit


# ------------------------------------------------------------------ item 5: a model that cannot be built


def _card(tmp_path, name: str, **changes) -> str:
    card = json.loads(LLAMA.read_text()) | changes
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(card))
    return str(path)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"model_type": "lama"}, "unknown model_type 'lama' (transformers"),
        ({"hidden_size": 66}, "not a multiple of the number of attention heads"),
        ({"num_key_value_heads": 3}, "num_attention_heads (4) is not a multiple of num_key_value_heads (3)"),
    ],
)
def test_a_model_that_cannot_be_built_is_one_line_naming_it(tmp_path, changes, expected):
    """Item 5: the config instantiated (no weights) refuses the model in one readable line naming its key."""
    config = json.loads(json.dumps(SMALL_CONFIG))
    config["models"]["m-llama"]["architecture"] = _card(tmp_path, "bad", **changes)
    with pytest.raises(ConfigError) as caught:
        model_check.check_models(validate_config(config))
    message = str(caught.value)
    assert message.startswith("config.models.m-llama.architecture: card ") and expected in message
    assert "\n" not in message and len(message) < 400, message


def test_buildable_models_give_their_parameter_count_and_are_cached(tmp_path, monkeypatch):
    """Item 5: the check counts parameters on the meta device and keeps its verdict by content."""
    cache = tmp_path / "checks.json"
    counts = model_check.check_models(validate_config(SMALL_CONFIG), cache)
    assert set(counts) == {"m-qwen3", "m-llama"} and all(n > 0 for n in counts.values())
    monkeypatch.setattr(model_check, "total_params", lambda entry: pytest.fail("checked again"))
    assert model_check.check_models(validate_config(SMALL_CONFIG), cache) == counts


@pytest.mark.parametrize(
    ("text", "why"), [("{ not json", "is not valid JSON"), ('{"hidden_size": 64}', "no model_type")]
)
def test_a_pretrained_directory_whose_config_json_is_broken_is_refused(tmp_path, text, why):
    """Item 5: a local checkpoint's config.json that is not JSON or has no model_type, by the config validator."""
    (tmp_path / "config.json").write_text(text)
    config = json.loads(json.dumps(SMALL_CONFIG))
    config["models"]["m-llama"] = {"source": "pretrained", "id": str(tmp_path)}
    with pytest.raises(ConfigError, match=f"^config.models.m-llama.id: card .*{why}"):
        validate_config(config)


# ------------------------------------------------------------------ item 6: config files, logs, warm limits


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("measurement:\n\tn_runs: 3\n", r":2:1: not valid YAML: .*a tab: YAML indents with spaces only"),
        ("", r":1: the file is empty"),
        ("- a\n- b\n", r":1: a config file is a mapping of keys, this one holds a list"),
    ],
)
def test_a_config_file_that_is_not_a_mapping_is_named_with_its_line(tmp_path, text, expected):
    """Item 6: YAML with tabs, an empty file, a list: the error names the file and the line."""
    path = tmp_path / "overlay.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"^{path}{expected}"):
        load_yaml_file(path)


def test_an_overlay_that_empties_a_mapping_is_refused(tmp_path):
    """Item 6: `studies: {}` in an overlay would keep every study (Snakemake merges key by key): refused."""
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("measurement:\n  n_runs: 3\nstudies: {}\n")
    with pytest.raises(ConfigError, match=rf"^{overlay}:3: config\.studies: {{}} changes nothing"):
        check_overlays([ROOT / "config.yaml"], [overlay])
    check_overlays([ROOT / "config.yaml"], [overlay], replace=True)  # --replace-workflow-config: it does empty it


def test_check_config_names_file_and_line_of_an_overlay(tmp_path, capsys):
    """Item 6: Snakemake reads --configfile overlays before the workflow; check-config names where they break."""
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("measurement:\n\tn_runs: 3\n")
    assert cli.main(["check-config", str(ROOT / "config.yaml"), str(overlay)]) == 1
    assert f"{overlay}:2:1: not valid YAML" in capsys.readouterr().err
    assert cli.main(["check-config", str(ROOT / "config.yaml")]) == 0


def test_a_rule_log_holds_the_error_and_its_traceback(tmp_path):
    """Item 6: consolidate, correct_tpot and ape write their logs, the error included."""
    log_path = tmp_path / "logs/consolidate.log"
    with pytest.raises(ValueError), rule_log(log_path, "consolidate") as log:
        log.info("3 cell files")
        raise ValueError("results/cells/x.parquet: not a readable Parquet file")
    text = log_path.read_text()
    assert "3 cell files" in text and "not a readable Parquet file" in text and "Traceback" in text


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to narrow the affinity")
@pytest.mark.parametrize("limit", [["taskset", "-c", "0"], ["prlimit", "--as=8000000000"], ["nice", "-n", "5"]])
def test_a_client_under_other_limits_gets_its_own_warm_server(limit):
    """Item 6: the warm server is named by its limits (affinity, rlimits, nice), so a measuring process always
    forks from a server started under its client's limits."""
    code = "from deploybench.measure import warm; print(warm.socket_path())"
    env = {k: v for k, v in os.environ.items() if k != "DEPLOYBENCH_WARM_SOCKET"}
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    limited = subprocess.run([*limit, sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert plain.stdout != limited.stdout
