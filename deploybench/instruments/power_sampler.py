"""A power sampler: a daemon thread reading watts at ~100 Hz, integrated over real timestamps.

It cross-checks NVML's energy counter (`energy_meter`): the trapezoid rule over
``time.monotonic()`` stamps, so irregular reads do not bias the integral.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence


def integrate_trapezoid(times_s: Sequence[float], watts: Sequence[float]) -> float | None:
    """Joules from power samples at (possibly uneven) timestamps; None below two samples."""
    if len(times_s) != len(watts):
        raise ValueError(f"{len(times_s)} timestamps but {len(watts)} power samples")
    if len(times_s) < 2:
        return None
    total = 0.0
    for i in range(1, len(times_s)):
        dt = times_s[i] - times_s[i - 1]
        if dt < 0:
            raise ValueError("timestamps must not decrease")
        total += dt * (watts[i] + watts[i - 1]) / 2.0
    return total


class PowerSampler:
    """Calls ``read_power_w()`` every ``interval_s`` on a daemon thread.

    The thread sleeps in ``Event.wait`` between samples (cheap, and ``stop()`` wakes it
    at once). ``start()`` and ``stop()`` also take a sample each, so the samples bracket
    the caller's window. ``poll`` (optional) runs every ``poll_every`` samples on the same
    thread. A failing read stops sampling and is kept in ``error``. Cost: ~100 wake-ups/s,
    each holding the GIL for a few microseconds of NVML call.
    """

    def __init__(
        self,
        read_power_w: Callable[[], float],
        interval_s: float = 0.01,
        poll: Callable[[], None] | None = None,
        poll_every: int = 10,
    ):
        self._read = read_power_w
        self.interval_s = interval_s
        self._poll = poll
        self._poll_every = poll_every
        self.times: list[float] = []
        self.watts: list[float] = []
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> bool:
        if self.error is not None:
            return False
        try:
            before = time.monotonic()
            w = float(self._read())
            after = time.monotonic()
        except Exception as exc:  # noqa: BLE001 - the sampler must not take the run down
            self.error = f"{type(exc).__name__}: {exc}"
            return False
        # The read happened somewhere between the two clock readings.
        self.times.append((before + after) / 2.0)
        self.watts.append(w)
        return True

    def _run(self) -> None:
        n = 0
        next_t = time.monotonic()
        while True:
            # Fixed schedule, so slow reads do not stretch the period; no catch-up bursts.
            next_t = max(next_t + self.interval_s, time.monotonic())
            if self._stop.wait(next_t - time.monotonic()):
                return
            if not self._sample():
                return
            n += 1
            if self._poll is not None and n % self._poll_every == 0:
                with contextlib.suppress(Exception):  # must not stop power sampling
                    self._poll()

    def start(self) -> PowerSampler:
        self._sample()
        self._thread = threading.Thread(target=self._run, name="power-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> PowerSampler:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._sample()
        return self

    @property
    def n_samples(self) -> int:
        return len(self.watts)

    @property
    def window_s(self) -> float | None:
        return self.times[-1] - self.times[0] if len(self.times) >= 2 else None

    @property
    def energy_j(self) -> float | None:
        if self.error is not None:
            return None
        return integrate_trapezoid(self.times, self.watts)
