"""A bad config stops Snakemake before any job runs, with a message naming the key."""

from __future__ import annotations

import copy
import json

import pytest

from .conftest import SMALL_CONFIG, copy_workflow

pytestmark = pytest.mark.workflow


def _without(config, *path):
    node = config
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return config


def _set(config, value, *path):
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return config


BAD_CONFIGS = {
    # name: (mutation, text the error must contain)
    "undefined model in a study": (lambda c: _set(c, ["m-qwen3", "nope"], "studies", "main", "models"), "'nope'"),
    "undefined decoding mode": (lambda c: _set(c, ["greedy", "beam"], "studies", "main", "decoding"), "'beam'"),
    "unknown study axis": (lambda c: _set(c, [1, 2], "studies", "main", "batch_sizes"), "batch_sizes"),
    "context below 1": (lambda c: _set(c, [0, 32], "studies", "main", "contexts"), "contexts"),
    "gen below 1": (lambda c: _set(c, [0], "studies", "main", "gen"), "gen"),
    "unknown dtype": (lambda c: _set(c, ["bfloat8"], "studies", "main", "dtypes"), "dtypes"),
    "missing architecture card": (
        lambda c: _set(c, "workflow/architectures/missing.json", "models", "m-llama", "architecture"),
        "missing.json",
    ),
    "random model without card": (lambda c: _without(c, "models", "m-llama", "architecture"), "architecture"),
    "missing local model directory": (
        lambda c: _set(c, {"source": "pretrained", "id": "./no/such/model"}, "models", "m-llama"),
        "./no/such/model",
    ),
    "unknown model source": (lambda c: _set(c, "torrent", "models", "m-llama", "source"), "source"),
    "unknown decoding parameter": (lambda c: _set(c, 4, "decoding", "greedy", "num_beams"), "num_beams"),
    "top_p above 1": (lambda c: _set(c, {"do_sample": True, "top_p": 1.5}, "decoding", "greedy"), "top_p"),
    "unknown top-level key": (lambda c: _set(c, {}, "modles"), "modles"),
    "baseline not a model": (lambda c: _set(c, "gpt-5", "analysis", "baseline_model"), "baseline_model"),
    "n_runs zero": (lambda c: _set(c, 0, "measurement", "n_runs"), "n_runs"),
    "bad model name": (lambda c: _set(c, {"source": "random"}, "models", "bad/name"), "bad/name"),
}


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("bad") / "wf")


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_bad_config_stops_before_any_job(workflow, name):
    mutate, expected = BAD_CONFIGS[name]
    workflow.write_config(mutate(copy.deepcopy(SMALL_CONFIG)))
    proc = workflow.snakemake(check=False, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-2000:]
    assert expected in output, output[-2000:]
    assert "ConfigError" in output or "config" in output.lower()
    assert not (workflow.root / "results").exists(), "no job may run"


def test_duplicate_model_name_is_refused(workflow):
    text = json.dumps(SMALL_CONFIG)  # JSON is YAML: add the same key twice by hand
    entry = '"m-llama": {"source": "random", "architecture": "workflow/architectures/tiny-llama.json"}'
    workflow.config_path.write_text(text.replace('"models": {', '"models": {' + entry + ", ", 1))
    proc = workflow.snakemake(check=False, timeout=120)
    assert proc.returncode != 0
    assert "duplicate key 'm-llama'" in proc.stdout + proc.stderr
