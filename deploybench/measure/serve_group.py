"""The serve job: one server group's load points, its server started once, each point its own cell file.

`run(job, marker)` (scripts/serve_group.py, from the `serve` rule) goes through the group's load points
(deploybench.plan.serving.ServeJob) and skips each whose cell file already holds a good row of exactly its settings
(spec_json and harness version: `measured_row`), or puts back its last good row where a failed attempt under other
settings was reverted (deploybench.results.archive.restorable). Only if a point is left does it take the GPU lease,
write the model directory, start the server (vllm, transformers_serve; an openai endpoint is only loaded) and
measure the points left, one after another on that one server (deploybench.measure.serving), writing each point's
row as soon as it is measured (and archiving it: a failed attempt keeps the point's last good row). The server is
stopped on every exit path: the `with`, SIGTERM (turned into SystemExit here, so every `finally` runs), and the
job's death by SIGKILL (the server's launcher notices its owner is gone). A server that cannot start, or dies,
gives failed rows for the points it left, with the tail of its log. Last, the marker `results/serving/<group>.json`
(the rule's one output) says which points were measured, kept and restored, and how often the server started.

Snakemake deletes a job's declared outputs before the job runs; the point files are not declared (the job keeps
the ones it can), so a point file deleted by hand comes back with `snakemake --forcerun <marker>`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import tempfile
from pathlib import Path

from deploybench import HARNESS_VERSION
from deploybench.engines.serving import deploy
from deploybench.engines.serving.errors import ServingError
from deploybench.engines.serving.server import ServerProcess
from deploybench.enums import Backend, Device, FailureKind
from deploybench.instruments.nvml import UnavailableDevice
from deploybench.instruments.server_gpu import server_device
from deploybench.measure import serving
from deploybench.measure.serving import Target
from deploybench.plan import naming
from deploybench.plan.serving import ServeJob
from deploybench.plan.spec import CellSpec
from deploybench.results import archive
from deploybench.results.schema import read_rows, write_atomically, write_row

log = logging.getLogger(__name__)


def measured_row(path: str | Path, spec: CellSpec, harness_version: str = HARNESS_VERSION) -> dict | None:
    """The good row `path` holds for exactly these settings, or None (no file, a torn file, other settings, another
    harness version, a failed or superseded row): then the point is measured."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        rows = read_rows(path)
    except Exception as exc:  # noqa: BLE001 - a torn file is remeasured, not fatal
        log.warning("%s: unreadable (%s): measuring the point again", path, exc)
        return None
    for row in rows:
        if (row.get("spec_json"), row.get("harness_version")) == (spec.spec_json(), harness_version):
            return row if archive.is_good(row) else None
    return None


@contextlib.contextmanager
def sigterm_exits():
    """SIGTERM raises SystemExit in the main thread, so the server's `with` and every `finally` run."""

    def exit_on(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_on)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def resolve_device(requested: str, lease) -> str:
    """measurement.device for a server: auto is cuda where the job holds a GPU, cpu otherwise."""
    has_gpu = lease.visible_devices not in (None, "")
    if requested == Device.CUDA and not has_gpu:
        raise RuntimeError("measurement.device is cuda, but the serve job holds no GPU (CUDA_VISIBLE_DEVICES, lease)")
    return Device.CUDA if requested != Device.CPU and has_gpu else Device.CPU


class GroupRun:
    """What one run of the serve job did, for its marker and its log."""

    def __init__(self, job: ServeJob, archive_dir: str | None):
        self.job, self.archive_dir = job, archive_dir
        self.kept: list[str] = []
        self.restored: list[str] = []
        self.measured: list[str] = []
        self.server_starts = 0
        self.server: dict | None = None
        self.status: dict[str, str] = {}

    def write(self, spec: CellSpec, row: dict) -> None:
        """Keep a point's row: archived, and its file (or its last good row, after a failed attempt)."""
        if self.archive_dir:
            row = archive.after_attempt(row, self.archive_dir)
        write_row(row, naming.cell_path(spec.cell_id))
        self.measured.append(spec.cell_id)
        self.status[spec.cell_id] = row["status"]
        log.info("%s: status=%s valid=%s %s", spec.cell_id, row["status"], row.get("valid"), row.get("error") or "")

    def marker(self) -> dict:
        return {
            "group": self.job.group,
            "harness_version": self.job.harness_version,
            "finished_at": archive.utc_now(),
            "server_starts": self.server_starts,
            "server": self.server,
            "measured": self.measured,
            "kept": self.kept,
            "restored": self.restored,
            "cells": [
                {"cell_id": p.cell_id, "path": naming.cell_path(p.cell_id), "status": self.status.get(p.cell_id)}
                for p in self.job.points
            ],
        }


def run(job: ServeJob, marker: str | Path, archive_dir: str | None = archive.ARCHIVE_DIR) -> dict:
    """Measure what the group lacks, then write its marker; returns the marker's content."""
    done = GroupRun(job, archive_dir)
    todo = []
    for spec in job.points:
        good = measured_row(naming.cell_path(spec.cell_id), spec)
        if good is not None:
            done.kept.append(spec.cell_id)
            done.status[spec.cell_id] = good["status"]
            continue
        restorable = archive.restorable(archive_dir, spec) if archive_dir else None
        if restorable is not None:
            archive.restore(restorable, naming.cell_path(spec.cell_id), archive_dir)
            done.restored.append(spec.cell_id)
            done.status[spec.cell_id] = restorable["status"]
            continue
        todo.append(spec)
    log.info(
        "%s: %d load points to measure, %d kept, %d restored", job.group, len(todo), len(done.kept), len(done.restored)
    )
    if todo:
        from deploybench.measure.gpu_lease import lease_gpu

        with sigterm_exits(), lease_gpu() as lease, tempfile.TemporaryDirectory(prefix="deploybench-serve-") as tmp:
            log.info("GPU lease: %s", lease)
            device = resolve_device(todo[0].measurement.device, lease)
            with _gpu(todo[0], lease, device) as dev:
                _measure(done, todo, dev, device, Path(tmp))
    content = done.marker()
    path = Path(marker)
    write_atomically({path: lambda tmp: tmp.write_text(json.dumps(content, indent=2) + "\n")})
    return content


def _gpu(spec: CellSpec, lease, device: str):
    """The NVML device under the server; none for an endpoint started elsewhere (it may run on another GPU or host)."""
    if not spec.backend.starts_server:
        return UnavailableDevice("an openai endpoint runs where its starter put it: no GPU figures")
    return server_device(lease, device)


def _measure(done: GroupRun, todo: list[CellSpec], dev, device: str, tmp: Path) -> None:
    first = todo[0]
    environment = serving.environment_columns(dev, device)
    served = deploy.prepare_model(first, tmp)
    rows = {spec.cell_id: serving.base_row(spec, environment, {}) for spec in todo}
    if served.max_positions and first.context + first.gen > served.max_positions:
        why = f"context {first.context} + gen {first.gen} exceeds max_position_embeddings {served.max_positions}"
        for spec in todo:
            done.write(spec, serving.failed_point(rows[spec.cell_id], FailureKind.CONTEXT_TOO_LONG, why))
        return
    if not first.backend.starts_server:  # openai: an endpoint someone else started
        endpoint = first.engine
        columns = {
            "engine_name": str(Backend.OPENAI),
            "engine_url": endpoint.url,
            "engine_started_by": endpoint.started_by,
        }
        target = Target(endpoint.url, endpoint.served_model_name or first.model.id, columns, metrics=True)
        _points(done, todo, served, target, dev, rows)
        return
    log_path = naming.SERVER_LOG.format(group=done.job.group)
    config = deploy.server_config(first, served, log_path, done.job.startup_timeout_s)
    server = ServerProcess(config)
    try:
        try:
            info = server.start()
        except ServingError as exc:
            columns = serving.engine_columns(server.info, config.engine_args, "") if server.info else {}
            log.error("%s: the server did not start: %s", done.job.group, exc.reason)
            for spec in todo:
                row = rows[spec.cell_id] | columns
                done.write(spec, serving.failed_point(row, serving.failure_kind(exc), exc))
            return
        done.server_starts += 1
        started_by = f"deploybench serve job (server log {info.log_path})"
        columns = serving.engine_columns(info, config.engine_args, started_by)
        done.server = {k: columns[k] for k in ("engine_name", "engine_version", "engine_startup_s", "engine_command")}
        log.info(
            "server ready in %.1f s: %s (process group %s: %s)",
            info.startup_s,
            info.base_url,
            server.pgid,
            server.members(),
        )
        target = Target(
            info.base_url,
            info.served_model_name,
            columns,
            metrics=info.capabilities.metrics_path is not None,
            alive=server.alive,
            pids=server.members,
            log_tail=server.log_tail,
        )
        _points(done, todo, served, target, dev, rows)
    finally:
        server.stop()


def _points(done: GroupRun, todo: list[CellSpec], served, target: Target, dev, rows: dict) -> None:
    """Each point on the one server; once it is dead, the rest are failed rows without a try."""
    died = None
    for spec in todo:
        row = rows[spec.cell_id] | target.columns
        if died is not None:
            done.write(spec, serving.failed_point(row, FailureKind.SERVER_DIED, died, target.log_tail()))
            continue
        result = serving.measure_point(spec, served, target, dev, row)
        done.write(spec, result)
        if not target.alive():
            died = f"the server died during load point {spec.cell_id}"


def serving_cells(markers) -> list[str]:
    """The cell files the serve jobs' markers list (what consolidation reads); a missing one is named with the
    command that measures it again."""
    paths = []
    for marker in markers:
        content = json.loads(Path(marker).read_text())
        for cell in content["cells"]:
            if not Path(cell["path"]).is_file():
                raise FileNotFoundError(
                    f"{cell['path']}: the serve job of {content['group']} wrote it, and it is gone. Measure it again "
                    f"with: snakemake --forcerun {marker}"
                )
            paths.append(cell["path"])
    return paths
