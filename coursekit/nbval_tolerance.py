"""A pytest plugin beside nbval: training numbers are compared within their measured tolerances.

Load it next to nbval: ``pytest --nbval -p coursekit.nbval_tolerance notebooks``.
For every notebook cell nbval runs, the numbers listed in the notebook's
tolerance table (``coursekit.regression``) are checked against their stored
values first; each one within its tolerance is put back to its stored text, so
nbval's own exact comparison then checks everything else. A number outside its
tolerance fails the cell with a line that names it, its stored and new values
and the tolerance.
"""
from __future__ import annotations

from pathlib import Path

from . import regression

HEADER = "training numbers outside their tolerance (table: {table}; refresh with `make notebooks`):"


def pytest_collection_modifyitems(session, config, items):
    """Give every collected nbval cell the tolerant number comparison of its notebook."""
    from nbval.plugin import IPyNbCell

    tables: dict[Path, dict] = {}
    for item in items:
        if isinstance(item, IPyNbCell):
            path = regression.table_path(Path(str(item.fspath)))
            if path not in tables:
                tables[path] = regression.load(path)
            _wrap(item, tables[path], path)


def _wrap(item, table: dict, path: Path) -> None:
    original = item.compare_outputs
    cell_id = item.cell.get("id")

    def compare_outputs(test, ref, skip_compare=None):
        ref, test, failures = regression.check_numbers(cell_id, ref, test, table, item.sanitize)
        same = original(test, ref, skip_compare)
        if failures:
            item.comparison_traceback[:0] = [HEADER.format(table=path.name)] + [f"  {f}" for f in failures] + [""]
            return False
        return same

    item.compare_outputs = compare_outputs
