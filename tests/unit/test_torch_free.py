"""The analysis and the report need no GPU library: results/, report/ and plan/ import neither torch nor transformers.

In a subprocess where `import torch` and `import transformers` raise ImportError, every module under
deploybench.results, deploybench.report and deploybench.plan imports, and the consolidate, TPOT, APE and
report scripts run as the workflow's localrules run them, on a committed table of three cells from a
default run (tests/fixtures/torch_free/cells).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[2]
CELLS = sorted((ROOT / "tests/fixtures/torch_free/cells").rglob("*.parquet"))
PACKAGES = ("deploybench.results", "deploybench.report", "deploybench.plan")
BLOCKED = ("torch", "transformers")
STUDY_MODELS = {"openai/gpt-oss-20b": "gpt-oss-20b", "Qwen/Qwen3-32B": "qwen3-32b", "01-ai/Yi-34B": "yi-34b"}
EXTERNAL = [
    {"name": "arxiv-2508.16700", "format": "arxiv_2508_16700", "path": "reference/arxiv-2508.16700"}
    | {"model_map": STUDY_MODELS}
]

# Run in the subprocess: refuse the GPU libraries, import every module of the packages, run each script.
DRIVER = """
import importlib, importlib.abc, json, pkgutil, runpy, sys

BLOCKED, PACKAGES, STEPS = json.loads(sys.argv[1])


class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{name} cannot be imported here", name=name)
        return None


sys.meta_path.insert(0, Refuse())
for name in BLOCKED:
    try:
        importlib.import_module(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"{name} imported despite the block")
for package in PACKAGES:
    root = importlib.import_module(package)
    for module in pkgutil.walk_packages(root.__path__, package + "."):
        importlib.import_module(module.name)
for script, argv in STEPS:
    sys.argv = [script, *argv]
    runpy.run_path(script, run_name="__main__")
print("imported:", sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED))
"""


def _config(tmp_path: Path) -> Path:
    """A config whose studies are the fixture's cells, its architecture cards the committed ones."""
    models = {
        name: {"source": "random", "architecture": f"workflow/architectures/{name}.json"}
        for name in ("tiny-gpt-oss", "tiny-qwen3", "tiny-llama")
    }
    main = {"kind": "main_comparison", "models": list(models), "contexts": [128], "gen": [16]}
    config = {
        "models": models,
        "decoding": {"greedy": {"do_sample": False}},
        "studies": {"main": main},
        "analysis": {"baseline_model": "tiny-qwen3", "external_tables": EXTERNAL},
        "report": {"title": "torch-free run"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_results_report_and_plan_run_without_torch_or_transformers(tmp_path):
    assert len(CELLS) == 3
    out = {name: tmp_path / f"{name}.parquet" for name in ("consolidated", "corrected", "ape")}
    cells = [str(path) for path in CELLS]
    external = ["--external-tables", json.dumps(EXTERNAL), "--root", str(ROOT)]
    report = ["--input", str(out["ape"]), "--config", str(_config(tmp_path)), "--out", str(tmp_path / "report")]
    steps = [
        ("scripts/consolidate.py", [*cells, *external, "--output", str(out["consolidated"])]),
        ("scripts/correct_tpot.py", [str(out["consolidated"]), "--output", str(out["corrected"])]),
        ("scripts/ape.py", [str(out["corrected"]), "--baseline-model", "tiny-qwen3", "--output", str(out["ape"])]),
        ("scripts/report.py", [*report, "--no-pdf"]),
    ]
    run = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps([BLOCKED, PACKAGES, steps])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert "imported: []" in run.stdout

    ape = pd.read_parquet(out["ape"])
    ours = ape[ape["source"].isna() | (ape["source"] == "deploybench")]
    assert sorted(ours["model"]) == ["tiny-gpt-oss", "tiny-llama", "tiny-qwen3"]
    assert len(ape) > len(ours), "the external table's rows were imported"
    for name in ("consolidated", "corrected"):
        assert len(pd.read_parquet(out[name])) == len(ape)
    html = (tmp_path / "report/report.html").read_text()
    assert "torch-free run" in html and "tiny-gpt-oss" in html
    assert (tmp_path / "report/report.tex").stat().st_size > 0
