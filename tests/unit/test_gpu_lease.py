"""GPU leases on CPU: fake device counts, real concurrent processes, real flocks."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from deploybench.instruments import nvml
from deploybench.measure import gpu_lease
from deploybench.measure.gpu_lease import GpuLeaseTimeout, lease_gpu

REPO = Path(__file__).resolve().parents[2]
SLACK_S = 0.4  # scheduling jitter we tolerate on a busy 2-core host (the poll interval is 20 ms)

# Waits for a common start time, leases, holds for hold_s, prints one JSON record.
# Times are time.monotonic(), which is one system-wide clock on Linux.
WORKER = """
import json, os, sys, time
from deploybench.measure.gpu_lease import lease_gpu
count, hold_s, start = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
while time.monotonic() < start:
    time.sleep(0.002)
t_request = time.monotonic()
print("requesting", flush=True, file=sys.stderr)
with lease_gpu(count=count) as lease:
    t_acquire = time.monotonic()
    print("acquired", flush=True, file=sys.stderr)
    env = [os.environ.get("CUDA_VISIBLE_DEVICES"), os.environ.get("CUDA_DEVICE_ORDER")]
    time.sleep(hold_s)
    t_release = time.monotonic()  # logged before the release: intervals stay inside
print(json.dumps(dict(device=lease.device_index, source=lease.source, env=env,
                      t_request=t_request, t_acquire=t_acquire, t_release=t_release)))
"""

ENV_KEYS = (
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "SLURM_JOB_ID",
    "SLURM_JOB_GPUS",
)
ENV_KEYS += ("SLURM_STEP_GPUS", gpu_lease.COUNT_ENV)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv(gpu_lease.LOCK_DIR_ENV, str(tmp_path / "locks"))
    return tmp_path / "locks"


def spawn(count: int, hold_s: float, start: float) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    env["PYTHONPATH"] = str(REPO)
    args = [sys.executable, "-c", WORKER, str(count), str(hold_s), str(start)]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def free_gaps(window: tuple[float, float], held: list[tuple[float, float]]) -> list[float]:
    """Lengths of the parts of `window` not covered by the `held` intervals."""
    cursor, end = window
    gaps = []
    for a, b in sorted(held):
        if a > cursor:
            gaps.append(min(a, end) - cursor)
        cursor = max(cursor, b)
        if cursor >= end:
            break
    if cursor < end:
        gaps.append(end - cursor)
    return [g for g in gaps if g > 0]


def test_concurrent_jobs_get_exclusive_devices_without_needless_waits(clean_env):
    n_devices, n_jobs = 3, 12
    # Random holds, one long per two short ones in spawn order: a job that queued for
    # a device picked up front (say by pid) instead of taking whichever frees first
    # would then wait while other devices sit free.
    rng = random.Random(7)
    holds = [rng.uniform(*(0.7, 1.0) if i % 3 == 0 else (0.05, 0.15)) for i in range(n_jobs)]
    start = time.monotonic() + 1.5  # all interpreters are up by then; all ask at once
    procs = [spawn(n_devices, hold, start) for hold in holds]
    records = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        records.append(json.loads(out))

    for r in records:
        assert r["source"] == "lease" and 0 <= r["device"] < n_devices
        assert r["env"] == [str(r["device"]), "PCI_BUS_ID"]
    assert {r["device"] for r in records} == set(range(n_devices))
    held = {d: sorted((r["t_acquire"], r["t_release"]) for r in records if r["device"] == d) for d in range(n_devices)}

    # Exclusive: on each device the hold intervals never overlap.
    for d, intervals in held.items():
        for (_, prev_release), (next_acquire, _) in itertools.pairwise(intervals):
            assert next_acquire >= prev_release, f"device {d} held twice at once"

    # No needless wait: while a job waited, every device was held by another job.
    waited = [r for r in records if r["t_acquire"] - r["t_request"] > 0.05]
    assert len(waited) >= n_jobs - n_devices  # otherwise the test proves nothing
    worst = max(
        (gap, d)
        for r in records
        for d in range(n_devices)
        for gap in free_gaps((r["t_request"], r["t_acquire"]), held[d]) or [0.0]
    )
    print(f"longest free gap seen by a waiting job: {worst[0] * 1000:.1f} ms")
    assert worst[0] < SLACK_S, f"a job waited {worst[0]:.3f} s while device {worst[1]} was free"


def test_sigkilled_holder_frees_its_device(clean_env):
    holder = spawn(1, 60, 0)
    assert holder.stderr.readline().strip() == "requesting"
    assert holder.stderr.readline().strip() == "acquired"
    try:
        timeout = pytest.raises(GpuLeaseTimeout, match=f"pid={holder.pid}")
        with timeout, lease_gpu(count=1, timeout_s=0.2):
            pass
        waiter = spawn(1, 0, 0)  # blocks, polling, until the holder dies
        assert waiter.stderr.readline().strip() == "requesting"
        time.sleep(0.3)
        assert waiter.poll() is None
    finally:
        holder.send_signal(signal.SIGKILL)
        t_kill = time.monotonic()
        holder.wait(timeout=10)
    out, err = waiter.communicate(timeout=10)
    assert waiter.returncode == 0, err
    record = json.loads(out)
    assert record["device"] == 0
    assert record["t_request"] < t_kill  # it was already waiting
    assert record["t_acquire"] - t_kill < 1.0  # the lock dies with its holder: no timeout to wait out


def test_lease_is_released_and_env_restored(clean_env):
    with lease_gpu(count=2) as lease:
        assert lease == gpu_lease.GpuLease(0, "0", "lease")
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
        assert os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert "CUDA_DEVICE_ORDER" not in os.environ
    with lease_gpu(count=2) as again:  # device 0 is free again
        assert again.device_index == 0


def test_slurm_assignment_is_honoured_without_locking(clean_env, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # renumbered by cgroup confinement
    monkeypatch.setenv("SLURM_JOB_GPUS", "3")
    with lease_gpu(count=4) as lease:
        assert lease == gpu_lease.GpuLease(3, "0", "slurm")
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
        assert os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert not clean_env.exists()  # no lock taken


def test_slurm_job_without_gpu(clean_env, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    with lease_gpu(count=4) as lease:
        assert lease == gpu_lease.GpuLease(None, None, "slurm")
        assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert not clean_env.exists()


@pytest.mark.parametrize(("visible", "index"), [("2", 2), ("0,1", None), ("", None)])
def test_user_cuda_visible_devices_is_honoured(clean_env, monkeypatch, visible, index):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    with lease_gpu(count=4) as lease:
        assert lease == gpu_lease.GpuLease(index, visible, "user")
        assert os.environ["CUDA_VISIBLE_DEVICES"] == visible
    assert not clean_env.exists()


def test_zero_devices_means_no_lease(clean_env, monkeypatch):
    monkeypatch.setenv(gpu_lease.COUNT_ENV, "0")
    with lease_gpu() as lease:
        assert lease == gpu_lease.GpuLease(None, None, "none")
        assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert not clean_env.exists()


def test_device_count_sources(clean_env, monkeypatch):
    monkeypatch.setattr(nvml, "pynvml", None)  # nvidia-ml-py not installed: no NVML
    assert gpu_lease.gpu_count() == 0
    monkeypatch.setenv(gpu_lease.COUNT_ENV, "3")
    assert gpu_lease.gpu_count() == 3
    assert gpu_lease.gpu_count(5) == 5  # the argument wins
    monkeypatch.delenv(gpu_lease.COUNT_ENV)

    class NVMLError(Exception):
        pass

    fake = types.SimpleNamespace(
        NVMLError=NVMLError,
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: 2,
    )
    monkeypatch.setattr(nvml, "pynvml", fake)  # the lease counts through the one NVML session helper
    assert gpu_lease.gpu_count() == 2

    def no_driver():
        raise NVMLError("driver not loaded")

    fake.nvmlInit = no_driver
    assert gpu_lease.gpu_count() == 0


def test_the_lease_log_line_names_its_source_by_value():
    """The measure job logs its lease; the SLURM test and a reader look for source='slurm' there."""
    from deploybench.enums import LeaseSource
    from deploybench.measure.gpu_lease import GpuLease

    assert repr(GpuLease(1, "1", LeaseSource.SLURM)) == "GpuLease(device_index=1, visible_devices='1', source='slurm')"
