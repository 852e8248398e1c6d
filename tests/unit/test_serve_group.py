"""The serve job's bookkeeping without a real engine: which load points it skips, what a job with nothing left
does (no lease, no server), and a missing engine as failed rows of exactly the points left."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from deploybench import HARNESS_VERSION
from deploybench.enums import FailureKind
from deploybench.measure import serve_group
from deploybench.measure.serve_group import measured_row, run, serving_cells
from deploybench.plan import naming
from deploybench.plan.config import validate_config
from deploybench.plan.serving import parse_serve_job, serve_groups, serve_params
from deploybench.results.schema import read_rows, write_row
from tests.unit.test_serving_config import config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def job(tmp_path, monkeypatch):
    """The vLLM group of a serving config (two load points), in a fresh workflow folder."""
    (tmp_path / "workflow").symlink_to(REPO / "workflow")  # the cards, at the paths the config names
    monkeypatch.chdir(tmp_path)
    c = config() | {"serving": {"vllm": {"python": str(tmp_path / "no-engine/bin/python")}}}
    settings = validate_config(c)
    ((group, points),) = serve_groups(settings).items()
    return parse_serve_job(serve_params(settings, group, points), HARNESS_VERSION)


def good_row(spec, **changes) -> dict:
    row = {
        "cell_id": spec.cell_id,
        "spec_json": spec.spec_json(),
        "harness_version": HARNESS_VERSION,
        "status": "ok",
        "valid": True,
        "started_at": "2026-12-07T00:00:00+00:00",
    }
    return row | changes


def test_a_point_is_kept_only_for_a_good_row_of_exactly_its_settings(job, tmp_path):
    spec = job.points[0]
    path = tmp_path / naming.cell_path(spec.cell_id)
    assert measured_row(path, spec) is None  # no file
    write_row(good_row(spec), path)
    assert measured_row(path, spec)["status"] == "ok"
    for changes in (
        {"spec_json": job.points[1].spec_json()},  # other settings
        {"harness_version": "0"},
        {"status": "failed", "failure_kind": "server_start"},  # a failed point is measured again
        {"superseded_by_failure": True},
    ):
        write_row(good_row(spec, **changes), path)
        assert measured_row(path, spec) is None, changes
    path.write_bytes(b"PAR1 torn")
    assert measured_row(path, spec) is None


def test_a_job_with_every_point_measured_starts_nothing(job, monkeypatch):
    def no_lease(*args, **kwargs):
        raise AssertionError("nothing to measure: no GPU lease, no server")

    monkeypatch.setattr("deploybench.measure.gpu_lease.lease_gpu", no_lease)
    for spec in job.points:
        write_row(good_row(spec), naming.cell_path(spec.cell_id))
    content = run(job, "results/serving/marker.json", archive_dir=None)
    assert content["measured"] == [] and content["server_starts"] == 0
    assert content["kept"] == [p.cell_id for p in job.points]
    assert json.loads(open("results/serving/marker.json").read()) == content
    assert serving_cells(["results/serving/marker.json"]) == [naming.cell_path(p.cell_id) for p in job.points]


def test_a_missing_engine_fails_exactly_the_points_left(job, monkeypatch):
    kept, left = job.points
    write_row(good_row(kept), naming.cell_path(kept.cell_id))
    content = run(job, "results/serving/marker.json", archive_dir="results/archive")
    assert content["kept"] == [kept.cell_id] and content["measured"] == [left.cell_id]
    assert content["server_starts"] == 0
    (row,) = read_rows(naming.cell_path(left.cell_id))
    assert row["status"] == "failed" and row["failure_kind"] == FailureKind.ENGINE_NOT_FOUND
    assert "no-engine/bin/python" in row["error"] and "does not exist" in row["error"]
    assert row["spec_json"] == left.spec_json() and row["load_concurrency"] is None  # never measured
    assert read_rows(naming.cell_path(kept.cell_id))[0]["status"] == "ok"  # untouched
    # The failed point is retried by the next run of the job (which Snakemake starts when the params change).
    assert measured_row(naming.cell_path(left.cell_id), left) is None


def test_a_deleted_point_file_is_named_with_the_command_that_remeasures_it(job):
    for spec in job.points:
        write_row(good_row(spec), naming.cell_path(spec.cell_id))
    run(job, "results/serving/marker.json", archive_dir=None)
    gone = naming.cell_path(job.points[1].cell_id)
    os.remove(gone)
    with pytest.raises(FileNotFoundError, match=f"{gone}: .*snakemake --forcerun results/serving/marker.json"):
        serving_cells(["results/serving/marker.json"])


def test_sigterm_becomes_system_exit():
    with pytest.raises(SystemExit) as caught, serve_group.sigterm_exits():
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs in this thread before the next bytecode
    assert caught.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is not None


@pytest.fixture
def endpoint():
    """The scripted OpenAI-compatible server, on a loop of its own thread (the serve job runs its own loop)."""
    import asyncio
    import threading

    from tests.fixtures.fake_openai_server import FakeOpenAIServer, tokens_script

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = FakeOpenAIServer(lambda i, body: tokens_script([1] * body["max_tokens"]))
    asyncio.run_coroutine_threadsafe(server.__aenter__(), loop).result(10)
    yield server
    asyncio.run_coroutine_threadsafe(server.__aexit__(None, None, None), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_an_openai_endpoint_is_loaded_not_started(tmp_path, monkeypatch, endpoint):
    from deploybench.engines.serving.tiny_model import write_tiny_model

    monkeypatch.chdir(tmp_path)
    write_tiny_model(tmp_path / "served")  # a pretrained entry's directory: its config and its tokenizer
    c = config(backends=["openai"]) | {
        "serving": {"openai": {"url": endpoint.url, "started_by": "a scripted server", "token_id_prompts": True}}
    }
    c["models"] = {"m-serve": {"source": "pretrained", "id": "./served"}}
    c["studies"] = {"load": c["studies"]["load"]}
    c["analysis"] = {}
    settings = validate_config(c)
    ((group, points),) = serve_groups(settings).items()
    job = parse_serve_job(serve_params(settings, group, points), HARNESS_VERSION)
    assert job.startup_timeout_s is None
    content = run(job, "results/serving/marker.json", archive_dir=None)
    assert content["server_starts"] == 0 and len(content["measured"]) == 2
    for spec in job.points:
        (row,) = read_rows(naming.cell_path(spec.cell_id))
        assert row["status"] == "ok", row["error"]
        assert (row["engine_name"], row["engine_url"], row["engine_started_by"]) == (
            "openai",
            endpoint.url,
            "a scripted server",
        )
        n = row["load_n_requests"]
        assert row["client_output_tokens"] == row["server_output_tokens"] == 8 * n and row["tokens_reconciled"]
        assert row["prompt_mode"] == "random_ids" and row["context_tokens_measured"] == 32
        assert row["energy_source"].startswith("unavailable: an openai endpoint")
    assert {body["model"] for body in endpoint.bodies} == {"./served"}
    assert not any("ignore_eos" in body for body in endpoint.bodies)  # not declared accepted
