"""The notebooks' stored outputs as a regression contract that holds on any machine.

nbval compares every text output of a notebook with the output stored in it.
Most of that text is the same on every machine and stays compared exactly.
The numbers that come out of training are not: kernels picked by the CPU's
instruction set and reductions split by thread count change the last bits,
and a few epochs of SGD amplify them. Those numbers are compared as numbers,
each against its stored value, within a tolerance of its own.

Which numbers, and how much:

* Cells whose outputs come from training carry the cell tag ``training-output``.
  Every other cell is compared exactly, as nbval does.
* ``notebooks/tolerances/<notebook>.json``, the notebook's tolerance table, holds one
  entry per number of a tagged cell: where it is (cell id, output, line,
  position), its stored text, the largest deviation measured across runs that
  simulate other machines (``measure``), and its tolerance: four times that
  deviation, and never less than one unit of the last printed digit for a
  decimal (a rounded value near a rounding boundary flips by one unit under any
  perturbation). An integer that never moved (an epoch count, a parameter
  count) keeps tolerance 0, i.e. exact.
* ``check_numbers`` applies the table to a cell's fresh outputs; the nbval
  companion plugin ``coursekit.nbval_tolerance`` calls it for every cell.

Positions are counted in the text after nbval's sanitize patterns have been
applied, so masked text (times, rates, paths) never counts as a number.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from . import tempfiles

TAG = "training-output"
FACTOR = 4.0
# A number: optional sign (only where no word or number runs into it), digits, optional decimals and exponent.
NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w])")


@dataclass
class Entry:
    """One checked number of a stored output.

    ``cell`` is the nbformat cell id; ``output`` the output's slot (``stdout:0``,
    ``text/plain:1``...: kind and its ordinal in the cell); ``line`` and ``index``
    the line of that text and the number's position among the line's numbers.
    """

    cell: str
    output: str
    line: int
    index: int
    stored: str
    deviation: float
    tolerance: float
    context: str

    @property
    def key(self) -> tuple[str, str, int, int]:
        return self.cell, self.output, self.line, self.index


def decimals(token: str) -> int:
    """How many digits ``token`` has after its decimal point (0 for an integer or exponent form)."""
    mantissa = token.lower().split("e")[0]
    return len(mantissa.split(".")[1]) if "." in mantissa else 0


def tolerance_for(token: str, deviation: float, factor: float = FACTOR) -> float:
    """``factor`` × ``deviation``, at least one unit of the last digit of a decimal ``token``."""
    floor = 10.0 ** -decimals(token) if decimals(token) else 0.0
    return round(max(factor * deviation, floor), 10)


def text_slots(outputs: list[dict], sanitize=lambda s: s) -> dict[str, str]:
    """The comparable texts of a cell's (coalesced) outputs by slot: ``{'stdout:0': text, ...}``.

    Streams are keyed by their name, display data and results by ``text/plain``;
    the ordinal counts outputs of the same kind, as nbval pairs them.
    """
    return {slot: sanitize(_get_text(output, field)) for slot, output, field in _slots(outputs)}


def numbers_by_line(text: str) -> list[list[re.Match]]:
    """The number matches of each line of ``text``."""
    return [list(NUMBER.finditer(line)) for line in text.split("\n")]


def skeleton(line: str) -> str:
    """``line`` with every number replaced by ``#``: what must match exactly around the numbers."""
    return NUMBER.sub("#", line)


def load(path: str | os.PathLike) -> dict[tuple, Entry]:
    """The entries of a tolerance table file, by ``Entry.key``; empty when the file does not exist."""
    path = Path(path)
    if not path.exists():
        return {}
    table = json.loads(path.read_text())
    entries = [Entry(**item) for item in table["numbers"]]
    return {entry.key: entry for entry in entries}


def save(path: str | os.PathLike, entries: list[Entry], runs: dict[str, dict[str, str]], notebook: str) -> Path:
    """Write a tolerance table atomically (temporary file, then rename)."""
    table = {
        "notebook": notebook,
        "rule": f"tolerance = max({FACTOR:g} x largest deviation over the runs, one unit of the last printed "
                "digit of a decimal); integers that never moved stay exact",
        "runs": runs,
        "numbers": [asdict(entry) for entry in entries],
    }
    return tempfiles.write_text(path, json.dumps(table, indent=1, ensure_ascii=False) + "\n")


def derive(stored_cells: list[dict], runs: dict[str, list[dict]], sanitize=lambda s: s) -> tuple[list[Entry], list[str]]:
    """Tolerance entries for the tagged cells of a notebook, from the deviations of other runs.

    Args:
        stored_cells: the notebook's cells with the stored (reference) outputs.
        runs: for each run's name, the same notebook's cells as that run left them.
        sanitize: nbval's sanitize patterns as one function of a string.

    Returns:
        ``(entries, problems)``: one entry per number of every tagged cell, and a
        sentence for each output that moved where it may not: text other than
        numbers, or any number of an untagged cell.
    """
    from nbval.plugin import coalesce_streams

    entries, problems = [], []
    for position, cell in enumerate(stored_cells):
        if cell.get("cell_type") != "code":
            continue
        tagged = TAG in cell.get("metadata", {}).get("tags", [])
        stored = text_slots(coalesce_streams(copy.deepcopy(cell.get("outputs", []))), sanitize)
        deviations: dict[tuple, float] = {}
        for run_name, cells in runs.items():
            fresh = text_slots(coalesce_streams(copy.deepcopy(cells[position].get("outputs", []))), sanitize)
            for slot, text in stored.items():
                other = fresh.get(slot)
                where = f"cell {position} ({cell.get('id')}) {slot}"
                if other is None or other.count("\n") != text.count("\n"):
                    problems.append(f"{where}: run {run_name} printed other lines")
                    continue
                for row, (line, other_line) in enumerate(zip(text.split("\n"), other.split("\n"))):
                    if skeleton(line) != skeleton(other_line):
                        problems.append(f"{where} line {row}: run {run_name} printed {other_line!r} for {line!r}")
                        continue
                    for index, (a, b) in enumerate(zip(NUMBER.findall(line), NUMBER.findall(other_line))):
                        moved = abs(float(a) - float(b))
                        if moved and not tagged:
                            problems.append(f"{where} line {row}: {a} became {b} in run {run_name}, but the cell "
                                            f"is not tagged {TAG!r}")
                        key = (slot, row, index)
                        deviations[key] = max(deviations.get(key, 0.0), moved)
        if not tagged:
            continue
        for slot, text in stored.items():
            for row, matches in enumerate(numbers_by_line(text)):
                line = text.split("\n")[row]
                for index, match in enumerate(matches):
                    token = match.group()
                    deviation = round(deviations.get((slot, row, index), 0.0), 10)
                    tolerance = tolerance_for(token, deviation)
                    entries.append(Entry(cell.get("id"), slot, row, index, token, deviation, tolerance,
                                         line.strip()))
    return entries, problems


def widen(entries: list[Entry], earlier: dict[tuple, Entry]) -> list[Entry]:
    """``entries`` whose deviations also cover those of an ``earlier`` table (``load``) of the same stored outputs.

    A number keeps the larger of its two deviations, and its tolerance follows
    (``tolerance_for``); an earlier entry of another stored value is ignored.
    """
    widened = []
    for entry in entries:
        before = earlier.get(entry.key)
        if before is not None and before.stored == entry.stored and before.deviation > entry.deviation:
            entry = dataclasses.replace(entry, deviation=before.deviation,
                                        tolerance=tolerance_for(entry.stored, before.deviation))
        widened.append(entry)
    return widened


def check_numbers(cell_id: str, stored: list[dict], fresh: list[dict], table: dict[tuple, Entry],
                  sanitize=lambda s: s) -> tuple[list[dict], list[dict], list[str]]:
    """Compare the numbers of one cell's fresh outputs with the stored ones, each within its tolerance.

    Args:
        cell_id: the cell's nbformat id.
        stored, fresh: the cell's coalesced outputs (stored in the notebook, and just computed).
        table: the notebook's tolerance entries (``load``).
        sanitize: nbval's sanitize patterns as one function of a string.

    Returns:
        ``(stored, fresh, failures)``: both outputs sanitized, the fresh ones with
        every number that lies within its tolerance replaced by its stored text, so
        that an exact comparison afterwards checks all the rest; and one message
        per number outside its tolerance, naming it, both values and the tolerance.
    """
    stored, fresh = _sanitized(stored, sanitize), _sanitized(fresh, sanitize)
    stored_slots = text_slots(stored)
    failures = []
    for slot, output, field in _slots(fresh):
        reference = stored_slots.get(slot)
        if reference is None:
            continue
        lines, reference_lines = _get_text(output, field).split("\n"), reference.split("\n")
        if len(lines) != len(reference_lines):
            continue  # the exact comparison reports it
        for row, (line, reference_line) in enumerate(zip(lines, reference_lines)):
            if skeleton(line) != skeleton(reference_line):
                continue
            tokens = NUMBER.findall(reference_line)
            pieces, end = [], 0
            for index, match in enumerate(NUMBER.finditer(line)):
                pieces.append(line[end:match.start()])
                end = match.end()
                entry = table.get((cell_id, slot, row, index))
                token = match.group()
                if entry is not None and entry.stored == tokens[index]:
                    if abs(float(token) - float(entry.stored)) <= entry.tolerance + 1e-12:
                        token = entry.stored
                    else:
                        failures.append(describe(entry, token, reference_line))
                pieces.append(token)
            lines[row] = "".join(pieces) + line[end:]
        _set_text(output, field, "\n".join(lines))
    return stored, fresh, failures


def describe(entry: Entry, new: str, line: str) -> str:
    """One line naming a number out of tolerance: its name, stored and new value, tolerance, measured spread."""
    return (f"{name_of(entry, line)}: stored {entry.stored}, now {new}, tolerance ±{entry.tolerance:g} "
            f"(largest deviation measured on simulated machines: {entry.deviation:g}) "
            f"in line {line.strip()!r}")


def name_of(entry: Entry, line: str) -> str:
    """A readable name for the number: a ``result:`` name, or the words just before it on its line."""
    result = re.match(r"\s*result:\s*(\S+)\s*=", line)
    if result:
        return f"result {result.group(1)}"
    matches = list(NUMBER.finditer(line))
    before = line[:matches[entry.index].start()].rstrip(" =:(")
    words = re.findall(r"[A-Za-z_][\w\-]*", before)
    label = words[-1] if words else "number"
    return f"{label!r} (number {entry.index + 1} of line {entry.line + 1}, {entry.output}, cell {entry.cell})"


def _text_field(output: dict) -> tuple[str | None, str | None]:
    """``(kind, field)`` of an output with comparable text (``('stdout', 'text')``, ``('text/plain', 'data')``),
    or ``(None, None)``."""
    if output.get("output_type") == "stream":
        return output.get("name", "stdout"), "text"
    if "data" in output and "text/plain" in output["data"]:
        return "text/plain", "data"
    return None, None


def _slots(outputs: list[dict]):
    """Yield ``(slot, output, field)`` for each output with comparable text; slots as in ``text_slots``."""
    counts: dict[str, int] = {}
    for output in outputs:
        kind, field = _text_field(output)
        if kind is None:
            continue
        ordinal = counts.get(kind, 0)
        counts[kind] = ordinal + 1
        yield f"{kind}:{ordinal}", output, field


def _get_text(output: dict, field: str) -> str:
    text = output["text"] if field == "text" else output["data"]["text/plain"]
    return "".join(text) if isinstance(text, list) else text


def _set_text(output: dict, field: str, text: str) -> None:
    if field == "text":
        output["text"] = text
    else:
        output["data"]["text/plain"] = text


def _sanitized(outputs: list[dict], sanitize) -> list[dict]:
    result = copy.deepcopy(outputs)
    for _, output, field in _slots(result):
        _set_text(output, field, sanitize(_get_text(output, field)))
    return result


def sanitizer(config_path: str | os.PathLike):
    """nbval's sanitize file as one function of a string (patterns applied in file order)."""
    from nbval.plugin import get_sanitize_patterns

    patterns = get_sanitize_patterns(Path(config_path).read_text())

    def sanitize(text: str) -> str:
        for regex, replace in patterns:
            text = re.sub(regex, replace, text)
        return text

    return sanitize


def table_path(notebook: str | os.PathLike) -> Path:
    """Where the tolerance table of ``notebook`` lives: ``<its folder>/tolerances/<name>.json``."""
    notebook = Path(notebook)
    return notebook.parent / "tolerances" / f"{notebook.stem}.json"

