"""The ``coursekit`` command (also ``python -m coursekit``).

Parsing needs nothing heavy: torch and the notebook tools are imported only by
the command that runs, so ``coursekit --help`` answers at once. Mistakes a user
can fix (a missing file, an unknown profile or dataset, a missing extra) end in
one line on stderr and exit status 1, never in a traceback.
"""
from __future__ import annotations

import argparse
import sys

from . import __version__, config

DISTRIBUTION = "coursekit-cv"
# The dataset names of coursekit.data.status.DATASETS (kept here so that parsing does not import torch;
# a test keeps the two equal).
DATASET_NAMES = ("mnist", "cifar10", "cmp_facade", "cmp_facade/extended", "voc", "flowers17")

DESCRIPTION = """\
The course kit's command line: datasets, running the course notebooks, and the
instructor's build (executed solutions, PDFs, student versions) and grading.
Run `coursekit COMMAND --help` for a command's options."""

EPILOG = """\
environment:
  COURSEKIT_DATA       data roots searched first, separated by ':' (';' on Windows)
  COURSEKIT_HOME       the kit's own folder (data/ download cache, checkpoints/);
                       default: the source checkout, or ~/.cache/coursekit when installed
  COURSEKIT_PROFILE    ci, cpu or full (default: full with CUDA, else cpu)
  COURSEKIT_DEVICE     cuda, mps or cpu (default: the best available)
  COURSEKIT_SYNTHETIC  1 lets generated stand-in data replace missing VOC or flower
                       masks outside the ci profile

exit status: 0 success; 1 a dataset is not usable, a notebook failed or a
mistake in the request (the reason is printed); 2 the arguments do not parse."""


class CommandError(Exception):
    """A mistake the user can fix; ``main`` prints its message as one line and exits with 1."""


def _needs(extra: str, command: str):
    """Import the notebook tools for ``command``, or say which extra installs them."""
    try:
        from . import notebooks
    except ModuleNotFoundError as exc:
        raise CommandError(f"`coursekit {command}` needs {exc.name}, which the {extra!r} extra installs: "
                           f"pip install '{DISTRIBUTION}[{extra}]'") from None
    return notebooks


def _check_environment() -> None:
    """Turn a bad ``COURSEKIT_PROFILE`` or ``COURSEKIT_SYNTHETIC`` into a one-line ``CommandError``."""
    try:
        config.profile_name()
        config.synthetic_allowed()
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _cmd_data(args: argparse.Namespace) -> int:
    _check_environment()
    from .data import status

    entries = [e for e in status.DATASETS if not args.datasets or e.key in args.datasets]
    rows = [status.prepare(entry, download=not args.no_download) for entry in entries]
    print(status.format_table(rows))
    unusable = [row.dataset for row in rows if not row.ok]
    if unusable:
        print(f"coursekit: not usable: {', '.join(unusable)} (see the status column)", file=sys.stderr)
        return 1
    return 0


def _notebook_paths(args: argparse.Namespace) -> list:
    from pathlib import Path

    paths = [Path(p) for p in args.notebooks]
    for path in paths:
        if not path.is_file():
            raise CommandError(f"{path}: no such notebook")
        if path.suffix != ".ipynb":
            raise CommandError(f"{path}: not a notebook (expected a .ipynb file)")
    return paths


def _cmd_execute(args: argparse.Namespace) -> int:
    paths = _notebook_paths(args)
    notebooks = _needs("build", "execute")
    for path in paths:
        try:
            seconds = notebooks.execute(path, profile=args.profile, timeout=args.timeout)
        except notebooks.NotebookError as exc:
            print(f"coursekit: {exc}", file=sys.stderr)
            return 1
        print(f"executed {path} in the {args.profile} profile ({seconds:.0f} s)")
    return 0


def _cmd_tolerances(args: argparse.Namespace) -> int:
    paths = _notebook_paths(args)
    notebooks = _needs("test", "tolerances")
    try:
        import nbval  # noqa: F401  (the tolerance derivation counts positions as nbval does)
    except ModuleNotFoundError:
        raise CommandError(f"`coursekit tolerances` needs nbval, which the 'test' extra installs: "
                           f"pip install '{DISTRIBUTION}[test]'") from None
    failed = False
    for path in paths:
        try:
            entries, problems = notebooks.measure_tolerances(path, timeout=args.timeout, add=args.add_this_machine)
        except notebooks.NotebookError as exc:
            print(f"coursekit: {exc}", file=sys.stderr)
            return 1
        for problem in problems:
            print(f"{path}: {problem}", file=sys.stderr)
        if problems:
            failed = True
            print(f"{path}: tolerance table NOT written: outputs moved outside training-output cells or "
                  f"beyond their numbers", file=sys.stderr)
            continue
        moved = [e for e in entries if e.deviation]
        print(f"{path}: {len(entries)} training numbers, {len(moved)} moved on the machines run")
        for entry in moved:
            print(f"  {entry.stored:>8} deviation {entry.deviation:<8g} tolerance {entry.tolerance:<8g} "
                  f"{entry.context[:90]}")
    return 1 if failed else 0


def _course_notebooks(args: argparse.Namespace, folder=None) -> list:
    """The notebooks a course command works on: the NOTEBOOK arguments, else those of ``folder``
    (default: the kit's notebooks/) whose names start with one of ``--only``."""
    from pathlib import Path

    if getattr(args, "notebooks", None):
        return _notebook_paths(args)
    folder = Path(folder) if folder is not None else config.REPO_ROOT / "notebooks"
    found = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise CommandError(f"{folder}: no course notebooks there; name them as arguments "
                           f"(the kit's notebooks come with its source checkout)")
    only = args.only or []
    chosen = [p for p in found if not only or any(p.stem.startswith(o) for o in only)]
    unknown = [o for o in only if not any(p.stem.startswith(o) for p in found)]
    if unknown:
        raise CommandError(f"--only {' '.join(unknown)}: no such notebook in {folder} "
                           f"(there are {', '.join(p.stem for p in found)})")
    return chosen


def _out(args: argparse.Namespace, sub: str):
    from pathlib import Path

    if args.out:
        return Path(args.out)
    from . import build
    return build.default_out() / sub


def _cmd_build(args: argparse.Namespace) -> int:
    _check_environment()
    paths = _course_notebooks(args)
    _needs("build", "build")
    from pathlib import Path

    from . import build
    out = Path(args.out) if args.out else build.default_out()
    profile = args.profile or config.profile_name()
    print(f"building {len(paths)} notebook(s) in the {profile} profile into {out}")
    rows = build.build(paths, out, profile, args.timeout, make_pdf=not args.no_pdf)
    print(build.format_summary(rows))
    failed = [row.name for row in rows if row.status == "failed"]
    if failed:
        print(f"coursekit: failed: {', '.join(failed)} (reasons above)", file=sys.stderr)
        return 1
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    _check_environment()
    paths = _course_notebooks(args)
    _needs("build", "run")
    from . import build
    out, profile = _out(args, build.SOLUTIONS), args.profile or config.profile_name()
    rows = [build.run_solution(path, out, profile, args.timeout) for path in paths]
    print(build.format_summary(rows))
    return 1 if any(row.status == "failed" for row in rows) else 0


def _cmd_student(args: argparse.Namespace) -> int:
    paths = _course_notebooks(args)
    _needs("build", "student")
    from . import build, student
    out = _out(args, build.STUDENT)
    for path in paths:
        try:
            print(f"student version: {student.write_student(path, out)}")
        except student.MarkerError as exc:
            raise CommandError(str(exc)) from None
    return 0


def _cmd_pdf(args: argparse.Namespace) -> int:
    _needs("build", "pdf")
    from . import build, pdf
    paths = _course_notebooks(args, build.default_out() / build.SOLUTIONS)
    out = _out(args, build.SOLUTIONS)
    for path in paths:
        try:
            print(f"solution PDF: {build.render_pdf(path, out)}")
        except pdf.PdfError as exc:
            raise CommandError(f"{path.name}: {exc}") from None
    return 0


def _cmd_grade(args: argparse.Namespace) -> int:
    _check_environment()
    _needs("build", "grade")
    from pathlib import Path

    from . import build, grading
    solutions = Path(args.solutions) if args.solutions else config.REPO_ROOT / "notebooks"
    out = Path(args.out) if args.out else build.default_out() / "grades" / "gradebook.csv"
    memory = None if args.no_memory_limit else args.memory
    try:
        results = grading.grade(args.submissions, solutions, out, cell_timeout=args.timeout,
                                total_timeout=args.total_timeout, memory_mb=memory, profile=args.profile)
    except grading.GradingError as exc:
        raise CommandError(str(exc)) from None
    print(grading.format_results(results))
    print(f"gradebook: {out}\nfeedback:  {out.parent / 'feedback'}")
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    _check_environment()
    from .data.download import DatasetNotFoundError
    from .data.locate import IncompleteDatasetError
    from .models import cifar_vgg
    try:
        _, info = cifar_vgg.pretrained(args.width, args.epochs, args.train_images, cache=not args.no_cache)
    except (DatasetNotFoundError, IncompleteDatasetError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    where = f"cached as {config.checkpoint_dir() / info['path']}" if not args.no_cache else "not cached"
    print(f"CIFAR-10 VGG16 convolutions, width {info['width']:g}, {info['epochs']} epoch{'s' if info['epochs'] != 1 else ''} on "
          f"{info['train_images']} images: test accuracy {info['test_accuracy']:.3f} ({info['source']}; {where})")
    return 0


def _fraction(text: str) -> float:
    """An argparse type: a number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def _positive(unit: str):
    """An argparse type: a whole number of ``unit`` (seconds, MB), at least 1."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of {unit}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{value} is not a positive number of {unit}")
        return value
    return parse


_seconds = _positive("seconds")
_megabytes = _positive("MiB")


def _dataset(text: str) -> str:
    """argparse type: one of ``DATASET_NAMES``."""
    if text not in DATASET_NAMES:
        raise argparse.ArgumentTypeError(f"{text!r} is not a dataset; choose from {', '.join(DATASET_NAMES)}")
    return text


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``coursekit`` command (plain-text help, every option described)."""
    parser = argparse.ArgumentParser(prog="coursekit", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__} ({DISTRIBUTION})")
    sub = parser.add_subparsers(title="commands", dest="command", required=True, metavar="COMMAND",
                                help="one of the commands below")

    data = sub.add_parser("data", help="find (or download) and verify the datasets; print a status table",
                          description="Find each dataset under the data roots, download what is missing "
                                      "(unless --no-download), verify it and print one row per dataset. "
                                      "Exit status 1 when any requested dataset is not usable.")
    data.add_argument("datasets", nargs="*", metavar="DATASET", type=_dataset,
                      help=f"datasets to prepare (default: all): {', '.join(DATASET_NAMES)}")
    data.add_argument("--no-download", action="store_true",
                      help="only look for datasets already present; never use the network")
    data.set_defaults(func=_cmd_data)

    execute = sub.add_parser("execute", help="run notebooks in a profile and store their outputs in them",
                             description="Run each notebook top to bottom in a fresh kernel and, when every "
                                         "cell succeeded, store the outputs in the file (atomically). "
                                         "A failing notebook is left as it was.")
    execute.add_argument("notebooks", nargs="+", metavar="NOTEBOOK", help="notebook files (.ipynb)")
    execute.add_argument("--profile", default="ci", choices=config.PROFILES,
                         help="how much the notebooks train: ci (tiny, the stored outputs), cpu or full "
                              "(default: ci)")
    execute.add_argument("--timeout", type=_seconds, default=900, metavar="SECONDS",
                         help="seconds one cell may run before the run fails (default: 900)")
    execute.set_defaults(func=_cmd_execute)

    tolerances = sub.add_parser("tolerances", help="re-run notebooks as simulated other machines; write the "
                                "tolerance tables of their training numbers",
                                description="Run each notebook in the ci profile once per simulated machine "
                                            "(other CPU kernels, other thread counts) and write "
                                            "notebooks/tolerances/<notebook>.json from the deviations seen. "
                                            "Run `coursekit execute` first: the stored outputs are the "
                                            "reference.")
    tolerances.add_argument("notebooks", nargs="+", metavar="NOTEBOOK", help="notebook files (.ipynb)")
    tolerances.add_argument("--timeout", type=_seconds, default=900, metavar="SECONDS",
                            help="seconds one cell may run before the run fails (default: 900)")
    tolerances.add_argument("--add-this-machine", action="store_true",
                            help="run each notebook once on this machine as it is and widen its existing table to "
                                 "cover what moved, keeping the deviations measured before (for a real CPU unlike "
                                 "the simulated ones)")
    tolerances.set_defaults(func=_cmd_tolerances)

    def course_command(name: str, help_text: str, description: str, func, positional: str = "solution notebooks"):
        command = sub.add_parser(name, help=help_text, description=description)
        command.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                             help=f"{positional} (.ipynb; default: all of the course's)")
        command.add_argument("--only", nargs="+", metavar="NAME",
                             help="only the course notebooks whose names start with these (e.g. 01 04_fcn)")
        command.set_defaults(func=func)
        return command

    def profile_option(command, what: str) -> None:
        command.add_argument("--profile", choices=config.PROFILES, default=None,
                             help=f"how much {what} train: ci (tiny), cpu or full (default: COURSEKIT_PROFILE, "
                                  f"else full with CUDA, else cpu)")

    def timeout_option(command) -> None:
        command.add_argument("--timeout", type=_seconds, default=900, metavar="SECONDS",
                             help="seconds one cell may run (default: 900)")

    course = course_command("build", "the course build: solutions executed, their PDFs, student versions",
                            "Execute every solution notebook in a profile into build/solutions/, render "
                            "each to build/solutions/<name>.pdf (with the system Chromium), write the "
                            "student versions to build/student/, and print a summary: each notebook's status, time, the data "
                            "it used (mirror, local copy, synthetic) and its recorded results. A notebook "
                            "whose data cannot be had is skipped with the reason; the rest still build. "
                            "Exit status 1 when a notebook failed.", _cmd_build)
    profile_option(course, "the notebooks")
    timeout_option(course)
    course.add_argument("--out", metavar="DIR", help="the build folder (default: build/ in the kit's folder)")
    course.add_argument("--no-pdf", action="store_true", help="skip the PDFs")

    run = course_command("run", "execute solution notebooks into build/solutions/ (the files are not changed)",
                         "Execute each solution notebook in a fresh kernel and write the executed copy to "
                         "--out. `coursekit execute` is the maintainers' step that stores outputs in place.",
                         _cmd_run)
    profile_option(run, "the notebooks")
    timeout_option(run)
    run.add_argument("--out", metavar="DIR", help="where the executed copies go (default: build/solutions/)")

    student_cmd = course_command("student", "write the student versions of solution notebooks",
                                 "Replace every solution region by `# YOUR CODE HERE` / `raise "
                                 "NotImplementedError()` (code) or `YOUR ANSWER HERE` (markdown), remove "
                                 "hidden tests and outputs, and write the result to --out. A misplaced "
                                 "marker is an error naming the notebook and cell.", _cmd_student)
    student_cmd.add_argument("--out", metavar="DIR", help="where they go (default: build/student/)")

    pdf_cmd = course_command("pdf", "render executed notebooks to solution PDFs",
                             "Render executed notebooks (default: build/solutions/*.ipynb, made by `coursekit "
                             "run`) to PDF with the system Chromium; math is typeset offline with a local "
                             "MathJax.", _cmd_pdf, positional="executed notebooks")
    pdf_cmd.add_argument("--out", metavar="DIR", help="where the PDFs go (default: build/solutions/)")

    grade = sub.add_parser("grade", help="grade submitted student notebooks: a gradebook CSV and feedback files",
                           description="Run each submitted notebook (SUBMISSIONS holds <student>/<name>.ipynb "
                                       "or <student>.ipynb) in its own kernel process, with the instructor's "
                                       "check cells in force (edited or deleted ones are put back), a time "
                                       "limit per cell and in all, and a memory limit. Each check's points "
                                       "come from the kernel's reply, not from printed text. Writes one "
                                       "gradebook row per submission and a feedback file per submission; "
                                       "written answers are listed for grading by hand. Run it as an "
                                       "unprivileged user without network: a submission is untrusted code.")
    grade.add_argument("submissions", metavar="SUBMISSIONS", help="the folder of submitted notebooks")
    grade.add_argument("--solutions", metavar="DIR",
                       help="the instructor's solution notebooks (default: the kit's notebooks/)")
    grade.add_argument("--out", metavar="CSV",
                       help="the gradebook to write; feedback/ goes beside it (default: build/grades/gradebook.csv)")
    grade.add_argument("--profile", choices=config.PROFILES, default="ci",
                       help="the profile the submissions run in (default: ci, the fastest)")
    grade.add_argument("--timeout", type=_seconds, default=120, metavar="SECONDS",
                       help="seconds one cell may run before it is interrupted (default: 120)")
    grade.add_argument("--total-timeout", type=_seconds, default=1800, metavar="SECONDS",
                       help="seconds one submission may run in all before it is killed (default: 1800)")
    grade.add_argument("--memory", type=_megabytes, default=8192, metavar="MIB",
                       help="address-space limit of each kernel in MiB (default: 8192)")
    grade.add_argument("--no-memory-limit", action="store_true",
                       help="no memory limit (needed for a GPU: CUDA cannot start under one)")
    grade.set_defaults(func=_cmd_grade)

    pretrain = sub.add_parser("pretrain", help="train (or find in the cache) the kit's CIFAR-10 VGG16 convolutions "
                                               "that stand in for ImageNet weights in notebook 04",
                              description="Train VGG16's 13 convolutions at a fraction of their width as a "
                                          "CIFAR-10 classifier, report its test accuracy and cache it under "
                                          "COURSEKIT_HOME/checkpoints, where notebook 04 finds it. A cached "
                                          "network is reused; a damaged one is trained again.")
    pretrain.add_argument("--width", type=_fraction, default=0.125,
                          help="channel multiplier of the convolutions (default: 0.125)")
    pretrain.add_argument("--epochs", type=_positive("epochs"), default=10, help="training epochs (default: 10)")
    pretrain.add_argument("--train-images", type=_positive("images"), metavar="N",
                          help="use the first N training images (default: all)")
    pretrain.add_argument("--no-cache", action="store_true", help="always train, and write no checkpoint")
    pretrain.set_defaults(func=_cmd_pretrain)

    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CommandError as exc:
        print(f"coursekit: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("coursekit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
