"""Atomic file writes shared by every module: write a temporary file in the same folder,
fsync it, then ``os.replace`` it over the target, so a reader (or a crash) never sees a
half-written file. Used for configs, checkpoints' markers, result summaries, tables, BDDL
files and init states. Also the one markdown-table writer of the text outputs."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int = 0o644) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def markdown_table(rows, float_format: str | None = "{:.3g}", empty: str = "(no rows)") -> str:
    """A GitHub-markdown table of ``rows`` (a DataFrame, or dicts whose keys, in first-seen order,
    are the columns; a missing key is an empty cell). Python and numpy floats are written with
    ``float_format`` (``None``: ``str``); everything else with ``str``. The one table writer of the
    diagnostics, replay check, evaluator summary, perf benchmarks and report sections."""
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):   # a DataFrame, its column order kept
        cols = [str(c) for c in rows.columns]
        records = [dict(zip(cols, r)) for r in rows.itertuples(index=False, name=None)]
    else:
        records = [dict(r) for r in rows]
        cols = list(dict.fromkeys(str(k) for r in records for k in r))
    if not cols:
        return empty

    def cell(v) -> str:
        if float_format is not None and isinstance(v, float):   # np.float64 is a float too
            return float_format.format(v)
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |" for r in records]
    return "\n".join(lines)
