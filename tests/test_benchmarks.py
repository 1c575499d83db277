"""Every benchmark script runs on a tiny size and ends with its ratio line (timings are never asserted)."""
import os
import re
import subprocess
import sys

import pytest

from coursekit.config import REPO_ROOT

HELPERS = {"timing.py"}  # imported by the scripts, not a benchmark
SCRIPTS = sorted(p for p in (REPO_ROOT / "benchmarks").glob("*.py") if p.name not in HELPERS)
RATIO = re.compile(r"ratio: \d+\.\d\dx \S.* \(goal [^)]+\)")


def test_there_are_benchmarks_and_make_bench_runs_them_all():
    assert len(SCRIPTS) >= 2
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "BENCHMARKS := $(sort $(filter-out benchmarks/timing.py,$(wildcard benchmarks/*.py)))" in makefile
    assert "bench:" in makefile
    assert "benchmarks" not in makefile.split("test-unit:")[1].split("\n\n")[0], "benchmarks never run in make test"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_the_benchmark_runs_tiny_and_prints_its_ratio_last(script, tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, str(script), "--tiny"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    last = result.stdout.strip().splitlines()[-1]
    assert RATIO.fullmatch(last), last
    if script.stem == "notebook_times":  # each time comes with what that run recorded
        assert re.search(r"^  result: \S+ = \S", result.stdout, re.MULTILINE), result.stdout[-2000:]
