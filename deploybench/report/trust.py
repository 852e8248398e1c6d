"""The first screen: per machine, the figures to trust for every model entry and backend at the reference cell.

One table per machine (its GPU, else its host): a row per (model entry, backend) measured there at the reference
cell's context, generated tokens, decoding and dtype, batch 1, with TTFT, decode and e2e tok/s, peak memory and
energy per decode token, each with its 95% interval or, where none exists, its run range, and the verdict of what
paces the decode with its evidence. A host-paced figure is marked (‡, greyed) where it stands. The rows are any
backend's: a backend whose rows lack a figure shows a dash, and a figure no row has is left out. A serving engine is
a backend of its own: its concurrency-1 load point under generate()'s names (serving.as_generate), its timings
marked * where the server ran on CPU. Beside each table, the machine and the code the rows came from.
"""

from __future__ import annotations

from deploybench.report import captions, serving
from deploybench.report import quantities as Q
from deploybench.report.data import SERVING, ReportData, cell_label, cell_of, is_failed, machine
from deploybench.report.fmt import fmt_int, fmt_num, join, num
from deploybench.report.model import Row, Table, finish, metric_cell, metric_column, text_cell, text_column

FIGURES = ("ttft_ms", "decode_tps", "e2e_tps", "peak_allocated_bytes", "j_per_decode_token", "bound_by")
HELD = ("context", "gen", "decoding", "dtype")  # the reference cell's axes every row of the table shares
TIMINGS = ("ttft_ms", "decode_tps", "e2e_tps")


def held_axes(data: ReportData) -> dict:
    """The reference cell's context, gen, decoding and dtype; the context some row has where the reference's has
    none (the largest)."""
    ref = data.reference() or {}
    held = {a: ref.get(a) for a in HELD}
    have = [cell_of(r) for r in data.batch1 if not is_failed(r)]
    if not any(all(c[a] == v for a, v in held.items() if v is not None) for c in have) and have:
        held["context"] = max(c["context"] or 0 for c in have)
    return held


def row_order(data: ReportData):
    backends = {b: i for i, b in enumerate(("eager", "compiled", "compiled_loop", *SERVING))}
    models = {m: i for i, m in enumerate(data.configured_models)}
    return lambda r: (
        models.get(r["model"], len(models)),
        str(r["model"]),
        backends.get(r["backend"], 9),
        str(r["backend"]),
    )


def tables(data: ReportData) -> list[Table]:
    """One table per machine, in the order of the rows (the machine with most rows first)."""
    return data.once("trust", lambda: _tables(data))


def _tables(data: ReportData) -> list[Table]:
    held = held_axes(data)
    rows = [r for r in data.batch1 if all(cell_of(r)[a] == v for a, v in held.items() if v is not None)]
    by: dict[str, list] = {}
    for r in sorted(rows, key=row_order(data)):
        by.setdefault(machine(r), []).append(r)
    groups = sorted(by.items(), key=lambda kv: -len(kv[1]))
    failed = [(name, r) for name, group in groups for r in group if all(is_failed(x) for x in group)]
    out = []
    for i, (name, group) in enumerate((name, group) for name, group in groups if not all(map(is_failed, group))):
        tid = "table-trust" if i == 0 else f"table-trust-{i + 1}"
        cols = [text_column("model", "Model"), text_column("backend", "Backend")]
        cols += [metric_column(Q.get(n)) for n in FIGURES]
        cols[-1].label, cols[-1].width = "decode paced by", 0.2
        title = f"What to trust on {group[0].get('device_name') or 'this machine'} ({name})"
        caption = captions.text("tables", "table-trust", fixed=cell_label({a: v for a, v in held.items() if v}))
        t = Table(tid, title, caption, cols, lead=machine_words(group))
        for r in group:
            engine = f" {r['engine_version']}" if r["backend"] in SERVING and r.get("engine_version") else ""
            cells = {"model": text_cell(r["model"]), "backend": text_cell(r["backend"] + engine)}
            cells |= {n: metric_cell(serving.as_generate(r), Q.get(n), failed_text=True) for n in FIGURES}
            for n in TIMINGS if serving.cpu_timed(r) else ():
                serving.mark_cpu(cells[n])
            serving.mark_memory(r, cells["peak_allocated_bytes"])
            t.rows.append(Row(cells, key={"model": r["model"], "backend": r["backend"]}))
        out.append(finish(t, list(FIGURES[:-1]), "no figures measured"))
        if engines := list(dict.fromkeys(r["backend"] for r in group if r["backend"] in SERVING)):
            t.notes.append(captions.text("serving", "trust", engines=", ".join(engines)))
        t.notes += serving.marks(t)
        if not any(c.interval or c.runs for row in t.rows for c in row.cells.values()):
            t.notes.append(captions.text("trust", "no_intervals"))
    if out and failed:  # a machine whose every cell here failed: said under the first table
        said = "; ".join(
            f"{r['model']} {r['backend']} on {name}: {r.get('failure_kind') or 'error'}" for name, r in failed
        )
        out[0].notes.append(captions.text("trust", "failed_elsewhere", said=said))
    return out


def _distinct(rows, col, how=str) -> str | None:
    return join(dict.fromkeys(how(r[col]) for r in rows if r.get(col) not in (None, "")))


def code(rows: list[dict]) -> str:
    """'library sources sha256 943392f2…, harness 3 (git 081058214b92 with uncommitted changes: ...)'."""
    said = []
    if digest := _distinct(rows, "source_sha256", lambda d: d[:12]):
        said.append(f"library sources sha256 {digest}")
    if harness := _distinct(rows, "harness_version"):
        said.append(f"harness {harness}")
    revs = sorted({str(r["code_revision"]) for r in rows if r.get("code_revision")})
    clean = [v[:12] for v in revs if not v.endswith("+dirty")]
    dirty = [v.removesuffix("+dirty")[:12] for v in revs if v.endswith("+dirty")]
    if clean:
        said.append(f"git {', '.join(clean)}")
    if dirty:
        said.append(captions.text("trust", "dirty", revs=", ".join(dirty)))
    return "; ".join(said) or "not recorded"


def machine_words(rows: list[dict]) -> str:
    """The machine and software a table's rows came from, in one line."""
    first = rows[0]
    cores = f"{fmt_int(first['cpu_count'])} cores of " if num(first.get("cpu_count")) else ""
    host = f"{cores}{first.get('cpu_model') or 'an unrecorded CPU'}"
    if not first.get("device_uuid"):  # no GPU: the CPU measured everything
        gpu, uuid, host = captions.text("trust", "cpu"), "", f"{host} ({first.get('hostname') or 'host unrecorded'})"
    else:
        gpu, uuid = first.get("device_name") or "GPU", f" {first['device_uuid']}"
    power = f", power limit {fmt_num(first['power_limit_w'], 3)} W" if num(first.get("power_limit_w")) else ""
    stack = ", ".join(
        f"{k} {first[c]}"
        for k, c in (("driver", "driver_version"), ("torch", "torch_version"), ("transformers", "transformers_version"))
        if first.get(c)
    )
    dates = sorted(str(r["started_at"])[:16].replace("T", " ") for r in rows if r.get("started_at"))
    when = f"; measured {dates[0]}" + (f" to {dates[-1]}" if dates[-1] != dates[0] else "") + " UTC" if dates else ""
    return f"{gpu}{uuid}{power}{'; host ' if uuid else ': '}{host}; {stack}{when}. Code: {code(rows)}."
