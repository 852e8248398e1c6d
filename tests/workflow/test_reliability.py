"""Issue 21 with real Snakemake on the tiny models: nothing measured is lost, nothing stale is shown.

Each test names the item of the issue it covers. The pure-Python halves: tests/unit/test_reliability.py,
tests/unit/test_machine.py and tests/unit/test_importer.py.
"""

from __future__ import annotations

import copy
import html
import json
import os
import shutil

import pandas as pd
import pytest
import yaml

from deploybench.instruments import nvml

from .conftest import REPO, SMALL_CONFIG, copy_workflow

pytestmark = pytest.mark.workflow

no_gpu = pytest.mark.skipif(
    nvml.device_count() > 0, reason="needs a host without a GPU (measurement.device cuda fails)"
)
# A bound on the address space of Snakemake and everything it starts: a test that asks for too much memory then
# fails to allocate instead of pushing a shared host into swap (and the old code's attempts fail the same way).
ULIMIT_V = ("prlimit", f"--as={8 * 10**9}")


def _table(wf, name="consolidated") -> pd.DataFrame:
    return pd.read_parquet(wf.root / f"results/{name}.parquet").set_index("cell_id")


def _output(proc) -> str:
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    """One copy for the configs refused before any job (nothing runs, so they can share it)."""
    return copy_workflow(tmp_path_factory.mktemp("refused") / "wf")


def _refused(wf, config, *args, prefix=()) -> str:
    shutil.rmtree(wf.root / "results", ignore_errors=True)
    if config is not None:
        wf.write_config(config)
    proc = wf.snakemake(*args, check=False, timeout=300, prefix=prefix)
    assert proc.returncode != 0, _output(proc)[-3000:]
    assert not (wf.root / "results").exists(), "no job may run"
    return _output(proc)


# ------------------------------------------------------------------ item 1


@no_gpu
def test_a_failed_rerun_keeps_the_last_good_rows_and_reverting_measures_nothing(small_workflow):
    """Item 1: a setting every measure job rejects (measurement.device: cuda on a host without a GPU; run with
    --no-hooks so the machine check of item 2 does not stop it first) reruns every cell and every attempt fails:
    the cells keep their last good rows, shown in the consolidated table and the report as superseded by the
    failed attempt with its error; reverting the setting measures nothing and brings the rows back as they were."""
    wf = small_workflow
    wf.snakemake()
    before = _table(wf)
    config = wf.read_config()
    config["measurement"]["device"] = "cuda"
    wf.write_config(config)
    wf.snakemake("--no-hooks")

    assert len(wf.cell_files()) == 4, "a failed rerun must not delete a cell's file"
    after = _table(wf)
    for cell, good in before.iterrows():
        row = after.loc[cell]
        assert row.ttft_ms == good.ttft_ms and row.started_at == good.started_at, cell
        assert row.superseded_by_failure and not row.valid
        assert "torch sees no CUDA device" in row.failed_attempt_error
        assert json.loads(row.failed_attempt_spec_json)["measurement"]["device"] == "cuda"
    page = html.unescape((wf.root / "report/report.html").read_text())
    assert "superseded: the attempt of" in page and "torch sees no CUDA device" in page

    wf.write_config(SMALL_CONFIG)  # the setting reverted
    wf.snakemake()
    restored = _table(wf)
    assert (restored.started_at == before.started_at).all() and (restored.ttft_ms == before.ttft_ms).all()
    assert restored.superseded_by_failure.isna().all() and restored.valid.all()
    logs = sorted((wf.root / "logs/measure").rglob("*.log"))
    assert len(logs) == 4 and all("nothing measured" in log.read_text() for log in logs)
    assert "Nothing to be done" in _output(wf.snakemake("-n"))


# ------------------------------------------------------------------ item 2


@no_gpu
def test_cuda_on_a_host_without_a_gpu_is_refused_before_any_job(workflow):
    """Item 2: measurement.device: cuda where there is no GPU stops the run before the first job, naming the key
    (it used to rerun every cell, each failing)."""
    config = copy.deepcopy(SMALL_CONFIG)
    config["measurement"]["device"] = "cuda"
    output = _refused(workflow, config)
    assert "config.measurement.device: cuda, but this host has no GPU for the jobs" in output


def test_weights_that_cannot_fit_host_memory_are_refused_before_any_job(workflow):
    """Item 2: a model whose weights alone (parameters x dtype bytes) cannot fit the memory a job may use here
    (under ulimit -v 8 GB) is refused before any job, naming the model."""
    config = copy.deepcopy(SMALL_CONFIG)
    config["measurement"]["device"] = "cpu"
    config["models"]["m-big"] = {"source": "random", "architecture": "workflow/architectures/yi-34b.json"}
    config["studies"]["main"]["models"] = ["m-big"]
    config["analysis"]["baseline_model"] = "m-big"
    output = _refused(workflow, config, prefix=ULIMIT_V)
    assert "config.models.m-big: the weights alone (68.8 GB: 34.39 B parameters in bfloat16) cannot fit" in output


# ------------------------------------------------------------------ item 3


def test_an_edited_external_table_reruns_consolidation_and_a_truncated_one_is_refused(small_workflow):
    """Item 3: editing a CSV of an analysis.external_tables folder reruns consolidation and everything after it
    (it said "Nothing to be done"); a CSV whose last line was cut is refused naming the file, line and column
    (it imported a wrong figure silently)."""
    wf = small_workflow
    shutil.copytree(REPO / "reference/arxiv-2508.16700/latency", wf.root / "ext/latency")
    config = copy.deepcopy(SMALL_CONFIG)
    models = {"openai/gpt-oss-20b": "gpt-oss-20b", "Qwen/Qwen3-32B": "qwen3-32b", "01-ai/Yi-34B": "yi-34b"}
    config["analysis"]["external_tables"] = [
        {"name": "study", "format": "arxiv_2508_16700", "path": "ext", "model_map": models}
    ]
    wf.write_config(config)
    wf.snakemake()
    cell = "qwen3-32b/eager-bfloat16/c2048-g256-b1-greedy"
    assert _table(wf).loc[cell].e2e_ms_p50 == pytest.approx(9909.939646720886)

    csv = wf.root / "ext/latency/latency_qwen3-32b_universal.csv"
    csv.write_text(csv.read_text().replace("9909.939646720886", "9999.5"))
    output = _output(wf.snakemake())
    assert "Job stats:" in output, "an edited external table must rerun consolidation: " + output[-500:]
    ran = output.split("Job stats:")[1].split("\n\n")[0]
    assert all(rule in ran for rule in ("consolidate", "correct_tpot", "ape", "report")) and "measure" not in ran
    assert _table(wf).loc[cell].e2e_ms_p50 == 9999.5
    assert _table(wf, "ape").loc[cell].e2e_ms_p50 == 9999.5

    text = csv.read_text()
    csv.write_text(text[: text.rindex("9999.5") + len("9999")])  # the last line cut mid-number
    output = _output(wf.snakemake(check=False))
    expected = "ext/latency/latency_qwen3-32b_universal.csv: line 13, column 'p50_ms': 6 fields where the header has 9"
    assert expected in output
    assert expected in (wf.root / "logs/consolidate.log").read_text()


# ------------------------------------------------------------------ item 4


def test_an_absurd_batch_on_cpu_is_an_oom_row_refused_before_loading(small_workflow):
    """Item 4: on CPU a batch whose estimate cannot fit the host's memory is refused before loading, as on CUDA,
    and becomes an oom row (it was attempted and crashed with DefaultCPUAllocator: no row, the job failed)."""
    wf = small_workflow
    config = copy.deepcopy(SMALL_CONFIG)
    config["models"] = {"m-llama": SMALL_CONFIG["models"]["m-llama"]}
    config["studies"] = {"main": {"kind": "batch_scaling", "models": ["m-llama"], "contexts": [16], "gen": [4]}}
    config["studies"]["main"]["batch"] = [1, 10**7]
    config["analysis"] = {"baseline_model": "m-llama", "reference_cell": {"context": 16, "gen": 4}}
    wf.write_config(config)
    wf.snakemake(prefix=ULIMIT_V)
    rows = _table(wf)
    absurd = rows.loc["m-llama/eager-bfloat16/c16-g4-b10000000-greedy"]
    assert absurd.status == "failed" and absurd.failure_kind == "oom"
    assert "predicted out of memory, not attempted: batch 10000000" in absurd.error
    assert rows.loc["m-llama/eager-bfloat16/c16-g4-b1-greedy"].status == "ok"


# ------------------------------------------------------------------ item 5


def _card(wf, **changes) -> str:
    card = json.loads((wf.root / "workflow/architectures/tiny-llama.json").read_text()) | changes
    path = wf.root / "cards" / "bad.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(card))
    return "cards/bad.json"


def _pretrained(wf, text: str) -> str:
    folder = wf.root / "checkpoint"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(text)
    return "./checkpoint"


UNBUILDABLE = {
    "unknown model_type": (
        lambda wf: {"source": "random", "architecture": _card(wf, model_type="lama")},
        "config.models.m-llama.architecture: card 'cards/bad.json': unknown model_type 'lama'",
    ),
    "hidden size not a multiple of the heads": (
        lambda wf: {"source": "random", "architecture": _card(wf, hidden_size=66)},
        "The hidden size (66) is not a multiple of the number of attention heads (4)",
    ),
    "heads not a multiple of the KV heads": (
        lambda wf: {"source": "random", "architecture": _card(wf, num_key_value_heads=3)},
        "num_attention_heads (4) is not a multiple of num_key_value_heads (3)",
    ),
    "pretrained config.json broken": (
        lambda wf: {"source": "pretrained", "id": _pretrained(wf, '{"model_type": "llama", ')},
        "config.models.m-llama.id: card 'checkpoint/config.json' is not valid JSON",
    ),
    "pretrained config.json without model_type": (
        lambda wf: {"source": "pretrained", "id": _pretrained(wf, '{"hidden_size": 64}')},
        "config.models.m-llama.id: card 'checkpoint/config.json' has no model_type",
    ),
}


@pytest.mark.parametrize("name", sorted(UNBUILDABLE))
def test_a_model_that_cannot_be_built_is_refused_before_any_job_in_one_line(workflow, name):
    """Item 5: a model transformers cannot build is refused before any job by instantiating its config (no
    weights), naming the model and the problem in one readable line (it failed every cell at run time, then
    blocked consolidation and the report; an unknown model_type gave a line of about 10,000 characters)."""
    entry, expected = UNBUILDABLE[name]
    config = copy.deepcopy(SMALL_CONFIG)
    config["models"]["m-llama"] = entry(workflow)
    output = _refused(workflow, config)
    lines = [line for line in output.splitlines() if expected in line]
    assert lines and all(line.startswith("config.models.m-llama.") and len(line) < 400 for line in lines), lines
    assert max(map(len, output.splitlines())) < 1000


# ------------------------------------------------------------------ item 6


def test_a_deleted_table_is_made_again_logs_are_written_and_a_truncated_cell_names_its_remeasure(small_workflow):
    """Item 6: consolidate, correct_tpot and ape write their logs; deleting results/consolidated.parquet is
    repaired by the next run; a truncated cell Parquet stops consolidation naming the file and the command that
    remeasures it, and that command does."""
    wf = small_workflow
    wf.snakemake()
    for rule in ("consolidate", "correct_tpot", "ape"):
        assert "-> results/" in (wf.root / f"logs/{rule}.log").read_text(), rule

    (wf.root / "results/consolidated.parquet").unlink()
    wf.snakemake()
    assert (wf.root / "results/consolidated.parquet").exists()

    cell = "results/cells/m-llama/eager-bfloat16/c16-g4-b1-greedy.parquet"
    (wf.root / cell).write_bytes((wf.root / cell).read_bytes()[:200])  # cut short, as by a full disk
    output = _output(wf.snakemake(check=False))
    command = f"snakemake --forcerun {cell}"
    assert f"{cell}: not a readable Parquet file" in output and command in output
    assert command in (wf.root / "logs/consolidate.log").read_text()
    wf.snakemake(*command.split()[1:])
    assert len(_table(wf)) == 4


def test_config_files_are_named_with_their_line_and_an_emptying_overlay_is_refused(workflow):
    """Item 6: config.yaml with a tab or empty names the file and the line (it pointed at the Snakefile); an
    overlay with `studies: {}` is refused (it was silently ignored)."""
    text = yaml.safe_dump(SMALL_CONFIG, sort_keys=False)
    workflow.config_path.write_text(text.replace("\n  warmup_runs", "\n\twarmup_runs", 1))
    output = _refused(workflow, None)
    assert "config.yaml:2:1: not valid YAML" in output and "a tab: YAML indents with spaces only" in output
    workflow.config_path.write_text("")
    assert "config.yaml:1: the file is empty" in _refused(workflow, None)
    workflow.write_config(SMALL_CONFIG)
    (workflow.root / "overlay.yaml").write_text("measurement:\n  n_runs: 3\nstudies: {}\n")
    output = _refused(workflow, None, "-n", "--configfile", "overlay.yaml")
    assert "overlay.yaml:3: config.studies: {} changes nothing" in output


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to narrow the affinity")
def test_the_measuring_process_gets_the_limits_snakemake_runs_under(small_workflow):
    """Item 6: under DEPLOYBENCH_WARM=1 a limit put on snakemake (here CPU affinity: taskset) reaches the process
    that measures, even when a warm server started without it is still up (it forked from that server)."""
    wf = small_workflow
    config = copy.deepcopy(SMALL_CONFIG)
    config["studies"]["main"] |= {"models": ["m-llama"], "contexts": [16]}
    wf.write_config(config)
    wf.snakemake()
    cell = "results/cells/m-llama/eager-bfloat16/c16-g4-b1-greedy.parquet"
    assert pd.read_parquet(wf.root / cell).cpu_count.iloc[0] == len(os.sched_getaffinity(0))
    wf.snakemake("--forcerun", cell, prefix=("taskset", "-c", "0"))
    assert pd.read_parquet(wf.root / cell).cpu_count.iloc[0] == 1
