"""Does the serving client send each request when it is due? A benchmark, not a test.

Runs the real load point (deploybench.engines.serving.point.measure_load_point: CompletionClient, the closed
loop, TokenPrompts token-id prompts, the /metrics sampler), preceded by the warm-up deploybench.measure.serving
runs (N requests N at a time), against a stand-in OpenAI-compatible server in a process of its own (the fake
server of the unit tests, tests/fixtures/fake_openai_server.py, its streams waiting for a global engine step):
every stream emits one token per step and requests that arrive within one step start, and so end, together,
in waves of up to N as a batching engine's do. The step grows with the concurrency as vLLM's did on the H100
for gpt-oss-20b at context 2048 (about 4 ms + 0.43 ms x N: 4 ms at 1, 30 ms at 64, 114 ms at 256).

Per concurrency and repeat it prints the client's figures as load.client_figures computes them (send lag
p50 / p99 / max, the process's and the event loop's CPU fraction, whether the point is invalid) and, to
say where the lag comes from: the send lag of the first wave (the first N requests, all due at the start)
and of the rest, the hand-off (the server's arrival stamp, after it parsed the body, minus the client's
`sent`) and the done lag (the client's `done` minus the moment the server wrote the stream's last byte;
both stamps are CLOCK_MONOTONIC of one machine). The server's own figures are diagnostic only.

    .venv/bin/python benchmarks/client_send_lag.py --concurrency 1 16 64 256 --repeats 2 --out lag.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.fixtures: the unit tests' fake server

from deploybench.engines.serving.client import VLLM_FLAGS, CompletionClient  # noqa: E402
from deploybench.engines.serving.load import Sender, closed_loop  # noqa: E402
from deploybench.engines.serving.point import LoadSpec, measure_load_point  # noqa: E402
from deploybench.engines.serving.token_prompts import TokenPrompts  # noqa: E402
from deploybench.report.fmt import fmt_int, fmt_num  # noqa: E402
from deploybench.stats import percentile  # noqa: E402
from tests.fixtures.fake_openai_server import FakeOpenAIServer, tokens_script  # noqa: E402

VOCAB = 201088  # gpt-oss-20b (o200k_harmony)
SPECIAL_IDS = (199998, 199999, 200002, 200012, 200018)  # a few of its special ids: never drawn


def default_step_ms(concurrency: int) -> float:
    return 4.0 + 0.43 * concurrency


# ---------------------------------------------------------------- the server (its own process)


class _Count:
    """FakeOpenAIServer keeps every body; this keeps their count only (4000 parsed 2048-id prompts are 300 MB)."""

    def __init__(self):
        self.n = 0

    def append(self, _body) -> None:
        self.n += 1

    def __len__(self) -> int:
        return self.n


class StepServer(FakeOpenAIServer):
    """The fake server with one global engine step: each stream's token k goes out on the k-th step after the
    request arrived, so requests that arrive within one step finish on the same step."""

    def __init__(self, gen: int, step_s: float):
        super().__init__(lambda i, body: tokens_script([1] * gen, delay_s=0.0), wait=self._next_step)
        self.bodies = _Count()
        self.step_s = step_s
        self.times: dict[str, tuple[float, float]] = {}  # "id0,id1" of the prompt: (arrived, last byte written)
        self._tick: asyncio.Future | None = None

    async def _next_step(self, _step) -> None:
        """How the base class's stream (usage on every chunk, the final usage, [DONE]) waits before each chunk:
        for the next step, not for the step's delay."""
        await asyncio.shield(self._tick)

    async def _ticker(self) -> None:
        loop = asyncio.get_running_loop()
        t = time.monotonic()
        while True:
            t += self.step_s
            await asyncio.sleep(max(0.0, t - time.monotonic()))
            tick, self._tick = self._tick, loop.create_future()
            tick.set_result(None)

    async def _completion(self, writer, body: dict) -> bool:
        arrived = time.monotonic()
        try:
            return await super()._completion(writer, body)
        finally:
            prompt = body["prompt"]
            self.times[f"{prompt[0]},{prompt[1]}"] = (arrived, time.monotonic())


async def serve(gen: int, step_s: float) -> None:
    server = StepServer(gen, step_s)
    server._tick = asyncio.get_running_loop().create_future()
    async with server:
        ticker = asyncio.create_task(server._ticker())
        print(server.port, flush=True)
        await asyncio.to_thread(sys.stdin.read)  # until the benchmark closes our stdin
        ticker.cancel()
        print(json.dumps(server.times), flush=True)


# ---------------------------------------------------------------- the client (this process)


def _stats(values: list[float], prefix: str) -> dict:
    return {
        f"{prefix}_p50": percentile(values, 50),
        f"{prefix}_p99": percentile(values, 99),
        f"{prefix}_max": max(values) if values else None,
    }


async def measure(url: str, concurrency: int, args) -> tuple[dict, list]:
    warm = TokenPrompts(args.context, VOCAB, SPECIAL_IDS, seed=1)
    prompts = TokenPrompts(args.context, VOCAB, SPECIAL_IDS, seed=2)
    spec = LoadSpec("concurrency", concurrency, n_requests=args.n_requests, duration_s=args.duration_s)
    async with CompletionClient(url, VLLM_FLAGS, "fake", clock=time.monotonic) as client:
        await closed_loop(Sender(client, warm, args.gen), concurrency, concurrency, clock=client.clock)
        point = await measure_load_point(client, prompts, args.gen, spec, server_metrics=True)
    keys = {r.index: f"{prompts[r.index][0]},{prompts[r.index][1]}" for r in point.records}
    return point, keys


def run_point(concurrency: int, args) -> dict:
    step_ms = args.step_ms if args.step_ms is not None else default_step_ms(concurrency)
    command = [sys.executable, __file__, "--serve", "--gen", str(args.gen), "--step-ms", str(step_ms)]
    server = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        point, keys = asyncio.run(measure(f"http://127.0.0.1:{port}", concurrency, args))
        times, _ = server.communicate(timeout=60)
        server_times = json.loads(times)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    records = point.records
    f = point.figures
    lag = {r.index: r.send_lag_s * 1000 for r in records if r.send_lag_s is not None}
    handoff = [(server_times[keys[i]][0] - r.sent) * 1000 for i, r in enumerate(records) if keys[i] in server_times]
    done = [(r.done - server_times[keys[i]][1]) * 1000 for i, r in enumerate(records) if keys[i] in server_times]
    return {
        "concurrency": concurrency,
        "step_ms": step_ms,
        "requests": len(records),
        "failed": f["requests_failed"],
        "load_wall_s": f["load_wall_s"],
        "client_send_lag_ms_p50": f["client_send_lag_ms_p50"],
        "client_send_lag_ms_p99": f["client_send_lag_ms_p99"],
        "client_send_lag_ms_max": f["client_send_lag_ms_max"],
        "client_cpu_fraction": f["client_cpu_fraction"],
        "client_loop_cpu_fraction": f["client_loop_cpu_fraction"],
        "invalid": "; ".join(point.invalid_reasons) or None,
        **_stats([v for i, v in lag.items() if i < concurrency], "first_wave_lag_ms"),
        **_stats([v for i, v in lag.items() if i >= concurrency], "later_lag_ms"),
        **_stats(handoff, "handoff_ms"),
        **_stats(done, "done_lag_ms"),
    }


COLUMNS = [
    ("N", "concurrency"),
    ("reqs", "requests"),
    ("lag p50", "client_send_lag_ms_p50"),
    ("lag p99", "client_send_lag_ms_p99"),
    ("lag max", "client_send_lag_ms_max"),
    ("cpu", "client_cpu_fraction"),
    ("loop cpu", "client_loop_cpu_fraction"),
    ("wave1 max", "first_wave_lag_ms_max"),
    ("later p99", "later_lag_ms_p99"),
    ("later max", "later_lag_ms_max"),
    ("handoff p99", "handoff_ms_p99"),
    ("done p99", "done_lag_ms_p99"),
    ("done max", "done_lag_ms_max"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--context", type=int, default=2048)
    parser.add_argument("--gen", type=int, default=64)
    parser.add_argument("--duration-s", type=float, default=30.0, help="as serving-full: no request sent after it")
    parser.add_argument("--n-requests", type=int, default=4000)
    parser.add_argument("--step-ms", type=float, default=None, help="the engine step (default 4 + 0.43 x N ms)")
    parser.add_argument("--out", help="write every point's figures here (JSON)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.gen, args.step_ms / 1000))
        return
    rows = []
    print("  ".join(f"{name:>11}" for name, _ in COLUMNS) + "  invalid", flush=True)
    for concurrency in args.concurrency:
        for _ in range(args.repeats):
            row = run_point(concurrency, args)
            rows.append(row)
            texts = (fmt_int(v) if isinstance(v := row[key], int) else fmt_num(v, 3) for _, key in COLUMNS)
            cells = "  ".join(f"{text:>11}" for text in texts)
            print(f"{cells}  {row['invalid'] or ''}", flush=True)
            if row["failed"]:
                print(f"  {row['failed']} requests failed", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
