"""Results store: one row per rollout and one per run, safe with many concurrent jobs.

Layout (plain files, so it works on any shared file system, NFS included)::

    <root>/rollouts/<writer>.jsonl            append-only; one writer = one process
    <root>/runs/<run_id>/<time>-<writer>-<status>.json   one file per run-state event

Every process writes only its own files, so concurrent jobs never contend for a lock. Files
are merged on read:

- rollouts: a partial last line left by a killed job is ignored; of the rows of the same
  rollout (``uwmbench.rows.ROLLOUT_KEY``: a re-evaluation, a resumed one) the row written
  last is kept - the rule the evaluator and the report apply too (``uwmbench.rows``).
- runs: a run's row is its first ``done`` event if it has one (a finished run is never
  rewritten: later events are ignored), else its latest event (``uwmbench.rows.pick_run_row``).

API for analysis: ``ResultsStore(root).rollouts() -> DataFrame``, ``.runs() -> DataFrame``.
"""
from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd

from uwmbench.rows import (ROLLOUT_COLUMNS, ROLLOUT_IDENTITY, ROLLOUT_KEY, RUN_COLUMNS, RUN_STATUSES, append_jsonl,
                           json_default, latest_rows, pick_run_row, read_jsonl)

__all__ = ["ResultsStore", "safe_name", "ROLLOUT_COLUMNS", "RUN_COLUMNS", "RUN_STATUSES", "ROLLOUT_KEY"]

_SAFE = re.compile(r"[^A-Za-z0-9._=+-]")


def safe_name(s: str) -> str:
    """File-system safe version of a run id (``/`` and other characters become ``_``)."""
    out = _SAFE.sub("_", str(s))
    if not out or out in (".", ".."):
        raise ValueError(f"run_id {s!r} cannot be used as a file name")
    return out


def _writer_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _jsonable(v: Any) -> Any:
    return json_default(v) if hasattr(v, "dtype") or isinstance(v, Path) else v  # numpy values, paths


class ResultsStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.writer = _writer_id()
        self._rollout_file: Path | None = None

    # ------------------------------------------------------------------------- writing
    def add_rollouts(self, rows: Iterable[dict[str, Any]]) -> int:
        """Append rollout rows (durably: flushed and fsynced before returning)."""
        rows = [dict(r) for r in rows]
        if not rows:
            return 0
        now = time.time()
        for r in rows:
            r.setdefault("written_at", now)
            missing = [c for c in ROLLOUT_IDENTITY if r.get(c) is None]
            if missing:
                raise ValueError(f"rollout row is missing {missing}: {r}")
        if self._rollout_file is None:
            d = self.root / "rollouts"
            d.mkdir(parents=True, exist_ok=True)
            self._rollout_file = d / f"{self.writer}.jsonl"
        return append_jsonl(self._rollout_file, rows)

    def rollout_sink(self, meta: dict[str, Any] | None = None) -> Callable[[Any], None]:
        """A ``row_sink`` for the evaluator: accepts a dict, a list of dicts or a DataFrame;
        ``meta`` columns fill in what the row does not set."""
        meta = dict(meta or {})

        def sink(rows: Any) -> None:
            if hasattr(rows, "to_dict"):
                rows = rows.to_dict("records")
            elif isinstance(rows, dict):
                rows = [rows]
            self.add_rollouts({**meta, **r} for r in rows)
        return sink

    def set_run(self, row: dict[str, Any]) -> dict[str, Any]:
        """Record a run-state event (``status`` running/done/failed). A run that is already
        ``done`` keeps its row: the call is ignored and the stored row returned."""
        row = {k: _jsonable(v) for k, v in row.items()}
        run_id, status = row.get("run_id"), row.get("status")
        if not run_id:
            raise ValueError(f"run row has no run_id: {row}")
        if status not in RUN_STATUSES:
            raise ValueError(f"run row status={status!r} is not one of {RUN_STATUSES}")
        done = self.run(run_id)
        if done is not None and done.get("status") == "done":
            return done
        d = self.root / "runs" / safe_name(run_id)
        d.mkdir(parents=True, exist_ok=True)
        row.setdefault("time", time.time())
        name = f"{time.time_ns():020d}-{self.writer}-{status}.json"
        tmp = d / f".{name}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(row, f, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, d / name)
        return row

    # ------------------------------------------------------------------------- reading
    def _run_events(self, d: Path) -> list[dict[str, Any]]:
        out = []
        for p in sorted(d.glob("*.json")):
            try:
                out.append(json.loads(p.read_text(encoding="utf-8")))
            except (OSError, json.JSONDecodeError):
                continue  # unreadable event: skip (writes are atomic, so only foreign files)
        return out

    _pick = staticmethod(pick_run_row)

    def run(self, run_id: str) -> dict[str, Any] | None:
        d = self.root / "runs" / safe_name(run_id)
        return self._pick(self._run_events(d)) if d.is_dir() else None

    def run_records(self) -> list[dict[str, Any]]:
        base = self.root / "runs"
        if not base.is_dir():
            return []
        out = []
        for d in sorted(base.iterdir()):
            if d.is_dir():
                r = self._pick(self._run_events(d))
                if r is not None:
                    out.append(r)
        return out

    def rollout_records(self) -> list[dict[str, Any]]:
        base = self.root / "rollouts"
        if not base.is_dir():
            return []
        rows = [r for p in sorted(base.glob("*.jsonl")) for r in read_jsonl(p)]
        rows.sort(key=lambda r: r.get("written_at") or 0.0)
        return latest_rows(rows)

    def rollouts(self):
        """All rollout rows as a DataFrame (columns: ROLLOUT_COLUMNS + extras)."""
        df = pd.DataFrame(self.rollout_records())
        for c in ROLLOUT_COLUMNS:
            if c not in df.columns:
                df[c] = pd.Series(dtype="object")
        if len(df):
            df["success"] = df["success"].astype(bool)
            for c in ("episode", "rollout_seed", "steps", "seed"):
                if df[c].notna().all():
                    df[c] = df[c].astype(int)
        extra = [c for c in df.columns if c not in ROLLOUT_COLUMNS]
        return df[ROLLOUT_COLUMNS + extra].reset_index(drop=True)

    def runs(self):
        """One row per run (columns: RUN_COLUMNS + val_* metrics + extras)."""
        df = pd.DataFrame(self.run_records())
        for c in RUN_COLUMNS:
            if c not in df.columns:
                df[c] = pd.Series(dtype="object")
        extra = sorted(c for c in df.columns if c not in RUN_COLUMNS)
        extra = [c for c in extra if c.startswith("val_")] + [c for c in extra if not c.startswith("val_")]
        return df[RUN_COLUMNS + extra].reset_index(drop=True)

    def cell_states(self, sweep: str) -> dict[str, dict[str, Any]]:
        """cell name -> stored run row, for the runs of ``sweep``."""
        return {r["cell"]: r for r in self.run_records() if r.get("sweep") == sweep and r.get("cell")}
