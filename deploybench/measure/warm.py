"""A warm process server: pay the torch + transformers import once, fork a child per cell.

Importing torch and transformers costs seconds on a small CPU (README, "How measurements are
taken"), more than a tiny cell takes to measure, and Snakemake starts one process per job. With
DEPLOYBENCH_WARM=1 the measure adapter hands its command line to a server that has already imported
everything; the server forks, the child runs the same `deploybench.cli.main` with the client's
stdout, stderr, working directory and environment, and the client exits with the child's exit status.

A server serves only clients under the limits it started with (resource limits such as ulimit -v, CPU
affinity, cgroups, nice: `limits`, part of the socket's name): a client under other limits starts its own, so
the process that measures is always bounded as the job that asked for it.

Safe to fork: the server imports modules but never initialises CUDA or runs a torch op, so no
driver context and no thread pool exists yet; each child initialises its own. The server is
single-threaded. A child is killed when its client disappears (Snakemake killed, SIGKILL
included), and the server exits after `IDLE_EXIT_S` without work.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

IDLE_EXIT_S = float(os.environ.get("DEPLOYBENCH_WARM_IDLE_S", "120"))
START_TIMEOUT_S = 120.0


def socket_path() -> str:
    """One server per (user, interpreter, library code, limits): an edited library gets a fresh server, and so
    does a client under other limits (`limits`), so the forked child that measures inherits the client's."""
    root = Path(__file__).resolve().parents[1]  # the whole library: the child runs deploybench.cli
    code = sorted((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*.py"))
    key = hashlib.sha1(f"{sys.executable}:{code}:{limits()}".encode()).hexdigest()[:12]
    return os.environ.get("DEPLOYBENCH_WARM_SOCKET", f"/tmp/deploybench-warm-{os.getuid()}-{key}.sock")


def limits() -> str:
    """What a process inherits that bounds a measurement: its resource limits (ulimit -v, -m, -n, ...), CPU
    affinity (taskset, cpuset), cgroups (memory and CPU limits) and nice value. The server is started by the
    first client with these and forks every child from itself, so a child has exactly its client's."""
    import resource

    rlimits = {
        name: resource.getrlimit(getattr(resource, name)) for name in dir(resource) if name.startswith("RLIMIT_")
    }
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    try:
        cgroup = Path("/proc/self/cgroup").read_text()
    except OSError:
        cgroup = None
    return json.dumps({"rlimits": rlimits, "affinity": affinity, "cgroup": cgroup, "nice": os.nice(0)}, sort_keys=True)


# --- client ------------------------------------------------------------------------------


def run_via_server(argv: list[str]) -> int:
    """Run `deploybench <argv>` in a forked child of the warm server; return its exit status."""
    path = socket_path()
    conn = _connect(path) or _start_server(path)
    message = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    socket.send_fds(conn, [len(message).to_bytes(8, "big") + message], [sys.stdout.fileno(), sys.stderr.fileno()])
    reply = b""
    while chunk := conn.recv(64):
        reply += chunk
    conn.close()
    if not reply:
        print("deploybench: warm server closed the connection without an exit status", file=sys.stderr)
        return 1
    return int(reply)


def _connect(path: str) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        return conn
    except OSError:
        conn.close()
        return None


def _start_server(path: str) -> socket.socket:
    import fcntl

    # Several jobs may start at once: one starts the server, the others wait for it.
    lock = open(f"{path}.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    conn = _connect(path)
    if conn:
        lock.close()
        return conn
    log = open(f"{path}.log", "ab")
    # A new session: the server outlives this client and is not killed with its process group.
    subprocess.Popen(
        [sys.executable, "-m", "deploybench.measure.warm", path],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
        cwd=str(Path(__file__).resolve().parent.parent),
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        conn = _connect(path)
        if conn:
            lock.close()
            return conn
        time.sleep(0.05)
    raise RuntimeError(f"warm server did not start within {START_TIMEOUT_S} s; see {path}.log")


# --- server ------------------------------------------------------------------------------


def _preload() -> None:
    """Import what a measurement needs, without initialising CUDA or running a torch op."""
    import transformers  # noqa: F401
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig  # noqa: F401
    from transformers.models.gpt_oss import modeling_gpt_oss  # noqa: F401
    from transformers.models.llama import modeling_llama  # noqa: F401
    from transformers.models.qwen3 import modeling_qwen3  # noqa: F401

    from deploybench.results import schema  # noqa: F401


def _recv_request(conn: socket.socket) -> tuple[dict, list[int]]:
    header, fds, _, _ = socket.recv_fds(conn, 8 + 65536, 2)
    size = int.from_bytes(header[:8], "big")
    body = header[8:]
    while len(body) < size:
        body += conn.recv(size - len(body))
    return json.loads(body), fds


def _child(request: dict, fds: list[int]) -> None:
    """Runs in the forked child: become the client's process, run the CLI, never return."""
    code = 1
    try:
        os.setpgid(0, 0)
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        from deploybench.cli import main

        code = main(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve(path: str) -> None:
    _preload()
    if os.path.exists(path):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    children: dict[int, socket.socket] = {}  # pid -> client connection
    last_work = time.monotonic()
    try:
        while children or time.monotonic() - last_work < IDLE_EXIT_S:
            readable, _, _ = select.select([listener, *children.values()], [], [], 0.1)
            for conn in readable:
                if conn is listener:
                    client, _ = listener.accept()
                    request, fds = _recv_request(client)
                    pid = os.fork()
                    if pid == 0:
                        listener.close()
                        _child(request, fds)
                    for fd in fds:
                        os.close(fd)
                    children[pid] = client
                elif not conn.recv(1):  # the client is gone: its job was killed
                    pid = next(p for p, c in children.items() if c is conn)
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            for pid in list(children):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    client = children.pop(pid)
                    try:
                        client.sendall(str(os.waitstatus_to_exitcode(status)).encode())
                    except OSError:
                        pass
                    client.close()
                    last_work = time.monotonic()
    finally:
        listener.close()
        if os.path.exists(path):
            os.unlink(path)


if __name__ == "__main__":
    serve(sys.argv[1])
