"""Plain-text tables for the command line: aligned columns under a header and a rule of dashes."""
from __future__ import annotations

from collections.abc import Sequence


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """``header`` and ``rows`` as aligned columns, two spaces apart, with a rule of dashes under the header.

    Args:
        header: the column names (``n`` strings).
        rows: the rows, each ``n`` strings.
        right: indices of the columns aligned right (numbers); the others are aligned left.

    Returns:
        The table, one line per row, without trailing spaces.

    Raises:
        ValueError: a row has not as many cells as the header.
    """
    bad = [row for row in rows if len(row) != len(header)]
    if bad:
        raise ValueError(f"a row has {len(bad[0])} cells, the header {len(header)}: {list(bad[0])}")
    widths = [max(len(str(line[i])) for line in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(cell).rjust(width) if i in right else str(cell).ljust(width)
                         for i, (cell, width) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header), "  ".join("-" * width for width in widths), *(line(row) for row in rows)])
