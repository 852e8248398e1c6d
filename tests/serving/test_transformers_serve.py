"""A real `transformers serve` (from `make engine-transformers`) on the tiny model with random weights.

It has no dummy load format, so the model directory holds random weights (about 1 MB). It rejects
`ignore_eos` and `min_tokens`, and under --continuous-batching ignores `min_new_tokens`: exactly N
tokens come from a model whose configs name no EOS (tiny_model.write_tiny_model). Starts take
10-20 s here. No timing is asserted.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest

from deploybench.engines.serving.capabilities import TRANSFORMERS_SERVE, TRANSFORMERS_SERVE_DEFAULT_ARGS
from deploybench.engines.serving.errors import EngineNotFoundError, ServerStartError, UnsupportedModelError
from deploybench.engines.serving.server import ServerConfig, ServerProcess
from deploybench.engines.serving.tiny_model import write_tiny_model
from tests.serving.helpers import (
    alive,
    completion_tokens,
    engine_python,
    get,
    installed,
    kill_owner_and_check,
    post_stream,
    start_owner,
    wait_group_gone,
)

pytestmark = pytest.mark.serving

N = 24
ENGINE = "transformers-serve"


@pytest.fixture(scope="module")
def python():
    return engine_python(ENGINE)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tserve") / "tiny-qwen3-serving", weights=True)


def config(python, model_dir, tmp_path, **fields) -> ServerConfig:
    fields.setdefault("log_path", str(tmp_path / "tserve.log"))
    return ServerConfig(ENGINE, str(model_dir), python=python, **fields)


def test_refusals_before_start(python, model_dir, tmp_path):
    wrong = python + "3.99"
    with pytest.raises(EngineNotFoundError, match=re.escape(f"'{wrong}' does not exist")):
        ServerProcess(config(wrong, model_dir, tmp_path)).start()
    with pytest.raises(UnsupportedModelError, match="no dummy load format"):
        ServerProcess(config(python, model_dir, tmp_path, dummy_weights=True)).start()


def test_broken_config_fails_with_the_log_tail(python, model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    card = json.loads((broken / "config.json").read_text())
    card.update(model_type="no-such-architecture", architectures=["NoSuchForCausalLM"])
    (broken / "config.json").write_text(json.dumps(card))
    server = ServerProcess(config(python, broken, tmp_path, startup_timeout_s=300))
    with pytest.raises(ServerStartError, match="server exited with code") as caught:
        server.start()
    assert "no-such-architecture" in caught.value.log_tail
    assert server.members() == []


def test_owner_sigkill_leaves_no_server_process(python, model_dir, tmp_path):
    fields = {"engine": ENGINE, "model": str(model_dir), "python": python, "log_path": str(tmp_path / "owned.log")}
    owner, report = start_owner(fields, timeout=300)
    kill_owner_and_check(owner, report, timeout=60)


@pytest.fixture(scope="module")
def server(python, model_dir, tmp_path_factory):
    with ServerProcess(config(python, model_dir, tmp_path_factory.mktemp("tserve-log"))) as running:
        yield running


def test_started_and_recorded(server, python):
    info = server.info
    assert get(info.base_url + "/health")[0] == 200
    assert info.distribution == "transformers" and info.version == installed(ENGINE)["version"]
    assert info.command[:4] == [python, "-m", "transformers.cli.transformers", "serve"]
    assert info.command[-len(TRANSFORMERS_SERVE_DEFAULT_ARGS) :] == list(TRANSFORMERS_SERVE_DEFAULT_ARGS)
    assert info.served_model_name == str(server.config.model)
    assert info.startup_s > 0 and info.capabilities == TRANSFORMERS_SERVE
    print(f"transformers serve {info.version} ready in {info.startup_s:.1f} s")


def _body(server, **fields):
    return {"model": server.info.served_model_name, "max_tokens": N, "temperature": 0, "stream": True, **fields}


def test_completion_of_exactly_n_tokens(server):
    status, events, raw = post_stream(server.base_url + "/v1/completions", _body(server, prompt="The quick brown fox"))
    assert status == 200, raw
    assert not [e for e in events if "error" in e], raw
    assert completion_tokens(events) == N
    assert events[-1]["choices"][-1]["finish_reason"] == "length"
    assert (raw[-1] == "[DONE]") == TRANSFORMERS_SERVE.stream_done_marker


def test_chat_completion_of_exactly_n_tokens(server):
    body = _body(server, messages=[{"role": "user", "content": "The quick brown fox"}])
    status, events, raw = post_stream(server.base_url + "/v1/chat/completions", body)
    assert status == 200, raw
    assert completion_tokens(events) == N


def test_capability_record_matches_the_server(server):
    url = server.base_url + "/v1/completions"
    for field, value in (("ignore_eos", True), ("min_tokens", N)):
        status, _, raw = post_stream(url, _body(server, prompt="hi", **{field: value}))
        assert status == 422 and field in raw[0], (field, status, raw)
        assert getattr(TRANSFORMERS_SERVE, field) is False
    status, _, raw = post_stream(url, _body(server, prompt=[11, 57, 300]))
    assert status == 400 and not TRANSFORMERS_SERVE.token_id_prompts
    assert get(server.base_url + "/metrics")[0] == 404 and TRANSFORMERS_SERVE.metrics_path is None


def test_stop_leaves_nothing(server):
    members, pgid = server.members(), server.pgid
    server.stop()
    assert wait_group_gone(pgid, 0) == [] and not any(alive(p) for p in members)
