"""Exclusive per-GPU leases for measure jobs that run concurrently on one host.

`snakemake --cores N --resources gpu=N` starts up to N measure jobs at once; each
enters `lease_gpu()` at process start, before any CUDA work, and so gets a GPU of
its own. The chosen device is exported as CUDA_VISIBLE_DEVICES with
CUDA_DEVICE_ORDER=PCI_BUS_ID, so CUDA's index agrees with NVML's/nvidia-smi's and
the energy code reads the power of the same physical device.

Which devices a job may use, in order of precedence:

- SLURM (`SLURM_JOB_ID` set): SLURM already gave the job its GPUs and set
  CUDA_VISIBLE_DEVICES; we take no lock and only report them (source "slurm").
- User (`CUDA_VISIBLE_DEVICES` set outside SLURM): an explicit choice by the user
  wins; no lock is taken (source "user"). Consequence: jobs started together then
  share those devices, so with a user-set CUDA_VISIBLE_DEVICES run one GPU job at a
  time (`--resources gpu=1`), or unset it to get leases.
- Lease: the device count comes from `count`, else $DEPLOYBENCH_GPU_COUNT, else
  NVML. Each device has a lock file; a job holds `flock` on one for its lifetime
  (source "lease"). The kernel drops flocks when the holder dies, even by SIGKILL,
  so a crashed job never leaves a stale lease (pid files would).
- No devices (count 0): nothing to lease, CPU run (source "none").

The lock directory ($DEPLOYBENCH_LOCK_DIR, default /tmp/deploybench-gpu-locks) must
be on a local file system shared by all jobs of the host (flock on NFS is not
reliable).
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from deploybench.enums import LeaseSource
from deploybench.instruments import nvml

DEFAULT_LOCK_DIR = "/tmp/deploybench-gpu-locks"
LOCK_DIR_ENV = "DEPLOYBENCH_LOCK_DIR"
COUNT_ENV = "DEPLOYBENCH_GPU_COUNT"

# flock cannot wait for "any one of N files", so a job that finds every device busy
# re-tries all of them at this interval. 20 ms costs a few syscalls per waiter and is
# negligible next to a measure job (minutes); blocking on a single device instead
# would keep a job waiting while another device is free.
POLL_INTERVAL_S = 0.02


@dataclass(frozen=True)
class GpuLease:
    device_index: int | None  # host-wide (NVML/PCI order) index, if exactly one device
    visible_devices: str | None  # CUDA_VISIBLE_DEVICES while the lease is held
    source: LeaseSource

    def __repr__(self) -> str:
        # The job log's line names the source by its value (source='slurm'), as rows and tests read it.
        devices = f"device_index={self.device_index!r}, visible_devices={self.visible_devices!r}"
        return f"GpuLease({devices}, source={str(self.source)!r})"


class GpuLeaseTimeout(TimeoutError):
    """No device became free within the timeout."""


def gpu_count(count: int | None = None) -> int:
    """Devices to lease: `count`, else $DEPLOYBENCH_GPU_COUNT, else NVML, else 0."""
    if count is None and os.environ.get(COUNT_ENV, "").strip():
        count = int(os.environ[COUNT_ENV])
    if count is None:
        # NVML only, never torch: initialising CUDA here would fix the visible devices
        # before we set CUDA_VISIBLE_DEVICES.
        count = nvml.device_count()
    if count < 0:
        raise ValueError(f"GPU count must be >= 0, got {count}")
    return count


def _single_index(devices: str | None) -> int | None:
    if devices and devices.strip().isdigit():
        return int(devices)
    return None


@contextmanager
def lease_gpu(
    count: int | None = None,
    lock_dir: str | os.PathLike | None = None,
    timeout_s: float | None = None,
) -> Iterator[GpuLease]:
    """Hold a GPU for the body of the `with` block (meant to be the whole process).

    Sets CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER while held and restores them on
    exit. Waits while all devices are leased, never while one is free; raises
    GpuLeaseTimeout after `timeout_s` seconds (None: wait forever).
    """
    saved = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")}
    fd = None
    try:
        if os.environ.get("SLURM_JOB_ID"):
            lease = _slurm_lease()
        elif "CUDA_VISIBLE_DEVICES" in os.environ:
            visible = os.environ["CUDA_VISIBLE_DEVICES"]
            lease = GpuLease(_single_index(visible), visible, LeaseSource.USER)
            # Only a default: the user may have chosen the order on purpose.
            os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
        else:
            n = gpu_count(count)
            if n == 0:
                lease = GpuLease(None, None, LeaseSource.NONE)
            else:
                index, fd = _acquire(n, Path(lock_dir or _default_lock_dir()), timeout_s)
                lease = GpuLease(index, str(index), LeaseSource.LEASE)
                os.environ["CUDA_VISIBLE_DEVICES"] = str(index)
                os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        yield lease
    finally:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _default_lock_dir() -> str:
    return os.environ.get(LOCK_DIR_ENV) or DEFAULT_LOCK_DIR


def _slurm_lease() -> GpuLease:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    # SLURM_*_GPUS hold host-wide indices; CUDA_VISIBLE_DEVICES may be renumbered
    # from 0 when SLURM confines devices with cgroups.
    host_ids = os.environ.get("SLURM_STEP_GPUS") or os.environ.get("SLURM_JOB_GPUS")
    if visible is None and host_ids:
        visible = host_ids
        os.environ["CUDA_VISIBLE_DEVICES"] = visible
    if visible is not None:
        # SLURM numbers GPUs in PCI order (as NVML does).
        os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    return GpuLease(_single_index(host_ids or visible), visible, LeaseSource.SLURM)


def _acquire(n: int, lock_dir: Path, timeout_s: float | None) -> tuple[int, int]:
    """Lock the first free device of 0..n-1; return (index, fd holding the flock)."""
    try:
        lock_dir.mkdir(parents=True)
        os.chmod(lock_dir, 0o1777)  # like /tmp: shared by all users of the host
    except FileExistsError:
        pass
    fds = [_open_lock(lock_dir / f"gpu{i}.lock") for i in range(n)]
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        while True:
            for index, fd in enumerate(fds):
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as e:
                    if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                        raise
                    continue
                _write_owner(fd, index)
                fds[index] = -1  # keep this one open
                return index, fd
            if deadline is not None and time.monotonic() >= deadline:
                raise GpuLeaseTimeout(
                    f"no GPU free after {timeout_s:g} s: all {n} devices leased "
                    f"(locks in {lock_dir}; holders: {_owners(lock_dir, n)})"
                )
            time.sleep(POLL_INTERVAL_S)
    finally:
        for fd in fds:
            if fd >= 0:
                os.close(fd)


def _open_lock(path: Path) -> int:
    # World-writable so that jobs of other users on a shared host can lock too.
    # Python opens it close-on-exec: programs the job runs do not inherit the lease
    # (a fork without exec does, and then holds it until it exits too).
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        os.fchmod(fd, 0o666)
    except PermissionError:
        pass  # created by another user, who already set the mode
    return fd


def _write_owner(fd: int, index: int) -> None:
    # Diagnostics only: the flock, not this text, is the lease.
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid={os.getpid()} host={socket.gethostname()} gpu={index}\n".encode(), 0)


def _owners(lock_dir: Path, n: int) -> str:
    owners = []
    for i in range(n):
        try:
            owners.append((lock_dir / f"gpu{i}.lock").read_text().strip() or f"gpu={i} ?")
        except OSError:
            owners.append(f"gpu={i} ?")
    return "; ".join(owners)
