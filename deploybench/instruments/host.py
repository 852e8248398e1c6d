"""The host a cell ran on and the code that ran: what explains a spread between two machines.

Eager decode is bound by how fast the host launches kernels, so the CPU model, how many cores the
process may use and a single-thread Python speed figure belong in every row, as does the code
revision (git commit and whether the tree was dirty; a hash of the library sources in any case, so
a copied tree without .git still says which code ran).
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import time
from pathlib import Path

from deploybench.stats import median

PACKAGE_DIR = Path(__file__).resolve().parent
REVISION_ENV = "DEPLOYBENCH_CODE_REVISION"  # set by whoever copies a tree without .git (e.g. a GPU session)
PYTHON_LOOP_ITERATIONS = 200_000


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_count() -> int:
    """Cores this process may run on (its affinity), not the machine's total."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def python_loop_ns(repeats: int = 5) -> float:
    """Median nanoseconds per iteration of a fixed pure-Python loop: the host's single-thread speed."""
    times = []
    for _ in range(repeats):
        total = 0
        start = time.perf_counter_ns()
        for i in range(PYTHON_LOOP_ITERATIONS):
            total += i
        times.append((time.perf_counter_ns() - start) / PYTHON_LOOP_ITERATIONS)
    return median(times)


def source_sha256() -> str:
    """sha256 over the library's source files (path and content), sorted: equal text, equal hash."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*")):
        if path.suffix in (".py", ".yaml") and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(PACKAGE_DIR)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(PACKAGE_DIR.parent), *args], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def code_revision() -> str:
    """$DEPLOYBENCH_CODE_REVISION when set; else '<commit>' or '<commit>+dirty' from git; else 'unknown'.

    The variable wins: a copied tree can sit in a checkout whose .git is stale (a GPU session's copy
    once said 0810582+dirty for code whose source_sha256 was that of 01d928d), and whoever sets it knows.
    """
    declared = os.environ.get(REVISION_ENV)
    if declared:
        return declared
    commit = _git("rev-parse", "HEAD")
    if commit:
        dirty = _git("status", "--porcelain", "--untracked-files=no")
        return commit + ("+dirty" if dirty else "")
    return "unknown"


def available_memory_bytes(address_space_used: bool = True) -> int | None:
    """Host memory an allocation can still get: the least of MemAvailable (/proc/meminfo), the room under
    the cgroup's memory limit (v2 memory.max or v1 memory.limit_in_bytes, this group and its parents) and,
    under ulimit -v (RLIMIT_AS), the address space left (`address_space_used`: less this process's own,
    for a check inside the process that will allocate; False for one made on behalf of a new process).
    None when none of them can be read."""
    import resource

    room = []
    meminfo = _read_kib("/proc/meminfo", "MemAvailable:")
    if meminfo is not None:
        room.append(meminfo)
    room += _cgroup_room()
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        used = (_read_kib("/proc/self/status", "VmSize:") or 0) if address_space_used else 0
        room.append(max(0, soft - used))
    return min(room) if room else None


def _read_kib(path: str, key: str) -> int | None:
    """A `key: <n> kB` line of a /proc file, in bytes."""
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> list[int]:
    """Limit minus usage of every memory cgroup this process is under (v2 and v1), in bytes."""
    root, room = Path("/sys/fs/cgroup"), []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return room
    for line in lines:
        _, controllers, group = line.split(":", 2)
        if controllers == "":  # v2: memory.max at each level up to the root
            files, base = ("memory.max", "memory.current"), root
        elif "memory" in controllers.split(","):
            files, base = ("memory.limit_in_bytes", "memory.usage_in_bytes"), root / "memory"
        else:
            continue
        level = base / group.lstrip("/")
        while True:
            try:
                limit, usage = ((level / name).read_text().strip() for name in files)
                if limit != "max" and int(limit) < 1 << 60:  # v1 writes a huge number for no limit
                    room.append(max(0, int(limit) - int(usage)))
            except (OSError, ValueError):
                pass
            if level == base or base not in level.parents:
                break
            level = level.parent
    return room


def record() -> dict:
    """The host columns of a result row."""
    return {
        "cpu_model": cpu_model(),
        "cpu_count": cpu_count(),
        "python_loop_ns": python_loop_ns(),
        "code_revision": code_revision(),
        "source_sha256": source_sha256(),
    }
