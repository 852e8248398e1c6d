"""CPU tests of deploybench.instruments.power_sampler: the trapezoid integral and the real sampler thread."""

import threading
import time

import pytest

from deploybench.instruments.power_sampler import PowerSampler, integrate_trapezoid

# ------------------------------------------------------------------ trapezoid


def test_trapezoid_constant_power():
    assert integrate_trapezoid([0.0, 1.0, 2.0], [100.0, 100.0, 100.0]) == 200.0


def test_trapezoid_uneven_timestamps_and_ramp():
    # Linear ramp 0 -> 300 W over 3 s at uneven times: exactly 450 J under the trapezoid.
    t = [0.0, 0.1, 1.7, 3.0]
    w = [100.0 * x for x in t]
    assert integrate_trapezoid(t, w) == pytest.approx(450.0, rel=1e-12)


def test_trapezoid_step_uses_real_timestamps():
    # 100 W for 0.5 s, then 300 W for 0.1 s: (0.5*100) + (0.1*(100+300)/2) = 70 J.
    assert integrate_trapezoid([0.0, 0.5, 0.6], [100.0, 100.0, 300.0]) == pytest.approx(70.0)


def test_trapezoid_too_few_samples_is_none_not_zero():
    assert integrate_trapezoid([], []) is None
    assert integrate_trapezoid([1.0], [50.0]) is None


def test_trapezoid_rejects_bad_input():
    with pytest.raises(ValueError, match="timestamps"):
        integrate_trapezoid([0.0, 1.0], [1.0])
    with pytest.raises(ValueError, match="decrease"):
        integrate_trapezoid([1.0, 0.5], [1.0, 1.0])


# ------------------------------------------------------------------ sampler thread


def test_sampler_constant_power_real_thread():
    s = PowerSampler(lambda: 150.0, interval_s=0.01).start()
    assert s._thread.daemon
    time.sleep(0.5)
    s.stop()
    assert not s._thread.is_alive()
    assert s.error is None
    assert 0.5 <= s.window_s < 1.0  # a loaded host may oversleep, not by half a second
    assert s.energy_j == pytest.approx(150.0 * s.window_s, rel=1e-9)
    # ~100 Hz: 51 samples nominal; allow for a loaded CI box but not a busy loop.
    assert 5 <= s.n_samples <= 70
    assert all(b > a for a, b in zip(s.times, s.times[1:], strict=False))


def test_sampler_ramp_uses_real_timestamps():
    # Power is a linear function of the real clock and reads are irregular (some slow),
    # so only correct timestamps make the trapezoid exact.
    t0 = time.monotonic()
    calls = [0]

    def ramp_w():
        calls[0] += 1
        slow = 0.015 if calls[0] % 4 == 0 else 0.0
        time.sleep(slow)  # every 4th read takes 30 ms, the value taken mid-way
        t = time.monotonic()
        time.sleep(slow)
        return 100.0 + 400.0 * (t - t0)

    s = PowerSampler(ramp_w, interval_s=0.01).start()
    time.sleep(0.4)
    s.stop()
    a, b = s.times[0] - t0, s.times[-1] - t0
    exact = 100.0 * (b - a) + 200.0 * (b * b - a * a)
    # Integrating at nominal 10 ms steps would be off by ~20%; real timestamps are exact
    # up to sleep jitter (a ms of timestamp error is ~0.4 W).
    assert s.energy_j == pytest.approx(exact, rel=0.01)
    assert max(b2 - b1 for b1, b2 in zip(s.times, s.times[1:], strict=False)) > 0.025


def test_sampler_stops_promptly_even_with_long_interval():
    s = PowerSampler(lambda: 1.0, interval_s=5.0).start()
    t = time.monotonic()
    s.stop()
    assert time.monotonic() - t < 0.5
    assert not s._thread.is_alive()
    assert s.n_samples == 2  # start and stop samples only


def test_sampler_read_error_stops_sampling_and_reports():
    n = [0]

    def flaky():
        n[0] += 1
        if n[0] > 5:
            raise RuntimeError("power read failed")
        return 10.0

    s = PowerSampler(flaky, interval_s=0.005).start()
    time.sleep(0.2)
    assert not s._thread.is_alive()  # the thread ended itself
    s.stop()
    assert s.error == "RuntimeError: power read failed"
    assert s.n_samples == 5
    assert s.energy_j is None


def test_sampler_poll_runs_on_sampler_thread():
    threads = set()
    s = PowerSampler(
        lambda: 1.0,
        interval_s=0.005,
        poll=lambda: threads.add(threading.current_thread().name),
        poll_every=2,
    )
    s.start()
    time.sleep(0.1)
    s.stop()
    assert threads == {"power-sampler"}
