"""What every command shares for writing: robust progress lines, rank prefixes, tables."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence

_stdout_lost = False


def echo(line: str) -> None:
    """Progress lines go out at once, also when stdout is a pipe or a file.

    A reader that goes away (`mlrun RECIPE | head -3`) or a full device behind stdout
    must not stop a run: the run folder keeps the record, so the log is dropped instead.
    """
    global _stdout_lost
    if _stdout_lost:
        return
    try:
        print(line, flush=True)
    except OSError as exc:
        _stdout_lost = True
        silence_stdout()
        if not isinstance(exc, BrokenPipeError):
            with contextlib.suppress(OSError):
                print(
                    f"warning: cannot write the run log to stdout ({exc.strerror or exc}); "
                    "training goes on, the run folder keeps the record",
                    file=sys.stderr,
                )


def silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush cannot fail too."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def rank_prefix() -> str:
    """``[rank N] `` inside a distributed job, so that a failing rank is named."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"[rank {os.environ.get('RANK', '?')}] "
    return ""


def format_table(rows: Sequence[Sequence[str]]) -> str:
    """Rows (the first is the header) as aligned columns, two spaces apart.

    The last column is not padded: it holds free text (a summary, an error), and a line
    never ends in padding.
    """
    if not rows:
        return ""
    last = len(rows[0]) - 1
    widths = [max(len(row[i]) for row in rows) for i in range(last)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:last], widths)]
        lines.append("  ".join([*cells, row[last]]))
    return "\n".join(lines)
