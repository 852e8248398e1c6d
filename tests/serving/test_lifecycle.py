"""The server lifecycle with a stand-in engine (fake_server.py): start, record, stop on every exit path.

No engine environment needed; the real engines' tests (marker `serving`) repeat the essentials.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time

import pytest

from deploybench.engines.serving.capabilities import TRANSFORMERS_SERVE, VLLM
from deploybench.engines.serving.errors import (
    EngineNotFoundError,
    PortInUseError,
    ServerStartError,
    UnsupportedModelError,
)
from deploybench.engines.serving.process_tools import pick_free_port, port_is_free
from deploybench.engines.serving.server import CAPABILITIES, ServerConfig, ServerProcess
from tests.serving.helpers import HERE, alive, get, kill_owner_and_check, start_owner, wait_group_gone

FAKE = str(HERE / "fake_server.py")


def fake_config(tmp_path, *args, **fields) -> ServerConfig:
    """A vLLM-shaped config whose command is the fake server ("env" in front: no interpreter to ask)."""
    fields.setdefault("startup_timeout_s", 30)
    fields.setdefault("stop_grace_s", 2)
    return ServerConfig(
        "vllm",
        str(tmp_path / "model"),
        command=("/usr/bin/env", sys.executable, FAKE, *args),
        engine_args=(),
        log_path=str(tmp_path / "server.log"),
        **fields,
    )


def test_start_records_and_stop_ends_the_whole_group(tmp_path):
    with ServerProcess(fake_config(tmp_path, "--children", "2")) as server:
        info = server.info
        assert get(info.base_url + "/health")[0] == 200
        assert info.host == "127.0.0.1" and info.base_url == f"http://127.0.0.1:{info.port}"
        assert info.startup_s is not None and info.startup_s > 0
        assert info.command[:3] == ["/usr/bin/env", sys.executable, FAKE]
        assert ["--port", str(info.port)] == info.command[info.command.index("--port") :][:2]
        assert info.version is None and info.distribution is None  # nobody to ask
        assert info.capabilities == VLLM
        members = server.members()
        assert len(members) == 4, members  # launcher, fake server, its two children
        pgid = server.pgid
    assert server.returncode == 0
    assert wait_group_gone(pgid, 0) == []
    assert not any(alive(p) for p in members)
    assert "[deploybench] starting:" in (tmp_path / "server.log").read_text()
    server.stop()  # idempotent


def test_sigterm_ignored_is_escalated_to_sigkill(tmp_path):
    server = ServerProcess(fake_config(tmp_path, "--mode", "stubborn", "--children", "1", stop_grace_s=1))
    server.start()
    members = server.members()
    server.stop()
    assert not any(alive(p) for p in members)
    assert "SIGKILL" in (tmp_path / "server.log").read_text()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_owner_killed_leaves_no_server(tmp_path, sig):
    config = fake_config(tmp_path, "--children", "2")
    fields = {
        "engine": config.engine,
        "model": config.model,
        "command": list(config.command),
        "engine_args": [],
        "log_path": config.log_path,
        "stop_grace_s": 2,
    }
    owner, report = start_owner(fields, timeout=60)
    assert len(report["members"]) == 4
    kill_owner_and_check(owner, report, sig, timeout=15)
    if sig == signal.SIGKILL:
        assert "owner" in (tmp_path / "server.log").read_text()  # the launcher saw its owner die


def test_launcher_sigkill_kills_the_server_top_and_stop_the_rest(tmp_path):
    """PR_SET_PDEATHSIG on the server's top process: it dies with the launcher; what it spawned is
    left to the owner's stop(), which kills the whole group."""
    server = ServerProcess(fake_config(tmp_path, "--children", "2"))
    server.start()
    launcher_pid = server.pgid
    members = server.members()
    top = [p for p in members if _ppid(p) == launcher_pid]
    assert len(top) == 1, members
    os.kill(launcher_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(top[0]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(top[0]), "the server's top process outlived its launcher"
    server.stop()
    assert not any(alive(p) for p in members)


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def test_server_dying_at_start_gives_its_log_tail(tmp_path):
    with pytest.raises(ServerStartError) as caught:
        ServerProcess(fake_config(tmp_path, "--mode", "die", "--children", "1")).start()
    message = str(caught.value)
    assert "exited with code 3" in message and "before /health answered 200" in message
    assert "no such architecture 'broken'" in caught.value.log_tail
    assert "no such architecture 'broken'" in message


def test_health_timeout_stops_the_server(tmp_path):
    server = ServerProcess(fake_config(tmp_path, "--mode", "never", "--children", "1", startup_timeout_s=3))
    with pytest.raises(ServerStartError, match="did not answer .*/health with 200 within 3 s"):
        server.start()
    assert server.members() == []


def test_port_taken_is_refused_before_starting(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert not port_is_free("127.0.0.1", port)
        server = ServerProcess(fake_config(tmp_path, port=port))
        with pytest.raises(PortInUseError, match=f"port {port} on 127.0.0.1 is already in use"):
            server.start()
        assert server.pgid is None  # nothing was started
    assert port_is_free("127.0.0.1", port)


def test_bind_failure_in_the_log_is_a_port_error(tmp_path):
    port = pick_free_port()
    with pytest.raises(PortInUseError, match="address already in use") as caught:
        ServerProcess(fake_config(tmp_path, "--mode", "eaddrinuse", port=port)).start()
    assert "Errno 98" in caught.value.log_tail


def test_wrong_interpreter_is_named(tmp_path):
    missing = str(tmp_path / "no-env" / "bin" / "python")
    with pytest.raises(EngineNotFoundError, match=f"'{missing}' does not exist"):
        ServerProcess(ServerConfig("vllm", str(tmp_path), python=missing)).start()
    with pytest.raises(EngineNotFoundError, match="is not an executable file"):
        ServerProcess(ServerConfig("vllm", str(tmp_path), python=FAKE)).start()
    with pytest.raises(EngineNotFoundError, match="not on PATH"):
        ServerProcess(ServerConfig("vllm", str(tmp_path), python="no-such-python-3.99")).start()


def test_interpreter_without_the_engine_is_named(tmp_path):
    # The project's interpreter has transformers but no vLLM (and must never have it).
    with pytest.raises(EngineNotFoundError, match=f"vllm is not installed in the interpreter '{sys.executable}'"):
        ServerProcess(ServerConfig("vllm", str(tmp_path), python=sys.executable)).start()


def test_config_refusals(tmp_path):
    with pytest.raises(ValueError, match="unknown serving engine"):
        ServerConfig("tgi", "m", python=sys.executable)
    with pytest.raises(ValueError, match="loopback"):
        ServerConfig("vllm", "m", python=sys.executable, host="0.0.0.0")  # noqa: S104
    with pytest.raises(ValueError, match="interpreter"):
        ServerConfig("vllm", "m")
    config = ServerConfig("transformers-serve", "m", command=("/usr/bin/env", "true"), dummy_weights=True)
    with pytest.raises(UnsupportedModelError, match="no dummy load format"):
        ServerProcess(config).start()


def test_capability_records():
    assert set(CAPABILITIES) == {"vllm", "transformers-serve"}
    assert VLLM.ignore_eos and VLLM.min_tokens and VLLM.token_id_prompts and VLLM.metrics_path == "/metrics"
    assert VLLM.dummy_weights and VLLM.continuous_usage and VLLM.stream_done_marker
    t = TRANSFORMERS_SERVE
    assert not (t.ignore_eos or t.min_tokens or t.token_id_prompts or t.dummy_weights or t.continuous_usage)
    assert t.metrics_path is None and t.chat_completions and t.completions and t.include_usage
    assert all(c.health_path == "/health" for c in CAPABILITIES.values())
