"""What starting a server process needs besides the process itself: a free loopback port, the engine's
versions asked of its own interpreter, a clean environment, the model's head_dim, and its log's tail."""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from deploybench.engines.serving.errors import EngineNotFoundError

LOCALHOST = "127.0.0.1"


def pick_free_port(host: str = LOCALHOST) -> int:
    """A port nobody listens on now (the kernel's choice; another process may still take it)."""
    with socket.socket(address_family(host), socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could bind `port` now (SO_REUSEADDR as uvicorn sets it: a listener makes it fail)."""
    with socket.socket(address_family(host), socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def address_family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


VERSION_PROBE = """
import importlib.metadata as md, json, platform, sys
def v(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None
print(json.dumps({"python": platform.python_version(), "executable": sys.executable,
                  "packages": {n: v(n) for n in sys.argv[1:]}}))
"""


def engine_versions(python: str, distributions: Sequence[str], timeout_s: float = 120.0) -> dict:
    """Ask the engine's interpreter for its python and the versions of `distributions` (None: absent),
    without importing the engine. Raises EngineNotFoundError naming the interpreter if it cannot run."""
    resolved = resolve_executable(python)
    extra = ("torch", "transformers", "tokenizers")
    try:
        done = subprocess.run(
            [resolved, "-I", "-c", VERSION_PROBE, *distributions, *extra],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=clean_env(),
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise EngineNotFoundError(f"engine interpreter {python!r} cannot run: {error}") from error
    if done.returncode != 0:
        raise EngineNotFoundError(f"engine interpreter {python!r} failed (exit {done.returncode})", done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def resolve_executable(path: str) -> str:
    """`path` if it is an executable file, or found on PATH; else EngineNotFoundError naming it."""
    candidate = Path(path)
    if os.sep in path:
        if not candidate.exists():
            raise EngineNotFoundError(
                f"engine interpreter or command {path!r} does not exist "
                f"(make engine-vllm / make engine-transformers create .engines/vllm, .engines/transformers-serve)"
            )
        if not (candidate.is_file() and os.access(candidate, os.X_OK)):
            raise EngineNotFoundError(f"engine interpreter or command {path!r} is not an executable file")
        return str(candidate)
    import shutil

    found = shutil.which(path)
    if found is None:
        raise EngineNotFoundError(f"engine interpreter or command {path!r} is not on PATH")
    return found


def clean_env(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The owner's environment without what would leak the project's interpreter into the engine's."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__")
    }
    env.update(overrides or {})
    return env


def read_tail(path: str | Path, lines: int = 40, max_bytes: int = 65536) -> str:
    """The last `lines` lines of a log file ('' if it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-lines:])


ERROR_LINE = re.compile(r"^([\w.]+(Error|Exception|Exit)\b|.*\bERROR\b)")
EXCEPTION_LINE = re.compile(r"^[\w.]+(Error|Exception|Exit)\b")
# vLLM prefixes every line of a process with its role and pid: "(EngineCore pid=2000) ..."
PROCESS_PREFIX = re.compile(r"^\([\w ]+ pid=\d+\) ")
# An exception that only points elsewhere: the cause is an earlier one.
POINTS_ELSEWHERE = re.compile(r"root cause above|see (the )?(error|log|traceback) above", re.IGNORECASE)


def last_error(tail: str, max_chars: int = 400) -> str:
    """The error a log shows: a traceback's final exception line (with the indented lines after it, where
    pydantic puts the reason), or, where that one only points above (vLLM's "Engine core initialization
    failed. See root cause above"), the last exception line before it, then the pointer; else the last
    ERROR line; '' if none. vLLM's per-process line prefixes are ignored."""
    lines = [PROCESS_PREFIX.sub("", line) for line in tail.splitlines()]

    def block(i: int) -> str:
        return " ".join(x.strip() for x in [lines[i]] + [x for x in lines[i + 1 : i + 3] if x.startswith(" ")])

    exceptions = [i for i, line in enumerate(lines) if EXCEPTION_LINE.match(line)]
    if exceptions:
        last = exceptions[-1]
        if POINTS_ELSEWHERE.search(lines[last]):
            causes = [i for i in exceptions if not POINTS_ELSEWHERE.search(lines[i])]
            if causes:
                return f"{block(causes[-1])} (then: {lines[last].strip()})"[:max_chars]
        return block(last)[:max_chars]
    for i in range(len(lines) - 1, -1, -1):
        if ERROR_LINE.match(lines[i]):
            return block(i)[:max_chars]
    return ""


def local_model_config(model: str) -> dict | None:
    """config.json of a local model directory, None for a hub id."""
    path = Path(model) / "config.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # the engine reports a broken config itself, in its log


def head_dim_of(config: dict) -> int | None:
    if config.get("head_dim"):
        return int(config["head_dim"])
    if config.get("hidden_size") and config.get("num_attention_heads"):
        return int(config["hidden_size"]) // int(config["num_attention_heads"])
    return None
