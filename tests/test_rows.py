"""Owned schemas: the rollout row and its key (uwmbench.rows), one rule for duplicates in the
evaluator, the store and the report, JSONL I/O, and the run folder layout (uwmbench.run_dir)."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from uwmbench.analysis import report
from uwmbench.rows import (ROLLOUT_COLUMNS, ROLLOUT_KEY, RUN_COLUMNS, RolloutRow, RunRow, append_jsonl, latest_frame,
                           latest_rows, pick_run_row, read_jsonl, rollout_key)
from uwmbench.run_dir import CheckpointDir, EvalDir, RunDir
from uwmbench.store import ResultsStore


def _row(ep=0, success=True, **kw):
    cols = dict(run_id="sw/c", sweep="sw", cell="c", method="dp", variant="default", task="book_caddy",
                condition="id", seed=1, episode=ep, rollout_seed=100 + ep, success=success, steps=20,
                wall_time_s=0.5, checkpoint="runs/sw/c/finetune/book_caddy/checkpoints/step_00000010",
                max_steps=520, replan_every=16)
    return RolloutRow(**{**cols, **kw}).to_dict()


# ----------------------------------------------------------------------------- the row
def test_rollout_row_columns_defaults_and_round_trip():
    names = [f.name for f in dataclasses.fields(RolloutRow)]
    assert names[:len(ROLLOUT_COLUMNS)] == ROLLOUT_COLUMNS and set(ROLLOUT_KEY) <= set(names)
    r = _row(extra={"train_eval_overlap": 0})
    assert list(r)[:len(ROLLOUT_COLUMNS)] == ROLLOUT_COLUMNS and r["train_eval_overlap"] == 0
    assert "reference" not in r and "written_at" not in r                      # optional columns: only when set
    assert RolloutRow.from_dict(r).to_dict() == r
    old = {"run_id": "r", "task": "t", "condition": "id", "episode": 0, "success": True}   # before mode/weights
    o = RolloutRow.from_dict(old)
    assert (o.weights, o.mode, o.init_source) == ("raw", "policy", "benchmark")
    assert rollout_key(old) == rollout_key({**old, "weights": "raw", "mode": "policy", "init_source": "benchmark"})
    assert rollout_key(old) != rollout_key({**old, "weights": "ema"}) != rollout_key({**old, "mode": "inverse_dynamics"})


def test_rollout_key_is_the_same_from_jsonl_csv_and_numpy(tmp_path):
    rows = [_row(0), _row(1, variant=""), {**_row(2), "rollout_seed": None}]
    append_jsonl(tmp_path / "r.jsonl", rows)
    pd.DataFrame(rows).to_csv(tmp_path / "r.csv", index=False)   # "" -> NaN, ints with gaps -> floats
    from_csv = pd.read_csv(tmp_path / "r.csv").to_dict("records")
    as_numpy = [{k: (np.int64(v) if isinstance(v, int) and not isinstance(v, bool) else v) for k, v in r.items()}
                for r in rows]
    keys = [rollout_key(r) for r in rows]
    assert [rollout_key(r) for r in read_jsonl(tmp_path / "r.jsonl")] == keys
    assert [rollout_key(r) for r in from_csv] == keys and [rollout_key(r) for r in as_numpy] == keys


def test_jsonl_append_after_a_torn_line_and_what_is_skipped(tmp_path):
    p = tmp_path / "rows.jsonl"
    assert read_jsonl(p) == [] and append_jsonl(p, []) == 0
    append_jsonl(p, {"a": 1, "x": np.float32(0.5), "ok": np.bool_(True), "v": np.arange(2), "p": tmp_path})
    with open(p, "a") as f:
        f.write('{"a": 2, "trunc')                                 # a writer killed mid-line
    append_jsonl(p, [{"a": 3}, {"a": 4}])                           # a later writer: its rows survive
    with open(p, "a") as f:
        f.write("[1, 2]\n")                                        # JSON, but not a row
    skipped: list[str] = []
    rows = read_jsonl(p, skipped)
    assert [r["a"] for r in rows] == [1, 3, 4] and len(skipped) == 2
    assert rows[0] == {"a": 1, "x": 0.5, "ok": True, "v": [0, 1], "p": str(tmp_path)}


# ----------------------------------------------------------------------------- one rule for duplicates
def test_store_report_and_evaluator_resolve_a_duplicated_rollout_alike(tmp_path):
    """A rollout written twice (a re-evaluation): the row written last wins everywhere, whatever
    the order files are read in; rows of other rollouts (another mode, weights, episode) stay."""
    old, new = {**_row(0, success=True), "written_at": 100.0}, {**_row(0, success=False), "written_at": 200.0}
    others = [{**_row(1), "written_at": 150.0}, {**_row(0), "mode": "inverse_dynamics", "written_at": 90.0},
              {**_row(0), "weights": "ema", "written_at": 90.0}]
    # the store: two writers
    store = tmp_path / "store"
    ResultsStore(store).add_rollouts([new] + others[:1])
    ResultsStore(store).add_rollouts([old] + others[1:])
    # plain files read in name order: the newer row comes first
    files = tmp_path / "files"
    for d in ("a", "b"):
        (files / d).mkdir(parents=True)
    append_jsonl(EvalDir(files / "a").rollouts, [new])
    append_jsonl(EvalDir(files / "b").rollouts, [old] + others)

    def winner(df):
        sel = df[(df["episode"] == 0) & (df["mode"].fillna("policy") == "policy") & (df["weights"] == "raw")]
        assert len(sel) == 1, sel
        return bool(sel.iloc[0]["success"])

    for df in (ResultsStore(store).rollouts(), report.load_results(store).rollouts,
               report.load_results(files).rollouts, pd.DataFrame(latest_rows([old, new] + others)),
               latest_frame(pd.DataFrame([new, old] + others))):
        assert len(df) == 4 and winner(df) is False
    res = report.load_results(files)
    assert any("1 duplicate rollout row(s)" in s and "written last" in s for s in res.sources)


def test_report_does_not_merge_rows_without_identity(tmp_path):
    rows = [{"method": "dp", "task": "t", "seed": 0, "success": s} for s in (True, False, True)]
    pd.DataFrame(rows).to_csv(tmp_path / "hand.csv", index=False)
    assert len(report.load_results(tmp_path).rollouts) == 3


# ----------------------------------------------------------------------------- run rows
def test_run_row_columns_and_pick():
    assert RUN_COLUMNS == ["run_id", "sweep", "cell", "method", "variant", "task", "seed", "status", "train_steps",
                           "final_loss", "wall_time_s", "error"]
    r = RunRow(run_id="x", status="done", extra={"val_loss": 0.1}).to_dict()
    assert list(r)[:len(RUN_COLUMNS)] == RUN_COLUMNS and r["val_loss"] == 0.1
    ev = [{"status": "running", "i": 0}, {"status": "done", "i": 1}, {"status": "failed", "i": 2}]
    assert pick_run_row(ev)["i"] == 1 and pick_run_row(ev[:1])["i"] == 0 and pick_run_row([]) is None


# ----------------------------------------------------------------------------- run folders
def test_run_dir_layout_of_a_protocol_run(tmp_path):
    rd = RunDir(tmp_path / "runs" / "sw" / "c")
    assert rd.finetune("book_caddy").checkpoints == rd.path / "finetune/book_caddy/checkpoints"
    assert rd.pretrain.metrics == rd.path / "pretrain/metrics.csv"
    assert rd.eval("book_caddy", "inverse_dynamics").rollouts == rd.path / "eval/book_caddy/inverse_dynamics/rollouts.jsonl"
    assert rd.diagnostics("book_caddy") == rd.path / "diagnostics/book_caddy"
    assert (rd.done, rd.stages_file, rd.run_log, rd.worker) == tuple(
        rd.path / n for n in ("DONE", "stages.json", "run.log", "worker.json"))
    assert rd.read_done() is None and rd.read_worker() is None and not rd.has_checkpoints()
    st = rd.stages()
    st.put("finetune/book_caddy", {"steps": 3})
    st.put("elapsed_s", 1.0)
    assert rd.stages().get("finetune/book_caddy") == {"steps": 3} and rd.stages().finished() == {"finetune/book_caddy"}
    d = rd.diagnostics("book_caddy")
    d.mkdir(parents=True)
    (d / "summary.json").write_text("{}")
    assert RunDir.find_diagnostics(tmp_path / "runs") == [("c", "book_caddy", (d / "summary.json").resolve())]
    ck = rd.finetune("book_caddy").checkpoint(10)
    assert ck.path.name == "step_00000010" and ck.run_dir == rd.finetune("book_caddy")


def test_run_dir_reads_what_the_trainer_wrote(tmp_path):
    """The trainer and checkpoints write through RunDir/CheckpointDir; read back through them."""
    from libero_files import write_libero_hdf5

    from uwmbench.benchmarks.checkpoint import latest_checkpoint, resolve_checkpoint
    from uwmbench.benchmarks.train import train
    from uwmbench.config import load_config

    data = write_libero_hdf5(tmp_path / "demos.hdf5", n_demos=2, length=20, size=32)
    cfg = load_config("train", ["method=bc", "method.size=tiny", f"data.sources=[{{path:{data}}}]", "trainer.steps=2",
                                "trainer.batch_size=2", "trainer.progress=false", "trainer.log_every=1",
                                "trainer.ckpt_every=1", "data.val_fraction=0", "data.latent_cache=false",
                                "trainer.ema=0.9"])
    s = train(cfg, tmp_path / "run")
    rd = RunDir(tmp_path / "run")
    ck = CheckpointDir(rd.latest_checkpoint())
    assert ck.path == rd.checkpoint(2).path == latest_checkpoint(rd.path) == resolve_checkpoint(rd.path)
    assert str(ck.path) == s["checkpoint"] and rd.read_summary()["steps"] == 2 and rd.config.is_file()
    assert all(p.is_file() for p in (ck.model, ck.ema, ck.trainer_state, ck.method, ck.config, ck.meta)) and ck.has_ema
    assert json.loads(ck.meta.read_text())["frame_size"] == [32, 32]
    assert [p.name for p in rd.step_checkpoints()] == ["step_00000001", "step_00000002"]
    assert rd.last_metric("loss") == pytest.approx(s["final_loss"]) and rd.last_metric("nope") is None
    rd.latest_marker.unlink()                                   # a lost marker: the newest complete checkpoint
    assert rd.latest_checkpoint() == ck.path
