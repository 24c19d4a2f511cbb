"""kubectl describe's layout: Go's text/tabwriter, as kubectl configures it.

kubectl writes ``key<TAB>value`` lines and lets the tabwriter align them (padding 2: a column
is aligned over the run of consecutive lines that have it). :class:`Writer` does the same, so
the describers read like kubectl's line for line.
"""

from __future__ import annotations

from typing import Any

LEVELS = ("", "  ", "    ", "      ", "        ")
"""Indentation of kubectl's describe levels 0 to 4."""


class Writer:
    """Lines of cells, formatted like Go's ``tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)``.

    ``line(level, "Name:", value)`` is kubectl's ``w.Write(LEVEL, "Name:\\t%s\\n", value)``:
    every cell but the last is tab-terminated and aligned with the same column of the
    neighbouring lines that have it; a line with one cell ends every alignment block. Cells
    are kept apart rather than joined with tabs, so a tab inside a value changes nothing.
    """

    def __init__(self) -> None:
        self.rows: list[list[str]] = []

    def line(self, level: int, *cells: Any) -> None:
        texts = ["" if c is None else str(c) for c in cells] or [""]
        texts[0] = LEVELS[level] + texts[0]
        *head, last = texts
        first, *more = last.split("\n") if last else [""]
        self.rows.append([*head, first])
        for extra in more:  # a multi-line value continues under its first line
            self.rows.append([*([""] * len(head)), extra])

    def text(self) -> str:
        out: list[str] = []
        widths: list[int] = []
        rows = self.rows

        def write(start: int, end: int) -> None:
            for row in rows[start:end]:
                cells = [
                    cell.ljust(widths[j]) if j < len(widths) else cell for j, cell in enumerate(row)
                ]
                out.append("".join(cells).rstrip())

        def block(start: int, end: int) -> None:
            column = len(widths)
            this = start
            while this < end:
                if column >= len(rows[this]) - 1:
                    this += 1
                    continue
                write(start, this)
                start = this
                width = 0
                while this < end and column < len(rows[this]) - 1:
                    width = max(width, len(rows[this][column]) + 2)
                    this += 1
                widths.append(width)
                block(start, this)
                widths.pop()
                start = this
            write(start, end)

        block(0, len(rows))
        return "\n".join(out) + "\n"
