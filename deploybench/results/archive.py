"""The archive of every row a cell has had, and how a failed attempt keeps the cell's last good row.

results/archive/<cell_id>/<UTC time>.parquet holds each attempt's row (ok or failed) and each restore. Snakemake
deletes a job's output when the job starts, so a cell's last good row outlives a rerun only here. The measure
job (deploybench.cli) files every attempt's row here first, then:

- an attempt that failed (a failed row, or an exception) where the cell has a good row: the cell's file holds
  that last good row, marked as superseded (`valid` false with the reason, `superseded_by_failure`, and the
  `failed_attempt_*` columns: when, its failure kind, its error, its settings), and the job succeeds, so
  consolidation and the report show the last good figures beside the failed attempt's error until a good
  rerun replaces them. Without a good row, a failed row stands and an exception fails the job, as before;
- a job whose settings are exactly those of the last good row, after a failed attempt under other settings
  (the setting was reverted): the last good row is put back and nothing is measured. Its restore is archived
  too, so a later forced rerun of the same settings measures again.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from deploybench import HARNESS_VERSION
from deploybench.enums import Status
from deploybench.plan.spec import CellSpec
from deploybench.results.identity import identity_columns
from deploybench.results.schema import read_rows, write_row

log = logging.getLogger(__name__)

ARCHIVE_DIR = "results/archive"
_MAX_ERROR = 2000  # characters of an error kept in a row
_MAX_REASON_ERROR = 300  # of them quoted in the superseded row's reason


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _stamp(when: str) -> str:
    """'2026-12-01T10:20:30+00:00' -> '2026-12-01T102030Z' (a file name that sorts by time)."""
    return when.replace(":", "").replace("+0000", "Z")


def archive_row(row: dict, archive_dir: str | Path, when: str | None = None) -> Path:
    """File `row` under its cell, named by `when` (default: the row's started_at), never over another entry."""
    folder = Path(archive_dir) / row["cell_id"]
    base = _stamp(when or row.get("started_at") or utc_now())
    path, n = folder / f"{base}.parquet", 1
    while path.exists():
        path, n = folder / f"{base}.{n}.parquet", n + 1
    return write_row(row, path)


def history(archive_dir: str | Path, cell_id: str) -> list[dict]:
    """The cell's archived rows, oldest first; an entry that cannot be read is skipped with a warning."""
    entries = []
    for path in (Path(archive_dir) / cell_id).glob("*.parquet"):
        base, _, n = path.name.removesuffix(".parquet").partition(".")
        try:
            rows = read_rows(path)
        except Exception as exc:  # a torn file must not cost the other entries
            log.warning("%s: unreadable archive entry skipped (%s)", path, exc)
            continue
        entries += [((base, int(n) if n.isdigit() else 0), row) for row in rows]
    return [row for _, row in sorted(entries, key=lambda entry: entry[0])]


def is_good(row: dict) -> bool:
    return row.get("status") == Status.OK and not row.get("superseded_by_failure")


def last_good(rows: list[dict]) -> dict | None:
    return next((row for row in reversed(rows) if is_good(row)), None)


def supersede(good: dict, failed: dict) -> dict:
    """The last good row, marked as superseded by the failed attempt `failed`."""
    kind = failed.get("failure_kind") or "error"
    error = str(failed.get("error") or "no error text")
    if len(error) > _MAX_REASON_ERROR:
        error = error[: _MAX_REASON_ERROR - 3] + "..."
    reason = (
        f"superseded: the attempt of {failed.get('started_at')} failed ({kind}: {error}); these are the last good "
        f"figures, measured {good.get('started_at')}"
        + ("" if failed.get("spec_json") == good.get("spec_json") else " under other settings")
    )
    return {
        **good,
        "valid": False,
        "invalid_reasons": [*(good.get("invalid_reasons") or []), reason],
        "superseded_by_failure": True,
        "failed_attempt_at": failed.get("started_at"),
        "failed_attempt_kind": failed.get("failure_kind"),
        "failed_attempt_error": failed.get("error"),
        "failed_attempt_spec_json": failed.get("spec_json"),
    }


def after_attempt(row: dict, archive_dir: str | Path) -> dict:
    """Archive an attempt's row; return what the cell's file holds now: the row itself, or, for a failed
    attempt of a cell that has a good row, that good row marked as superseded by it."""
    earlier = history(archive_dir, row["cell_id"])
    archive_row(row, archive_dir)
    good = last_good(earlier) if row.get("status") == Status.FAILED else None
    return row if good is None else supersede(good, row)


def restorable(archive_dir: str | Path, cell: CellSpec, harness_version: str = HARNESS_VERSION) -> dict | None:
    """The last good row to put back instead of measuring: when the cell's latest attempt failed under other
    settings and the last good row was measured with exactly these (spec and harness version); else None."""
    rows = history(archive_dir, cell.cell_id)
    if not rows or rows[-1].get("status") != Status.FAILED:
        return None
    spec = (cell.spec_json(), harness_version)
    if (rows[-1].get("spec_json"), rows[-1].get("harness_version")) == spec:
        return None  # the failing settings again (a forced rerun): measure
    good = last_good(rows)
    if good is not None and (good.get("spec_json"), good.get("harness_version")) == spec:
        return good
    return None


def restore(good: dict, out: str | Path, archive_dir: str | Path) -> Path:
    """Put the last good row back as the cell's file, and note the restore in the archive."""
    archive_row(good, archive_dir, when=utc_now())
    return write_row(good, out)


def crash_row(cell: CellSpec, error: str, started_at: str) -> dict:
    """The row of an attempt that ended in an exception (or a killed process): identity, settings, the error."""
    return {
        **identity_columns(cell),
        "started_at": started_at,
        "status": Status.FAILED,
        "failure_kind": None,
        "error": error[:_MAX_ERROR],
        "valid": False,
        "invalid_reasons": ["failed: error"],
    }
