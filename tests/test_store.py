"""Results store: concurrent writers, merge on read, finished runs never rewritten."""
import json
import multiprocessing as mp

import pytest

from uwmbench.store import ROLLOUT_COLUMNS, RUN_COLUMNS, ResultsStore


def _row(run_id, ep, success=True, **kw):
    return {"run_id": run_id, "sweep": "s", "cell": "c", "method": "bc", "variant": "default", "task": "t",
            "condition": "id", "seed": 0, "episode": ep, "rollout_seed": 100 + ep, "success": success,
            "steps": 10, "wall_time_s": 0.1, "checkpoint": "ck", **kw}


def _writer(root, k, n):
    st = ResultsStore(root)
    for i in range(n):
        st.add_rollouts([_row(f"run{k}", i)])
    st.set_run({"run_id": f"run{k}", "status": "done", "train_steps": n})


def test_empty_store_has_columns(tmp_path):
    st = ResultsStore(tmp_path)
    assert list(st.rollouts().columns)[:len(ROLLOUT_COLUMNS)] == ROLLOUT_COLUMNS
    assert list(st.runs().columns)[:len(RUN_COLUMNS)] == RUN_COLUMNS
    assert len(st.rollouts()) == 0 and len(st.runs()) == 0


def test_concurrent_processes_lose_nothing(tmp_path):
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(tmp_path, k, 25)) for k in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    st = ResultsStore(tmp_path)
    df = st.rollouts()
    assert len(df) == 150
    assert df.groupby("run_id").size().to_dict() == {f"run{k}": 25 for k in range(6)}
    assert df["success"].dtype == bool and df["episode"].dtype.kind == "i"
    runs = st.runs()
    assert sorted(runs["run_id"]) == [f"run{k}" for k in range(6)] and set(runs["status"]) == {"done"}


def test_duplicates_keep_last_and_partial_line_ignored(tmp_path):
    """One rule for duplicates (uwmbench.rows): the row written last wins, in the store as in the
    report and the evaluator's resume (it used to be the first here, the last in the report)."""
    a, b = ResultsStore(tmp_path), ResultsStore(tmp_path)
    a.add_rollouts([_row("r", 0, success=True), _row("r", 1)])
    b.add_rollouts([_row("r", 0, success=False)])  # a re-evaluation writes episode 0 again
    with open(tmp_path / "rollouts" / "killed-writer.jsonl", "w") as f:
        f.write(json.dumps(_row("r", 2)) + "\n" + '{"run_id": "r", "episo')  # killed mid-line
    df = ResultsStore(tmp_path).rollouts().sort_values("episode")
    assert df["episode"].tolist() == [0, 1, 2]
    assert bool(df.iloc[0]["success"]) is False


def test_done_run_is_never_rewritten(tmp_path):
    st = ResultsStore(tmp_path)
    st.set_run({"run_id": "sw/c1", "sweep": "sw", "cell": "c1", "status": "running"})
    assert st.run("sw/c1")["status"] == "running"
    st.set_run({"run_id": "sw/c1", "sweep": "sw", "cell": "c1", "status": "failed", "error": "Traceback: boom"})
    assert st.run("sw/c1")["status"] == "failed"
    st.set_run({"run_id": "sw/c1", "sweep": "sw", "cell": "c1", "status": "done", "final_loss": 0.5, "val_loss": 0.4})
    st.set_run({"run_id": "sw/c1", "sweep": "sw", "cell": "c1", "status": "failed", "error": "late"})
    st.set_run({"run_id": "sw/c1", "sweep": "sw", "cell": "c1", "status": "running"})
    row = ResultsStore(tmp_path).runs().iloc[0]
    assert row["status"] == "done" and row["final_loss"] == 0.5 and row["val_loss"] == 0.4
    assert ResultsStore(tmp_path).cell_states("sw")["c1"]["status"] == "done"


def test_bad_rows_are_refused(tmp_path):
    st = ResultsStore(tmp_path)
    with pytest.raises(ValueError, match="status"):
        st.set_run({"run_id": "x", "status": "finished"})
    with pytest.raises(ValueError, match="episode"):
        st.add_rollouts([{"run_id": "x", "task": "t", "condition": "id"}])


def test_rollout_sink_fills_meta(tmp_path):
    st = ResultsStore(tmp_path)
    sink = st.rollout_sink({"run_id": "m", "sweep": "s", "mode": "policy"})
    sink({"task": "t", "condition": "ood", "episode": 3, "success": False})
    df = st.rollouts()
    assert df.iloc[0]["run_id"] == "m" and df.iloc[0]["condition"] == "ood" and df.iloc[0]["mode"] == "policy"
