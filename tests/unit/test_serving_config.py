"""Serving in the typed config: refusals name their key; load points, their ids, groups, the serve job's params."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from deploybench import HARNESS_VERSION
from deploybench.plan import naming
from deploybench.plan.config import ConfigError, all_cells, cell_params, load_config, validate_config
from deploybench.plan.serving import check_engines, load_points, parse_serve_job, serve_groups, serve_params
from deploybench.plan.spec import SpecError
from tests.fixtures.small_config import SMALL_CONFIG

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "workflow/schemas/config.schema.json").read_text())
CARD = "workflow/architectures/tiny-qwen3-serve.json"
LOAD = {
    "kind": "serving_load",
    "models": ["m-serve"],
    "backends": ["vllm"],
    "contexts": [32],
    "gen": [8],
    "concurrency": [1, 4],
    "n_requests": 12,
}


def config(**study) -> dict:
    """The small in-process config plus a serving model and a serving_load study (keys given replace LOAD's)."""
    c = copy.deepcopy(SMALL_CONFIG)
    c["models"]["m-serve"] = {"source": "random", "architecture": CARD}
    c["studies"]["load"] = {key: value for key, value in {**LOAD, **study}.items() if value is not None}
    return c


def refusal(c: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        validate_config(c)
    return str(caught.value)


def with_openai(c: dict, model_source: str = "pretrained") -> dict:
    c["studies"]["load"]["backends"] = ["openai"]
    if model_source == "pretrained":
        c["models"]["m-serve"] = {"source": "pretrained", "id": "some-org/some-model"}
    return c


REFUSALS = {
    # name: (config, the refusal's first line starts with this key, and holds this)
    "serving_load without serving backends": (
        config(backends=None),
        "config.studies.load.backends",
        "loads serving engines",
    ),
    "a serving backend in another study": (
        copy.deepcopy(SMALL_CONFIG) | {"studies": {"main": {**SMALL_CONFIG["studies"]["main"], "backends": ["vllm"]}}},
        "config.studies.main.backends",
        "'vllm' is a serving engine: measure it in a study of kind serving_load",
    ),
    "a load key in another study": (
        copy.deepcopy(SMALL_CONFIG) | {"studies": {"main": {**SMALL_CONFIG["studies"]["main"], "concurrency": [4]}}},
        "config.studies.main.concurrency",
        "only for kind serving_load",
    ),
    "no load point": (config(concurrency=None), "config.studies.load.concurrency", "needs load points"),
    "no length": (config(n_requests=None), "config.studies.load.n_requests", "n_requests and/or duration_s"),
    "too few requests for a steady window": (
        config(n_requests=8),
        "config.studies.load.n_requests",
        "8 requests at concurrency 4 leave no steady window",
    ),
    "burstiness without a rate": (config(burstiness=0.5), "config.studies.load.burstiness", "only with request_rate"),
    "a batch axis": (config(batch=[1, 4]), "config.studies.load.batch", "a serving request is one sequence"),
    "a rate below the id's precision": (config(request_rate=[0.0001]), "config.studies.load.request_rate[0]", ""),
    "an unknown SLO target": (
        config(slo={"ttft_ms_p42": 1}),
        "config.studies.load.slo.ttft_ms_p42",
        "not a valid name",
    ),
    "openai without its endpoint": (with_openai(config()), "config.serving.openai", "required by study 'load'"),
    "openai on random weights": (
        with_openai(config(), "random") | {"serving": {"openai": {"url": "http://127.0.0.1:1", "started_by": "me"}}},
        "config.studies.load.models",
        "has random weights",
    ),
    "an openai url that is not one": (
        with_openai(config()) | {"serving": {"openai": {"url": "localhost:8000", "started_by": "me"}}},
        "config.serving.openai.url",
        "",
    ),
    "an unknown engine key": (
        config() | {"serving": {"vllm": {"kv_cache": 1}}},
        "config.serving.vllm.kv_cache",
        "unknown key (known: python, args, env, startup_timeout_s, kv_cache_gib)",
    ),
}


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_serving_refusals_name_their_key(name):
    c, key, expected = REFUSALS[name]
    message = refusal(c)
    assert message.startswith(f"{key}: "), message
    assert expected in message


def test_a_load_point_in_two_studies_has_one_setting():
    c = config()
    c["studies"]["load2"] = {**LOAD, "concurrency": [4], "n_requests": 40}
    message = refusal(c)
    assert message.startswith("config.studies.load2.n_requests: load point m-serve/vllm-bfloat16/c32-g8-b1-greedy-cc4")
    assert "also in study 'load', with n_requests 12" in message
    c["studies"]["load2"]["n_requests"] = 12  # the same settings: one cell, measured once
    assert len(load_points(validate_config(c))) == 2


def test_load_points_ids_and_groups():
    c = config(backends=["vllm", "transformers_serve"], request_rate=[2.5, 10], burstiness=0.5, n_requests=40)
    settings = validate_config(c)
    groups = serve_groups(settings)
    assert [naming.SERVE_GROUP_ID.format(**g.__dict__) for g in groups] == [
        "m-serve/transformers_serve-bfloat16/c32-g8-greedy",
        "m-serve/vllm-bfloat16/c32-g8-greedy",
    ]
    ids = [p.cell_id for p in groups[next(iter(groups))]]
    assert ids == [
        "m-serve/transformers_serve-bfloat16/c32-g8-b1-greedy-cc1",
        "m-serve/transformers_serve-bfloat16/c32-g8-b1-greedy-cc4",
        "m-serve/transformers_serve-bfloat16/c32-g8-b1-greedy-r2.5-bu0.5",
        "m-serve/transformers_serve-bfloat16/c32-g8-b1-greedy-r10-bu0.5",
    ]
    # Serving cells are not the measure jobs' cells, and the in-process cells' ids and params are unchanged.
    assert all(cell.backend == "eager" for cell in all_cells(settings))
    plain = validate_config(copy.deepcopy(SMALL_CONFIG))
    assert {cell_params(plain, cell) for cell in all_cells(plain)} == {
        cell_params(settings, cell) for cell in all_cells(settings)
    }


def test_the_serve_params_change_exactly_with_a_point_or_an_engine_setting():
    def params(mutate=lambda c: c) -> dict[str, str]:
        settings = validate_config(mutate(config()))
        return {
            naming.SERVE_GROUP_ID.format(**g.__dict__): serve_params(settings, g, p)
            for g, p in serve_groups(settings).items()
        }

    def put(path, value):
        def mutate(c):
            node = c
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = value
            return c

        return mutate

    before = params()
    (text,) = before.values()
    job = parse_serve_job(text, HARNESS_VERSION)
    assert [p.cell_id for p in job.points] == [
        "m-serve/vllm-bfloat16/c32-g8-b1-greedy-cc1",
        "m-serve/vllm-bfloat16/c32-g8-b1-greedy-cc4",
    ]
    assert job.params_json() == text and job.startup_timeout_s == 600
    spec = job.points[0]
    assert set(json.loads(spec.spec_json())["measurement"]) == {
        "device", "seed", "min_energy_window_s", "idle_cooldown_s", "idle_cooldown_max_s", "idle_window_s"
    }  # fmt: skip
    # What a server does not read changes nothing: the generate() phases' settings, metadata, another study.
    assert params(put(("measurement", "max_measure_s"), 7)) == before
    assert params(put(("models", "m-serve", "metadata"), {"license": "x"})) == before
    assert params(put(("models", "m-serve", "attn_implementation"), "eager")) == before
    # The start-up timeout reruns the job (its failed points are retried) but is in no point's spec.
    timeout = parse_serve_job(next(iter(params(put(("serving", "vllm", "startup_timeout_s"), 60)).values())), "3")
    assert [p.spec_json() for p in timeout.points] == [p.spec_json() for p in job.points]
    # An engine setting changes every point's spec; a load point adds one.
    kv = parse_serve_job(next(iter(params(put(("serving", "vllm", "kv_cache_gib"), 2)).values())), "3")
    assert all(a.spec_json() != b.spec_json() for a, b in zip(kv.points, job.points))
    added = parse_serve_job(next(iter(params(put(("studies", "load", "concurrency"), [1, 2, 4])).values())), "3")
    assert [p.spec_json() for p in added.points if not p.cell_id.endswith("-cc2")] == [
        p.spec_json() for p in job.points
    ]
    with pytest.raises(SpecError, match="harness_version"):
        parse_serve_job(text, "0")


def test_check_engines_names_the_key(tmp_path):
    c = config(backends=["vllm"]) | {"serving": {"vllm": {"python": str(tmp_path / "no/bin/python")}}}
    settings = validate_config(c)
    with pytest.raises(
        ConfigError, match=r"^config\.serving\.vllm\.python: '.*no/bin/python' does not exist: `make engine-vllm`"
    ):
        check_engines(settings, ["vllm"])
    check_engines(settings, ["eager"])  # no serve job about to run: nothing to check
    check_engines(validate_config(config() | {"serving": {"vllm": {"python": "python3"}}}), ["vllm"])  # on PATH


def test_the_serving_configs_pass_the_validator_and_the_schema():
    tiny = load_config(REPO / "config/serving-tiny.yaml")
    assert len(load_points(tiny)) == 5 and len(serve_groups(tiny)) == 2 and not all_cells(tiny)
    jsonschema.Draft202012Validator(SCHEMA).validate(yaml.safe_load((REPO / "config/serving-tiny.yaml").read_text()))
    full = load_config(*(REPO / f for f in ("config.yaml", "config/full-size.yaml", "config/serving-full.yaml")))
    assert {p.cell_id.rsplit("-", 1)[1] for p in load_points(full)} == {"cc1", "cc4", "cc16", "cc64", "cc256"}
    assert len(serve_groups(full)) == 3 and full.studies["serving"].slo
