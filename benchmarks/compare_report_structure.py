"""Compare the structure of two rendered reports: table ids, row counts, skipped tables, figure ids.

    python benchmarks/compare_report_structure.py OLD_REPORT_DIR NEW_REPORT_DIR

Each folder holds report.html (and manifest.json where the renderer wrote one). The structure is
read from the HTML (every element with data-kind="table" or "figure": its id, whether it is
marked skipped, and a table's body rows) and, where both folders have a manifest, from the
manifests too (row counts of skipped tables included). Prints one line per difference and exits
1 if there is any, 0 if the structures agree.
"""

from __future__ import annotations

import argparse
import json
import sys
from html.parser import HTMLParser
from pathlib import Path


class _Structure(HTMLParser):
    """Tables and figures of report.html, in page order: id -> {kind, skipped, rows}."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.items: dict[str, dict] = {}
        self.stack: list[tuple[str, str | None]] = []  # (tag, item id it opened or None)
        self.in_body: list[str] = []  # ids whose <tbody> is open

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        opened = None
        if a.get("data-kind") in ("table", "figure") and a.get("id"):
            opened = a["id"]
            self.items[opened] = {"kind": a["data-kind"], "skipped": a.get("data-skipped") == "true", "rows": 0}
        current = next((i for _, i in reversed(self.stack) if i), None)
        if tag == "tbody" and current:
            self.in_body.append(current)
        if tag == "tr" and self.in_body and self.in_body[-1] == current:
            self.items[current]["rows"] += 1
        if tag not in ("br", "meta", "img", "input", "hr", "link", "col", "wbr"):
            self.stack.append((tag, opened))

    def handle_endtag(self, tag):
        while self.stack:
            t, _ = self.stack.pop()
            if t == tag:
                break
        if tag == "tbody" and self.in_body:
            self.in_body.pop()


def from_html(folder: Path) -> dict[str, dict]:
    parser = _Structure()
    parser.feed((folder / "report.html").read_text(encoding="utf-8"))
    return parser.items


def from_manifest(folder: Path) -> dict[str, dict] | None:
    path = folder / "manifest.json"
    if not path.exists():
        return None
    m = json.loads(path.read_text(encoding="utf-8"))
    out = {tid: {"kind": "table", "skipped": bool(t["skipped"]), "rows": t["rows"]} for tid, t in m["tables"].items()}
    out |= {fid: {"kind": "figure", "skipped": bool(f["skipped"]), "rows": 0} for fid, f in m["figures"].items()}
    return out


def differences(source: str, old: dict[str, dict], new: dict[str, dict]) -> list[tuple[str, str, str, str, str]]:
    """(source, id, what, old, new) for every id, skipped flag or row count that differs."""
    out = []
    for item_id in list(old) + [i for i in new if i not in old]:
        a, b = old.get(item_id), new.get(item_id)
        if a is None or b is None:
            out.append((source, item_id, "present", str(a is not None), str(b is not None)))
            continue
        for what in ("kind", "skipped", "rows"):
            if a[what] != b[what]:
                out.append((source, item_id, what, str(a[what]), str(b[what])))
    if not out and list(old) != list(new):
        out.append((source, "(all)", "order", " ".join(old), " ".join(new)))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path, help="the reference report folder")
    ap.add_argument("new", type=Path, help="the report folder to check")
    args = ap.parse_args(argv)
    old_html, new_html = from_html(args.old), from_html(args.new)
    diffs = differences("html", old_html, new_html)
    old_m, new_m = from_manifest(args.old), from_manifest(args.new)
    if old_m is not None and new_m is not None:
        diffs += differences("manifest", old_m, new_m)
    sources = "html and manifest" if old_m is not None and new_m is not None else "html"
    tables = sum(1 for v in old_html.values() if v["kind"] == "table")
    figures = len(old_html) - tables
    print(f"compared {tables} tables and {figures} figures ({sources}): {len(diffs)} difference(s)")
    if diffs:
        rows = [("source", "id", "what", "old", "new"), *diffs]
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        for r in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
