"""benchmarks/compare_report_structure.py: equal structures pass, any difference fails and is listed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from deploybench.report.render import render_report
from tests.fixtures.report_demo import demo_frame, demo_settings

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "workflow" / "templates"


def _compare_module():
    spec = importlib.util.spec_from_file_location("compare", ROOT / "benchmarks" / "compare_report_structure.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    out = {}
    for name, variant in (("gpu", "gpu"), ("gpu_again", "gpu"), ("cpu", "cpu")):
        out[name] = tmp_path_factory.mktemp(name)
        render_report(demo_frame(variant), demo_settings(variant), out[name], TEMPLATES, pdf=False)
    return out


def test_the_same_data_gives_the_same_structure(reports, capsys):
    compare = _compare_module()
    assert compare.main([str(reports["gpu"]), str(reports["gpu_again"])]) == 0
    assert "(html and manifest): 0 difference(s)" in capsys.readouterr().out


def test_differences_are_listed_and_fail(reports, capsys):
    compare = _compare_module()
    assert compare.main([str(reports["gpu"]), str(reports["cpu"])]) == 1
    out = capsys.readouterr().out
    assert "table-study-figures" in out and "skipped" in out  # the CPU demo has no imported rows
    assert "table-backend-2" in out and "present" in out  # nor a second backend study
    assert "fig-memory" in out and "skipped" in out  # nor device memory


def test_html_alone_gives_the_manifest_structure(reports):
    compare = _compare_module()
    html, manifest = compare.from_html(reports["gpu"]), compare.from_manifest(reports["gpu"])
    assert sorted(html) == sorted(manifest)  # the HTML interleaves tables and figures
    shown = {k: v for k, v in manifest.items() if not v["skipped"]}
    assert {k: html[k] for k in shown} == shown
