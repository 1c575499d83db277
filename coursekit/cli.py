"""The ``coursekit`` command: ``coursekit data``, ``coursekit execute``, ``coursekit tolerances``."""
from __future__ import annotations

import argparse
import sys

from . import config


def _cmd_data(args: argparse.Namespace) -> int:
    from .data import status

    rows = status.prepare_all(download=not args.no_download)
    print(status.format_table(rows))
    return 0 if all(row.ok for row in rows) or args.no_download else 1


def _cmd_execute(args: argparse.Namespace) -> int:
    from . import notebooks

    for path in args.notebooks:
        seconds = notebooks.execute(path, profile=args.profile, timeout=args.timeout)
        print(f"executed {path} in the {args.profile} profile ({seconds:.0f} s)")
    return 0


def _cmd_tolerances(args: argparse.Namespace) -> int:
    from . import notebooks

    failed = False
    for path in args.notebooks:
        entries, problems = notebooks.measure_tolerances(path, timeout=args.timeout)
        for problem in problems:
            print(f"{path}: {problem}", file=sys.stderr)
        if problems:
            failed = True
            print(f"{path}: tolerance table NOT written: outputs moved outside training-output cells or "
                  f"beyond their numbers", file=sys.stderr)
            continue
        moved = [e for e in entries if e.deviation]
        print(f"{path}: {len(entries)} training numbers, {len(moved)} moved on the simulated machines")
        for entry in moved:
            print(f"  {entry.stored:>8} deviation {entry.deviation:<8g} tolerance {entry.tolerance:<8g} "
                  f"{entry.context[:90]}")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``coursekit`` command."""
    parser = argparse.ArgumentParser(prog="coursekit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data", help="fetch and verify every dataset, then print a status table")
    data.add_argument("--no-download", action="store_true", help="only look for datasets already present")
    data.set_defaults(func=_cmd_data)
    execute = sub.add_parser("execute", help="run notebooks and store their outputs")
    execute.add_argument("notebooks", nargs="+")
    execute.add_argument("--profile", default="ci", choices=config.PROFILES)
    execute.add_argument("--timeout", type=int, default=900, help="seconds allowed per cell")
    execute.set_defaults(func=_cmd_execute)
    tolerances = sub.add_parser("tolerances", help="run notebooks on simulated other machines and write the "
                                "tolerance tables of their training numbers")
    tolerances.add_argument("notebooks", nargs="+")
    tolerances.add_argument("--timeout", type=int, default=900, help="seconds allowed per cell")
    tolerances.set_defaults(func=_cmd_tolerances)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
