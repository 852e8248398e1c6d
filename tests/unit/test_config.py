"""The one config validator, its generated schema and the cells' params text, in pure Python."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from deploybench import HARNESS_VERSION
from deploybench.enums import Backend, DType, wildcard_regex
from deploybench.plan import naming
from deploybench.plan.config import (
    ConfigError,
    all_cells,
    cell_params,
    check_duplicate_keys,
    config_json_schema,
    load_config,
    validate_config,
)
from deploybench.plan.spec import canonical_json, parse_job
from tests.fixtures.bad_configs import BAD_CONFIGS, put, without
from tests.fixtures.small_config import SMALL_CONFIG
from tests.fixtures.study_cells import run_study_cells

REPO = Path(__file__).resolve().parents[2]
SCHEMA_FILE = REPO / "workflow/schemas/config.schema.json"
SHIPPED_CONFIGS = ("config.yaml", "config/full-size.yaml")
PARAMS_BEFORE = json.loads((REPO / "tests/fixtures/params_before_typed_spec.json").read_text())


def refusal(config) -> str:
    with pytest.raises(ConfigError) as caught:
        validate_config(config)
    return str(caught.value)


def small(mutate) -> dict:
    return mutate(copy.deepcopy(SMALL_CONFIG))


# ------------------------------------------------------------------ refusals, naming the key


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_every_refusal_of_the_workflow_test_names_its_key(name):
    mutate, key, expected = BAD_CONFIGS[name]
    message = refusal(small(mutate))
    assert message.startswith(f"{key}: "), message
    assert expected in message


MORE_BAD_CONFIGS = {
    # name: (mutation, the message's first line must match this)
    "text for a number": (
        lambda c: put(c, ["32"], "studies", "main", "contexts"),
        r"config\.studies\.main\.contexts\[0\]: Input should be a valid integer, got '32'",
    ),
    "a whole float for a count": (
        lambda c: put(c, [32.0], "studies", "main", "contexts"),
        r"config\.studies\.main\.contexts\[0\]: Input should be a valid integer",
    ),
    "bool for a count": (lambda c: put(c, True, "measurement", "n_runs"), r"config\.measurement\.n_runs: .*got True"),
    "text for seconds": (
        lambda c: put(c, "3", "measurement", "min_energy_window_s"),
        r"config\.measurement\.min_energy_window_s: Input should be a valid number",
    ),
    "unknown device": (lambda c: put(c, "tpu", "measurement", "device"), r"config\.measurement\.device: .*'tpu'"),
    "unknown model key": (
        lambda c: put(c, "sdpa", "models", "m-llama", "attn_implemention"),
        r"config\.models\.m-llama\.attn_implemention: unknown key \(known: source, architecture, id",
    ),
    "unknown metadata key": (
        lambda c: put(c, {"licence": "MIT"}, "models", "m-llama", "metadata"),
        r"config\.models\.m-llama\.metadata\.licence: unknown key",
    ),
    "null for a key that takes text": (
        lambda c: put(c, None, "models", "m-llama", "revision"),
        r"config\.models\.m-llama\.revision: Input should be a valid string, got None",
    ),
    "unknown experts implementation": (
        lambda c: put(c, "dense", "models", "m-llama", "experts_implementation"),
        r"config\.models\.m-llama\.experts_implementation: .*'grouped_mm'.*got 'dense'",
    ),
    "active params in billions": (
        lambda c: put(c, 3.6, "models", "m-llama", "active_params"),
        r"config\.models\.m-llama\.active_params: Input should be a valid integer",
    ),
    "trust_remote_code as text": (
        lambda c: put(c, "yes", "models", "m-llama", "trust_remote_code"),
        r"config\.models\.m-llama\.trust_remote_code: Input should be a valid boolean",
    ),
    "pretrained without id": (
        lambda c: put(c, {"source": "pretrained"}, "models", "m-llama"),
        r"config\.models\.m-llama\.id: required for source: pretrained",
    ),
    "sampling parameters without do_sample": (
        lambda c: put(c, {"temperature": 0.7}, "decoding", "greedy"),
        r"config\.decoding\.greedy\.do_sample: sampling parameters given but do_sample is false",
    ),
    "temperature zero": (
        lambda c: put(c, {"do_sample": True, "temperature": 0}, "decoding", "greedy"),
        r"config\.decoding\.greedy\.temperature: Input should be greater than 0",
    ),
    "top_k zero": (
        lambda c: put(c, {"do_sample": True, "top_k": 0}, "decoding", "greedy"),
        r"config\.decoding\.greedy\.top_k: Input should be greater than or equal to 1",
    ),
    "decoding name outside a path part": (
        lambda c: put(c, {"do_sample": False}, "decoding", "top-p"),
        r"config\.decoding\.top-p: not a valid name",
    ),
    "unknown study kind": (lambda c: put(c, "ablation", "studies", "main", "kind"), r"config\.studies\.main\.kind: "),
    "study without contexts": (
        lambda c: without(c, "studies", "main", "contexts"),
        r"config\.studies\.main\.contexts: required",
    ),
    "empty axis": (
        lambda c: put(c, [], "studies", "main", "backends"),
        r"config\.studies\.main\.backends: List should have at least 1 item",
    ),
    "no models": (lambda c: put(c, {}, "models"), r"config\.models: Dictionary should have at least 1 item"),
    "no studies": (lambda c: without(c, "studies"), r"config\.studies: required"),
    "unknown reference-cell key": (
        lambda c: put(c, 1, "analysis", "reference_cell", "batch"),
        r"config\.analysis\.reference_cell\.batch: unknown key \(known: context, gen, decoding, dtype, backend\)",
    ),
    "external table without path": (
        lambda c: put(c, [{"name": "x", "format": "arxiv_2508_16700"}], "analysis", "external_tables"),
        r"config\.analysis\.external_tables\[0\]\.path: required",
    ),
    "external table that is not there": (
        lambda c: put(
            c, [{"name": "x", "format": "arxiv_2508_16700", "path": "no/such"}], "analysis", "external_tables"
        ),
        r"config\.analysis\.external_tables\[0\]\.path: 'no/such' does not exist",
    ),
    "external table of an unknown format": (
        lambda c: put(c, [{"name": "x", "format": "csv", "path": "reference"}], "analysis", "external_tables"),
        r"config\.analysis\.external_tables\[0\]\.format: unknown format 'csv' \(known: arxiv_2508_16700\)",
    ),
}


@pytest.mark.parametrize("name", sorted(MORE_BAD_CONFIGS))
def test_more_refusals_name_their_key(name):
    mutate, first_line = MORE_BAD_CONFIGS[name]
    message = refusal(small(mutate))
    assert re.match(first_line, message.splitlines()[0]), message


@pytest.mark.parametrize("config", [None, [], "models: {}"])
def test_a_config_that_is_not_a_mapping_is_refused(config):
    assert refusal(config).startswith("config: Input should be a valid dictionary")


def test_every_problem_gets_a_line():
    message = refusal(small(lambda c: put(put(c, 0, "measurement", "n_runs"), -1, "measurement", "seed")))
    assert message.splitlines() == [
        "config.measurement.n_runs: Input should be greater than or equal to 1, got 0",
        "config.measurement.seed: Input should be greater than or equal to 0, got -1",
    ]


def test_architecture_card_that_is_not_json_or_has_no_model_type(tmp_path):
    broken, untyped = tmp_path / "broken.json", tmp_path / "untyped.json"
    broken.write_text("{ not json")
    untyped.write_text(json.dumps({"hidden_size": 64}))
    message = refusal(small(lambda c: put(c, str(broken), "models", "m-llama", "architecture")))
    assert message.startswith("config.models.m-llama.architecture: card ") and "is not valid JSON" in message
    message = refusal(small(lambda c: put(c, str(untyped), "models", "m-llama", "architecture")))
    assert message == f"config.models.m-llama.architecture: card {str(untyped)!r} has no model_type"


def test_local_model_directory_without_config_json(tmp_path):
    message = refusal(small(lambda c: put(c, {"source": "pretrained", "id": str(tmp_path)}, "models", "m-llama")))
    assert message == f"config.models.m-llama.id: local model directory {str(tmp_path)!r} has no config.json"


def test_duplicate_yaml_key_is_refused_with_its_line(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("models:\n  a: {source: random}\n  a: {source: pretrained}\n")
    with pytest.raises(ConfigError, match=r"config\.yaml: duplicate key 'a' at line 3"):
        check_duplicate_keys(path)


def test_the_typed_config_is_frozen():
    config = validate_config(copy.deepcopy(SMALL_CONFIG))
    with pytest.raises(ValueError, match="frozen"):
        config.measurement.n_runs = 3  # type: ignore[misc]


# ------------------------------------------------------------------ generated schema


def test_committed_schema_is_the_generated_one():
    """Regenerate with `python -m deploybench config-schema > workflow/schemas/config.schema.json`."""
    assert SCHEMA_FILE.read_text() == json.dumps(config_json_schema(), indent=2) + "\n"


@pytest.mark.parametrize("configfile", SHIPPED_CONFIGS)
def test_shipped_configs_pass_the_validator_and_the_generated_schema(configfile):
    load_config(REPO / configfile)
    raw = yaml.safe_load((REPO / configfile).read_text())
    jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text())).validate(raw)


# ------------------------------------------------------------------ cells and their params text


def _config(name: str):
    return validate_config(PARAMS_BEFORE["edge_config"]) if name == "edge" else load_config(REPO / name)


# Measurement settings added since the fixture was written (by the code before the typed spec), on purpose.
ADDED_MEASUREMENT_SETTINGS = ("idle_cooldown_max_s", "ci_target_rel", "max_measure_s", "max_runs")


def test_params_text_is_the_old_text_plus_only_the_card_hash():
    """No cell reruns because of the typed spec, beyond the card hash it adds (fixture from the old code).

    Checked on the fixture's own edge-case config: the shipped configs have changed since, on purpose.
    """
    config = _config("edge")
    # Cell paths gained the batch (b1) since, on purpose (schema 2.0).
    before = {re.sub(r"/(c\d+-g\d+)-", r"/\1-b1-", p): t for p, t in PARAMS_BEFORE["params"]["edge"].items()}
    params = {cell.path: cell_params(config, cell) for cell in all_cells(config)}
    assert set(params) == set(before)
    for path, text in params.items():
        job = json.loads(text)
        digests = job["cell"].pop("card_sha256", None)
        for key in ADDED_MEASUREMENT_SETTINGS:
            job["cell"]["measurement"].pop(key)
        assert job["cell"].pop("batch") == 1  # the batch axis, added since
        job["harness_version"] = json.loads(before[path])["harness_version"]  # bumped since, on purpose
        assert canonical_json(job) == before[path], path
        model = job["cell"]["model"]
        if model["source"] == "random":
            card = Path(model["architecture"])
            assert digests == {card.name: hashlib.sha256(card.read_bytes()).hexdigest()}
        else:
            assert digests is None, "a hub id has no local card to hash"


def test_params_parse_back_into_the_same_cell_spec():
    config = load_config(REPO / "config.yaml")
    for cell in all_cells(config):
        text = cell_params(config, cell)
        spec = parse_job(text, HARNESS_VERSION)
        assert spec.cell_id == naming.cell_id(**cell.__dict__)
        assert json.loads(text)["cell"] == json.loads(spec.spec_json())


def test_a_local_pretrained_directory_hashes_its_config_files(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    config = validate_config(
        small(lambda c: put(c, {"source": "pretrained", "id": str(tmp_path)}, "models", "m-llama"))
    )
    cell = next(c for c in all_cells(config) if c.model == "m-llama")
    digest = json.loads(cell_params(config, cell))["cell"]["card_sha256"]
    assert digest == {"config.json": hashlib.sha256(b'{"model_type": "llama"}').hexdigest()}
    (tmp_path / "generation_config.json").write_text("{}")
    digest = json.loads(cell_params(config, cell))["cell"]["card_sha256"]
    assert sorted(digest) == ["config.json", "generation_config.json"]


def test_editing_a_card_changes_the_params_of_exactly_its_models_cells(tmp_path):
    card = tmp_path / "card.json"
    card.write_text((REPO / "workflow/architectures/tiny-qwen3.json").read_text())
    config = validate_config(small(lambda c: put(c, str(card), "models", "m-qwen3", "architecture")))
    before = {cell: cell_params(config, cell) for cell in all_cells(config)}
    settings = json.loads(card.read_text())
    card.write_text(json.dumps({**settings, "rms_norm_eps": settings["rms_norm_eps"] * 10}))
    changed = {cell.model for cell in before if cell_params(config, cell) != before[cell]}
    assert changed == {"m-qwen3"}


def test_compiled_loop_options_change_only_compiled_loop_cells():
    # Other backends ignore them: adding fusions to a model must not rerun its eager cells.
    both = lambda c: put(c, ["eager", "compiled_loop"], "studies", "main", "backends")  # noqa: E731
    config = validate_config(small(both))
    before = {cell: cell_params(config, cell) for cell in all_cells(config)}
    fusions = lambda c: put(both(c), {"fusions": ["qkv"]}, "models", "m-qwen3", "compiled_loop")  # noqa: E731
    fused = validate_config(small(fusions))
    changed = {(cell.model, cell.backend) for cell in before if cell_params(fused, cell) != before[cell]}
    assert changed == {("m-qwen3", Backend.COMPILED_LOOP)}


@pytest.mark.parametrize("configfile", SHIPPED_CONFIGS)
def test_cell_paths_match_the_snakemake_wildcards(configfile):
    """The measure rule's output pattern, with common.smk's constraints, reads every cell path back."""
    constraints = {
        "model": naming.MODEL_NAME,
        "backend": wildcard_regex(Backend),
        "dtype": wildcard_regex(DType),
        "context": r"\d+",
        "gen": r"\d+",
        "batch": r"\d+",
        "decoding": naming.DECODING_NAME,
    }
    pattern = re.escape(naming.CELL_PATH)
    for name, regex in constraints.items():
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>{regex})")
    for cell in all_cells(load_config(REPO / configfile)):
        match = re.fullmatch(pattern, cell.path)
        assert match and match.groupdict() == cell.wildcards, cell.path


def test_study_cells_lists_one_study_and_names_an_unknown_one():
    """scripts/study_cells.py: the Snakemake targets of a sitting that runs some studies of a config alone."""

    def run(*args):
        return run_study_cells("config/full-size.yaml", *args)

    listed = dict(line.split("\t") for line in run("--list").stdout.splitlines())
    assert listed["backends"] == "9" and listed["main"] == "12"
    backends = run("backends").stdout.split()
    assert len(backends) == 9 and all(path.startswith("results/cells/") for path in backends)
    assert sum("/compiled-bfloat16/" in path for path in backends) == 3
    union = run("main", "backends").stdout.split()
    assert len(union) == 12 + 9 - 3  # the three eager cells at 2048 belong to both
    unknown = run("backends", "nope")
    assert unknown.returncode == 2 and "nope" in unknown.stderr and not unknown.stdout
    one_model = run("batch:qwen3-32b").stdout.split()
    assert len(one_model) == 8 and all("/qwen3-32b/" in path for path in one_model)
    stray = run("batch:qwen3-32b+yi-34b")  # yi-34b is a model of the config, not of the batch study
    assert stray.returncode == 2 and "batch:qwen3-32b+yi-34b" in stray.stderr and "yi-34b" in stray.stderr
    assert not stray.stdout


def test_study_cells_config_out_keeps_every_cells_params(tmp_path):
    """A sitting's own config (--config-out): only its studies, and each of their cells with the params (so the
    path and Snakemake's rerun check) it has under the full config."""
    from deploybench.plan.config import cells_by_study, study_cells

    cut = tmp_path / "sitting.yaml"
    run = run_study_cells("config/full-size.yaml", "main", "batch:gpt-oss-20b", "--config-out", str(cut))
    assert run.returncode == 0, run.stderr
    full, sitting = load_config(REPO / "config/full-size.yaml"), load_config(cut)
    assert list(sitting.studies) == ["main", "batch"] and sitting.studies["batch"].models == ["gpt-oss-20b"]
    assert sorted(set(run.stdout.split())) == sorted({p for paths in cells_by_study(sitting).values() for p in paths})
    for name in sitting.studies:
        full_params = {c.path: cell_params(full, c) for c in study_cells(full, full.studies[name])}
        cut_params = {c.path: cell_params(sitting, c) for c in study_cells(sitting, sitting.studies[name])}
        assert cut_params == {path: full_params[path] for path in cut_params}
    assert len(cut_params) == 8 and all("/gpt-oss-20b/" in path for path in cut_params)  # the batch study's half
