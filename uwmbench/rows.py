"""The rows that travel between modules, defined once: a rollout row (one per rollout: the
evaluator writes it, the results store keeps it, the report reads it) and a run row (one per
protocol run: the protocol writes it, the store keeps it, the report and ``sweep --status``
read it).

This module owns

- the columns: :class:`RolloutRow` and :class:`RunRow` (fields and their meaning);
- the identity of a rollout: :data:`ROLLOUT_KEY` and :func:`rollout_key`;
- the one rule for duplicates, used by the evaluator (resume), the store and the report
  alike (:func:`latest_rows`, :func:`latest_frame`): of the rows with the same key, the one
  **written last** wins (largest ``written_at``; rows without it, written before the column
  existed, count as older than any stamped row; among equals the row read last wins). A
  re-evaluation of the same rollout therefore replaces the earlier result everywhere;
- JSONL I/O: :func:`append_jsonl` (whole lines, one ``O_APPEND`` write, fsynced) and
  :func:`read_jsonl` (skips and reports unreadable lines, e.g. a torn last line of a killed
  writer).

Rows are plain dicts on disk and in pandas; the dataclasses say what the columns are, fill
the defaults of old rows (``weights="raw"``: EMA weights were never evaluated before the
column existed) and build rows in the evaluator.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

log = logging.getLogger(__name__)

ROLLOUTS_FILE = "rollouts.jsonl"   # the evaluator's rows in its output folder


# ----------------------------------------------------------------------------- rollout rows
@dataclass
class RolloutRow:
    """One rollout. The first 14 fields are :data:`ROLLOUT_COLUMNS`, the columns every table
    starts with; any other column (run metadata such as ``train_eval_overlap``) is kept in
    ``extra`` and written as its own column."""

    # who: the run, the policy, the rollout
    run_id: str = ""                # protocol run id ("" for a plain `uwmbench evaluate`)
    sweep: str = ""                 # sweep the run belongs to ("" outside sweeps)
    cell: str = ""                  # sweep cell
    method: str = ""                # registered method name
    variant: str = ""               # arm label within the sweep (ablation value); "" or "default": the default arm
    task: str = ""                  # task name as given (the short name for the paper's LIBERO tasks)
    condition: str = ""             # "id" | "ood"
    seed: int = 0                   # training seed of the run (the evaluation seed when unknown)
    episode: int = 0                # episode i starts from init state i of the task (or data/demo_i of init_source)
    rollout_seed: int = 0           # rollout_seed(eval_seed, task_key, condition, episode): the env's reset seed
    success: bool = False
    steps: int = 0                  # env steps executed
    wall_time_s: float = 0.0        # reset + rollout (env creation not included)
    checkpoint: str = ""            # checkpoint folder rolled out ("" for a Method object)
    # how it was rolled out
    mode: str = "policy"            # "policy": predict_action; "inverse_dynamics": infer_action tracking demos
    weights: str = "raw"            # "ema" | "raw" (rows written before the column existed: raw)
    init_source: str = "benchmark"  # "benchmark" (its init states) or the demo file the start scene came from
    init_state_index: int = -1      # index into the benchmark's init states; -1: a demo's own start
    eval_seed: int = 0              # the evaluation seed the rollout seeds derive from
    max_steps: int = 0
    replan_every: int = 0           # actions executed open loop per policy call
    obs_frames: int = 0             # frames of history the policy sees
    render: str = "lazy"            # "lazy" (only the frames the policy reads) | "every_step"
    suite: str = ""                 # benchmark suite of the task (e.g. libero_10)
    task_key: str = ""              # the benchmark's full task id (<suite>/<name>)
    # cost
    env_create_s: float = 0.0
    reset_s: float = 0.0
    n_policy_calls: int = 0
    n_renders: int = 0              # camera frames rendered, all cameras
    video: str = ""                 # MP4 of the rollout, "" when not recorded
    # inverse_dynamics only (absent from the row otherwise)
    reference: str | None = None        # expert demo file tracked
    reference_demo: str | None = None   # demo of that file
    written_at: float | None = None     # time.time() when the row was written (the dedup order)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The flat row: the fields in order (``reference*`` / ``written_at`` only when set),
        then ``extra`` columns that no field names."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            v = getattr(self, f.name)
            if v is None and f.name in _OPTIONAL:
                continue
            out[f.name] = v
        out.update({k: v for k, v in self.extra.items() if k not in out})
        return out

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> "RolloutRow":
        """A stored row (missing columns take their defaults: an old row is a raw-weights policy
        rollout from the benchmark's init state); unknown columns go to ``extra``."""
        names = _ROLLOUT_FIELDS
        known = {k: v for k, v in row.items() if k in names and not _missing(v)}
        return cls(**known, extra={k: v for k, v in row.items() if k not in names})


_OPTIONAL = {"reference", "reference_demo", "written_at"}
_ROLLOUT_FIELDS = frozenset(f.name for f in dataclasses.fields(RolloutRow)) - {"extra"}

# the columns every rollout table starts with (store, evaluator, report)
ROLLOUT_COLUMNS = ["run_id", "sweep", "cell", "method", "variant", "task", "condition", "seed",
                   "episode", "rollout_seed", "success", "steps", "wall_time_s", "checkpoint"]

# One rollout is a pure function of these columns: the run and checkpoint, the task, condition
# and episode with its seed, and how it was rolled out. ``sweep``/``cell``/``seed`` are labels
# of the run (run_id) and outcome columns are not part of it.
ROLLOUT_KEY = ("run_id", "checkpoint", "method", "variant", "task", "condition", "mode", "weights", "init_source",
               "max_steps", "replan_every", "episode", "rollout_seed")
# what an absent or empty key column means (rows written before the column existed)
ROLLOUT_KEY_DEFAULTS = {"mode": "policy", "init_source": "benchmark", "weights": "raw"}
# a row needs these to be told apart from another: the store refuses rows without them, and the
# report only deduplicates rows that carry them
ROLLOUT_IDENTITY = ("run_id", "task", "condition", "episode")


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and v == "")


def _key_value(v: Any, default: str = "") -> str:
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):  # numpy / pandas scalars
        try:
            v = v.item()
        except (ValueError, AttributeError):
            pass
    if _missing(v):
        return default
    if isinstance(v, float) and v.is_integer():
        v = int(v)  # a CSV column with gaps reads integers as floats
    s = str(v)
    return default if s in ("nan", "None") else s


def rollout_key(row: Mapping[str, Any]) -> tuple[str, ...]:
    """The identity of a rollout row: :data:`ROLLOUT_KEY`'s values as strings, absent or empty
    values replaced by their defaults (``weights`` "raw", ``mode`` "policy", ``init_source``
    "benchmark", else ""), so that a row read from JSONL, CSV or the store gives the same key."""
    return tuple(_key_value(row.get(k), ROLLOUT_KEY_DEFAULTS.get(k, "")) for k in ROLLOUT_KEY)


def _written_at(row: Mapping[str, Any]) -> float:
    v = row.get("written_at")
    try:
        v = float(v)
    except (TypeError, ValueError):
        return 0.0
    return 0.0 if math.isnan(v) else v


def latest_indices(rows: list[Mapping[str, Any]]) -> list[int]:
    """Indices (ascending) of the rows that survive deduplication: per :func:`rollout_key`, the
    row written last (largest ``written_at``, missing = 0; ties: the later index)."""
    order = sorted(range(len(rows)), key=lambda i: _written_at(rows[i]))  # stable: ties keep read order
    last: dict[tuple, int] = {}
    for i in order:
        last[rollout_key(rows[i])] = i
    return sorted(last.values())


def latest_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows without duplicates: the row written last of each :func:`rollout_key`, in input order."""
    rows = list(rows)
    return [dict(rows[i]) for i in latest_indices(rows)]


def latest_frame(df: "pd.DataFrame") -> "pd.DataFrame":  # noqa: F821
    """:func:`latest_rows` for a DataFrame (same rule; row order and dtypes kept)."""
    if not len(df):
        return df
    keep = latest_indices(df.to_dict("records"))
    return df.iloc[keep].reset_index(drop=True)


# ----------------------------------------------------------------------------- run rows
RUN_STATUSES = ("running", "done", "failed")


@dataclass
class RunRow:
    """One protocol run (``uwmbench run``), recorded as events (running -> done | failed); a
    run's row is its first ``done`` event, else its latest one (:func:`pick_run_row`). Validation
    metrics appear as ``val_<name>`` columns; anything else (host, job_id, run_dir, ...) in
    ``extra``."""

    run_id: str = ""
    sweep: str = ""
    cell: str = ""
    method: str = ""
    variant: str = ""
    task: str = ""                    # the run's tasks, comma-separated
    seed: int = 0                     # training seed
    status: str = "running"           # running | done | failed
    train_steps: int | None = None    # optimizer steps over all stages
    final_loss: float | None = None   # mean over tasks of the last training loss
    wall_time_s: float | None = None  # over all attempts
    error: str | None = None          # traceback of a failed attempt ("" when done)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out.update({k: v for k, v in self.extra.items() if k not in out})
        return out


RUN_COLUMNS = [f.name for f in dataclasses.fields(RunRow) if f.name != "extra"]


def pick_run_row(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The row of a run from its events in write order: the first ``done`` event (a finished
    run is never rewritten), else the latest event."""
    for e in events:
        if e.get("status") == "done":
            return e
    return events[-1] if events else None


# ----------------------------------------------------------------------------- JSONL
def json_default(o: Any) -> Any:
    """JSON for the values rows carry: numpy scalars and arrays, paths; anything else as str."""
    if hasattr(o, "item") and hasattr(o, "dtype") and getattr(o, "ndim", 1) == 0:
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def append_jsonl(path: str | os.PathLike, rows: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> int:
    """Append one row or several as JSON lines with a single ``O_APPEND`` write, then fsync, so
    a reader sees whole lines or a torn last one, never interleaved rows. A torn last line left
    by a killed writer is ended first, so it cannot swallow the new row. Returns the rows
    written."""
    batch = [rows] if isinstance(rows, Mapping) else list(rows)
    if not batch:
        return 0
    data = "".join(json.dumps(dict(r), default=json_default, sort_keys=True) + "\n" for r in batch).encode()
    fd = os.open(os.fspath(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and _last_byte(path, size) != b"\n":
            data = b"\n" + data
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return len(batch)


def _last_byte(path: str | os.PathLike, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(size - 1)
        return f.read(1)


def read_jsonl(path: str | os.PathLike, skipped: list[str] | None = None) -> list[dict[str, Any]]:
    """The rows (JSON objects) of a JSONL file, ``[]`` when it does not exist. A line that is not
    a JSON object (a torn last line of a killed writer, a foreign line) is skipped with a
    warning and, when ``skipped`` is given, described there (``"<path>:<line>: <reason>"``)."""
    p = Path(path)
    rows: list[dict[str, Any]] = []
    if not p.is_file():
        return rows
    with open(p, "rb") as f:
        for i, raw in enumerate(f, 1):
            line = raw.decode("utf-8", errors="replace").strip()
            if not line:
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError(f"a JSON {type(row).__name__}, not an object")
            except ValueError as e:  # json.JSONDecodeError is a ValueError
                why = f"{p}:{i}: not a JSON row ({e}); line skipped"
                log.warning("%s", why)
                if skipped is not None:
                    skipped.append(why)
                continue
            rows.append(row)
    return rows


__all__ = ["ROLLOUTS_FILE", "RolloutRow", "ROLLOUT_COLUMNS", "ROLLOUT_KEY", "ROLLOUT_KEY_DEFAULTS",
           "ROLLOUT_IDENTITY", "rollout_key", "latest_rows", "latest_frame", "latest_indices", "RunRow",
           "RUN_COLUMNS", "RUN_STATUSES", "pick_run_row", "append_jsonl", "read_jsonl", "json_default"]
