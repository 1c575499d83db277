"""Wall time of every course notebook, per profile: issue 11's table of what a student waits for.

Each notebook runs from its first cell to its last in a fresh kernel, exactly
as ``coursekit execute`` runs it (``coursekit.notebooks.run``; the files are not
changed), once per requested profile, one after the other, on this machine as
it is (``COURSEKIT_DATA``, thread count and device as set). A notebook that
fails gets its reason in the table instead of a time, and the others still run.
After each run the notebook's ``result:`` lines (``coursekit.results``) are
printed, so a table of times always comes with what those runs showed.

The last line is the slowest notebook's time over the goal: 5 minutes per
notebook in the ``cpu`` profile on 2 cores (issue 11). Run with ``--profiles ci``
alone (the default, as in ``make bench``) it measures the ``ci`` runs against the
same goal, which they should be far inside.

Usage::

    .venv/bin/python benchmarks/notebook_times.py [--profiles ci cpu] [--only 03 04] [--goal-minutes 5]
    .venv/bin/python benchmarks/notebook_times.py --tiny   # notebook 01 in ci only: a smoke test
"""
from __future__ import annotations

import argparse

from coursekit import config, notebooks, results
from coursekit.build import printed_text
from coursekit.tables import format_table

NOTEBOOK_DIR = config.REPO_ROOT / "notebooks"


def _minutes(seconds: float) -> str:
    """``m:ss`` for a duration in seconds."""
    return f"{int(seconds // 60)}:{round(seconds % 60):02d}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles", nargs="+", choices=config.PROFILES, default=["ci"],
                        help="profiles to time each notebook in (default: ci)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="notebooks whose names start with these")
    parser.add_argument("--goal-minutes", type=float, default=5.0, help="the per-notebook goal (default: 5)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds one cell may run (default: 1800)")
    parser.add_argument("--tiny", action="store_true", help="notebook 01 in ci only (a smoke test)")
    args = parser.parse_args()
    profiles, only = (["ci"], ["01"]) if args.tiny else (args.profiles, args.only)
    paths = [p for p in sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
             if not only or any(p.name.startswith(prefix) for prefix in only)]
    if not paths:
        parser.error(f"no notebook in {NOTEBOOK_DIR} starts with {' or '.join(only)}")

    times: dict[tuple[str, str], float] = {}
    failures: dict[tuple[str, str], str] = {}
    for path in paths:
        for profile in profiles:
            try:
                executed, seconds = notebooks.run(path, profile, timeout=args.timeout)
            except notebooks.NotebookError as exc:
                failures[path.stem, profile] = str(exc).removeprefix(f"{path}: ")[:80]
                print(f"{path.stem} ({profile}): failed: {exc}", flush=True)
            else:
                times[path.stem, profile] = seconds
                print(f"{path.stem} ({profile}): {seconds:.1f} s", flush=True)
                for name, value in results.parse(printed_text(executed)).items():
                    print(f"  result: {name} = {value}", flush=True)

    rows = [[path.stem] + [_minutes(times[path.stem, p]) if (path.stem, p) in times
                           else f"failed: {failures[path.stem, p]}" for p in profiles] for path in paths]
    print(format_table(["notebook"] + [f"{p} (m:ss)" for p in profiles], rows, right=range(1, len(profiles) + 1)))
    if not times:
        raise SystemExit("every notebook failed; nothing to compare with the goal")
    (slowest, profile), seconds = max(times.items(), key=lambda item: item[1])
    print(f"ratio: {seconds / (60 * args.goal_minutes):.2f}x slowest notebook's wall time ({slowest}, {profile}) "
          f"over {args.goal_minutes:g} minutes (goal ≤ 1x)")


if __name__ == "__main__":
    main()
