"""Shared by the serving tests: where the engine environments are, plain-HTTP requests, owner processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from deploybench.engines.serving.launcher import group_members

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
# The make targets' default places; DEPLOYBENCH_ENGINES_DIR points elsewhere.
ENGINES_DIR = Path(os.environ.get("DEPLOYBENCH_ENGINES_DIR", REPO / ".engines"))
ENGINE_DIRS = {"vllm": ENGINES_DIR / "vllm", "transformers-serve": ENGINES_DIR / "transformers-serve"}
MAKE_TARGETS = {"vllm": "make engine-vllm", "transformers-serve": "make engine-transformers"}
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def engine_python(engine: str) -> str:
    """The engine's interpreter, or skip saying how to install it (a failure where CI requires `serving`)."""
    env_dir = ENGINE_DIRS[engine]
    if not (env_dir / "deploybench-engine.json").is_file():
        pytest.skip(f"{engine} environment missing or incomplete at {env_dir}: run `{MAKE_TARGETS[engine]}`")
    return str(env_dir / "bin" / "python")


def installed(engine: str) -> dict:
    return json.loads((ENGINE_DIRS[engine] / "deploybench-engine.json").read_text())


def get(url: str, timeout: float = 30) -> tuple[int, str]:
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def post_stream(url: str, body: dict, timeout: float = 300) -> tuple[int, list[dict], list[str]]:
    """POST a streaming request; (status, the JSON events, the raw `data:` payloads)."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            raw = [line[6:] for line in response.read().decode().splitlines() if line.startswith("data: ")]
            status = response.status
    except urllib.error.HTTPError as error:
        return error.code, [], [error.read().decode()]
    return status, [json.loads(payload) for payload in raw if payload != "[DONE]"], raw


def completion_tokens(events: list[dict]) -> int:
    """The completion token count of a stream by the server's usage (its last usage object); 0 if none."""
    usages = [e["usage"] for e in events if e.get("usage")]
    return usages[-1]["completion_tokens"] if usages else 0


def start_owner(config_fields: dict, timeout: float = 600) -> tuple[subprocess.Popen, dict]:
    """Start tests/serving/owner.py, which starts a server; return it and its JSON line once ready."""
    owner = subprocess.Popen(
        [sys.executable, str(HERE / "owner.py"), json.dumps(config_fields)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        line = _readline(owner, timeout)
    except BaseException:
        owner.kill()
        raise
    report = json.loads(line)
    if "error" in report:
        owner.kill()
        pytest.fail(f"the owner could not start its server: {report['error']}")
    return owner, report


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    import selectors

    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    if not selector.select(timeout):
        raise TimeoutError(f"no report from the owner within {timeout} s")
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"the owner exited ({proc.wait()}) without a report")
    return line


def wait_group_gone(pgid: int, timeout: float) -> list[int]:
    """Wait until process group `pgid` has no live member; returns what is left after `timeout`."""
    deadline = time.monotonic() + timeout
    while (left := group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def alive(pid: int) -> bool:
    """A live process (not a zombie) with this pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def _process_state(pid: int) -> str:
    """Where a process waits (its state and kernel wait channel), for a test that timed out on it."""
    try:
        with open(f"/proc/{pid}/status") as f:
            status = next((line.strip() for line in f if line.startswith("State:")), "")
        with open(f"/proc/{pid}/wchan") as f:
            return f"{status}, waiting in {f.read() or '-'}"
    except OSError as error:
        return f"unreadable ({error})"


def kill_owner_and_check(owner: subprocess.Popen, report: dict, sig: int = signal.SIGKILL, timeout: float = 60) -> None:
    """Kill the owner with `sig`; every process of its server's group must be gone within `timeout`."""
    members = report["members"]
    owner.send_signal(sig)
    try:
        # The owner's handler stops the server first: up to stop_grace_s + 15 s for the launcher, 15 s more after
        # a SIGKILL, 10 s of checks. The margin is for a loaded CI machine (a 60 s wait once ran out there).
        owner.wait(timeout=120)
    except subprocess.TimeoutExpired:
        state = _process_state(owner.pid)
        left = group_members(report["pgid"])
        owner.kill()
        pytest.fail(f"the owner did not exit within 120 s of {signal.Signals(sig).name}: {state}; server group: {left}")
    left = wait_group_gone(report["pgid"], timeout)
    stragglers = [p for p in members if alive(p)]
    if left or stragglers:
        for pid in set(left) | set(stragglers):  # don't leave them to the next test
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert not left and not stragglers, (
        f"after {signal.Signals(sig).name} of the owner, still alive: {left or stragglers}"
    )
