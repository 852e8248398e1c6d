"""The study's figures as its paper printed them, and the CSV each came from.

arXiv 2508.16700 released several CSVs that measure the same cell in separate runs. Its Table 1 prints TTFT and
"TPOT" (tok/s) from its energy runs (energy/energy_*_fixed.csv: one raw-text prompt, 5 runs), while the importer
takes them from its latency runs (latency/latency_*_universal.csv, 10 runs), which its e2e percentiles and APE
table use. So the report reads the energy CSVs' two figures here (through the importer's strict reader), prints them
as the study's, and sets the latency CSV's value beside them. Every other figure has one source, named from the
imported row's files (its spec_json). Without the CSVs (another checkout), the imported figure stands, saying so.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

from deploybench.report.data import ReportData, cell_of
from deploybench.results import importer

ROOT = Path(__file__).resolve().parents[2]
FORMAT = importer.ARXIV
# The table each figure comes from in the study's release (its importer's kinds), and the Table 1 figures: our
# column -> the energy CSV's column.
KIND = {"ttft_ms": "latency", "e2e_ms_p50": "latency", "e2e_ms_p95": "latency", "e2e_tps": "latency"}
KIND |= {"peak_allocated_bytes": "memory", "tokens_per_j": "energy", "j_per_1k_tokens": "energy"}
KIND |= {"ape_e2e_tps_per_active_b": "params"}
TABLE_1 = {"ttft_ms": "ttft_ms", "e2e_tps": "decode_tokens_per_second"}


def _folder(path: str) -> Path:
    folder = Path(path)
    return folder if folder.is_absolute() or folder.exists() else ROOT / folder


@cache
def _energy(folder: Path, model_map: tuple) -> dict:
    """(model, context, gen) -> {our column: (value, file)} from the energy CSVs of one imported folder."""
    out, names = {}, dict(model_map)
    for path in sorted(folder.rglob("*.csv")):
        rel = path.relative_to(folder).as_posix()
        if not re.fullmatch(importer._FILES["energy"], rel):
            continue
        df = importer.read_csv_strict(path, importer._COLUMNS["energy"], f"{FORMAT} energy")
        for r in df.to_dict("records"):
            key = (names.get(r["model"], r["model"]), int(r["context_length"]), int(r["gen_tokens"]))
            out[key] = {ours: (float(r[theirs]), rel) for ours, theirs in TABLE_1.items()}
    return out


def table_1(data: ReportData) -> tuple[dict, str | None]:
    """The energy CSVs' TTFT and tok/s of every imported table of the study's format, and why none where none."""
    tables = [t for t in (data.config.analysis.external_tables if data.config else []) if t.format == FORMAT]
    out, why = {}, None
    for t in tables:
        try:
            found = _energy(_folder(t.path), tuple(sorted((t.model_map or {}).items())))
        except (OSError, importer.ImportFormatError) as exc:
            why = f"{t.path}: {exc}"
            continue
        out |= {(f"import:{t.name}", *key): v for key, v in found.items()}
    return out, why if not out else None


def files(r: dict) -> list[str]:
    try:
        return list(json.loads(r.get("spec_json") or "{}").get("files") or [])
    except (TypeError, ValueError):
        return []


def source(r: dict, name: str) -> str | None:
    """The study's file an imported figure came from (None where the row does not list its files)."""
    pattern = importer._FILES.get(KIND.get(name, ""))
    return next((f for f in files(r) if pattern and re.fullmatch(pattern, f)), None)


def figure(data: ReportData, r: dict, name: str, imported: float | None) -> tuple[float | None, str | None, tuple]:
    """(the figure as printed, its file, (the other CSV's value, its file) or ()) for an imported row."""
    found, _ = data.once("study-table-1", lambda: table_1(data))
    cell = cell_of(r)
    printed = found.get((r.get("source"), r["model"], cell["context"], cell["gen"]), {}).get(name)
    if printed is None:
        return imported, source(r, name), ()
    other = (imported, source(r, name)) if imported is not None and abs(printed[0] - imported) > 1e-9 else ()
    return printed[0], printed[1], other


RUNS = {"latency": "latency runs", "memory": "memory runs", "energy": "energy runs", "params": "APE table"}


def runs(path: str | None) -> str:
    """'energy runs': which of the study's tables a file is (its kind), for a narrow column; the file in a note."""
    if not path:
        return "—"
    kind = next((k for k, rx in importer._FILES.items() if re.fullmatch(rx, path)), None)
    return RUNS.get(kind, path)
