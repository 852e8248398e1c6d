"""Suite-wide pytest hooks.

CI sets DEPLOYBENCH_REQUIRE_MARKERS (e.g. "slurm,browser,latex") after installing SLURM,
Chromium and TeX: a test with one of those markers that skips is then a failure, so a broken
install step cannot turn the real-component tests into silent skips.
"""

import os

import pytest

REQUIRED = {m for m in os.environ.get("DEPLOYBENCH_REQUIRE_MARKERS", "").split(",") if m}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    required = REQUIRED & {mark.name for mark in item.iter_markers()}
    if report.skipped and required:
        report.outcome = "failed"
        report.longrepr = f"skipped, but CI requires the {sorted(required)} tests to run: {report.longrepr}"
