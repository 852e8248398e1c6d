"""A bad config stops Snakemake before any job runs, with a message naming the key."""

from __future__ import annotations

import copy
import json

import pytest

from tests.fixtures.bad_configs import BAD_CONFIGS

from .conftest import SMALL_CONFIG, copy_workflow

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("bad") / "wf")


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_bad_config_stops_before_any_job(workflow, name):
    mutate, key, expected = BAD_CONFIGS[name]
    workflow.write_config(mutate(copy.deepcopy(SMALL_CONFIG)))
    proc = workflow.snakemake(check=False, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-2000:]
    assert expected in output, output[-2000:]
    assert f"{key}: " in output, output[-2000:]  # the validator's message, naming the key
    assert not (workflow.root / "results").exists(), "no job may run"


def test_duplicate_model_name_is_refused(workflow):
    text = json.dumps(SMALL_CONFIG)  # JSON is YAML: add the same key twice by hand
    entry = '"m-llama": {"source": "random", "architecture": "workflow/architectures/tiny-llama.json"}'
    workflow.config_path.write_text(text.replace('"models": {', '"models": {' + entry + ", ", 1))
    proc = workflow.snakemake(check=False, timeout=120)
    assert proc.returncode != 0
    assert "duplicate key 'm-llama'" in proc.stdout + proc.stderr
