"""Real Snakemake runs on a copy of the workflow in a temporary folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.fixtures.small_config import SMALL_CONFIG  # noqa: F401  (the workflow tests' config)

REPO = Path(__file__).resolve().parents[2]
COPIED = ("Snakefile", "config.yaml", "workflow", "scripts", "deploybench", "profiles", "reference", "config")


class Workflow:
    def __init__(self, root: Path):
        self.root = root

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    def write_config(self, config: dict) -> None:
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def read_config(self) -> dict:
        return yaml.safe_load(self.config_path.read_text())

    @property
    def env(self) -> dict:
        """The environment Snakemake runs in: this copy's deploybench/ ahead of the installed one,
        so Snakemake, its jobs and the warm server all import the library under test."""
        python_path = os.pathsep.join(p for p in (str(self.root), os.environ.get("PYTHONPATH")) if p)
        return {**os.environ, "DEPLOYBENCH_WARM": "1", "PYTHONPATH": python_path}

    def snakemake(
        self, *args: str, timeout: float = 600, check: bool = True, env: dict | None = None, prefix: tuple = ()
    ):
        """Run snakemake here; `prefix` runs it under a command that sets a limit (taskset, prlimit)."""
        cmd = [*prefix, sys.executable, "-m", "snakemake", *args, "--cores", "1", "--resources", "gpu=1"]
        full_env = {**self.env, **(env or {})}
        proc = subprocess.run(cmd, cwd=self.root, capture_output=True, text=True, timeout=timeout, env=full_env)
        if check and proc.returncode != 0:
            raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        return proc

    def cell_files(self) -> dict[str, float]:
        """Cell path -> modification time."""
        return {
            str(p.relative_to(self.root)): p.stat().st_mtime_ns
            for p in (self.root / "results/cells").rglob("*.parquet")
        }


def copy_workflow(dest: Path) -> Workflow:
    dest.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    return Workflow(dest)


@pytest.fixture
def small_workflow(tmp_path) -> Workflow:
    wf = copy_workflow(tmp_path / "wf")
    wf.write_config(SMALL_CONFIG)
    return wf
