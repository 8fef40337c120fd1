"""The protocol as a stage graph (uwmbench.sweeps.stages): the graph of the paper's main table,
shared pretraining, rollout chunks, the dry run's per-stage estimates, and the graph run as local
jobs on a benchmark without a simulator (tests/toy_runner.py). The same graph on the local SLURM
(dependencies, preemption, cancel): tests/test_slurm.py."""
import json
import os
import sys
import time
from pathlib import Path

import pytest

from uwmbench.sweeps import grids, launch, protocol, stages, sweep as sweep_cli
from uwmbench.store import ResultsStore

from conftest_slurm import write_smoke_hdf5, wait_until

TESTS = str(Path(__file__).resolve().parent)

# one tiny BC run on the toy benchmark: finetune on data_root/libero_10/reach.hdf5, 4 rollouts
TOY = ["method.size=tiny", "pretrain.enabled=false", "finetune.trainer.steps=4", "finetune.trainer.batch_size=4",
       "finetune.trainer.warmup_steps=0", "finetune.trainer.ckpt_every=2", "finetune.trainer.val_every=0",
       "finetune.trainer.progress=false", "finetune.trainer.device=cpu", "data.latent_cache=false",
       "data.val_fraction=0.34", "evaluate.runner=toy_runner:ReachRunner", "evaluate.conditions=[id]",
       "evaluate.n_rollouts=4", "evaluate.workers=0", "evaluate.max_steps=30", "evaluate.diagnose_windows=0",
       "evaluate.device=cpu"]


@pytest.fixture
def reach_data(tmp_path):
    write_smoke_hdf5(tmp_path / "data" / "libero_10" / "reach.hdf5")
    return tmp_path / "data"


@pytest.fixture(scope="module")
def main_graph(tmp_path_factory):
    """The main table's stage graph on the SLURM launcher's defaults (composed once: 12 cells)."""
    tmp = tmp_path_factory.mktemp("main")
    cells = grids.expand_sweep("main", [], estimate=False)
    lcfg = launch.load_launcher("slurm")
    return tmp, cells, stages.build_graph(cells, str(tmp / "store"), str(tmp / "runs"), lcfg), lcfg


def test_main_table_graph(main_graph):
    """12 cells (4 methods x 3 seeds, 5 tasks each): one pretrain per cell (4-GPU DDP jobs), a
    finetune per task, 50 ID + 50 OOD rollouts in chunks of 25 on CPUs, one row job per cell."""
    tmp_path, cells, nodes, lcfg = main_graph
    kinds = {k: [n for n in nodes if n.kind == k] for k in stages.KINDS}
    assert {k: len(v) for k, v in kinds.items()} == {"data": 0, "pretrain": 12, "finetune": 60, "evaluate": 240, "row": 12}
    assert all(n.tasks == 4 and n.resources.gpus == 4 for n in kinds["pretrain"])  # paper: 4 x 36
    assert all(n.resources.gpus == 0 and n.cpu_partition and n.rollouts == 25 for n in kinds["evaluate"])
    assert sum(n.rollouts for n in nodes) == 6000
    by = {n.key: n for n in nodes}
    seen = set()
    for n in nodes:  # dependencies come first, and each stage needs what the protocol says
        assert all(d in seen for d in n.deps), n.key
        seen.add(n.key)
    ev = by["uwm-s0/eval/book_caddy/policy/ood/25-49"]
    assert ev.deps == ["uwm-s0/finetune/book_caddy"]
    assert by["uwm-s0/finetune/book_caddy"].deps == [kinds["pretrain"][0].key]
    row = by["uwm-s0/row"]
    assert len(row.deps) == 20 and all(by[d].kind == "evaluate" for d in row.deps)
    # every cell's run config points at its (shared) pretrain folder
    assert all(any(o.startswith("pretrain.run_dir=") for o in c.overrides) for c in cells)


def test_cells_with_the_same_pretraining_share_one_pretrain_job(tmp_path):
    """Two cells that differ only after pretraining (finetune steps) train one pretrain; a third
    with other pretrain steps trains its own. The shared folder is named by method, seed and a
    hash of what pretraining depends on."""
    base = grids.expand_sweep("main", ["methods=[dp]", "seeds=[0]", "tasks=[book_caddy]"], estimate=False)[0]
    import dataclasses
    a = dataclasses.replace(base, cell="a", overrides=base.overrides + ["finetune.trainer.steps=10"])
    b = dataclasses.replace(base, cell="b", overrides=base.overrides + ["finetune.trainer.steps=20"])
    c = dataclasses.replace(base, cell="c", overrides=base.overrides + ["pretrain.trainer.steps=7"])
    nodes = stages.build_graph([a, b, c], str(tmp_path / "store"), str(tmp_path / "runs"),
                               launch.load_launcher("slurm"))
    pre = [n for n in nodes if n.kind == "pretrain"]
    assert len(pre) == 2 and sorted(len(n.cells) for n in pre) == [1, 2]
    shared = next(n for n in pre if len(n.cells) == 2)
    assert shared.cells == ["a", "b"] and Path(shared.marker[0]).parent.name.startswith("dp-s0-")
    rd = [o for o in a.overrides if o.startswith("pretrain.run_dir=")]
    assert rd and rd == [o for o in b.overrides if o.startswith("pretrain.run_dir=")]
    assert rd != [o for o in c.overrides if o.startswith("pretrain.run_dir=")]
    assert Path(rd[0].split("=", 1)[1]).parent == (tmp_path / "runs" / "main" / "_pretrain").absolute()


def test_dry_run_prints_jobs_gpu_and_cpu_hours_per_stage(main_graph, capsys):
    assert sweep_cli.main(["main", "--dry-run", "--skip-data-check", "--launcher", "slurm"]) == 0
    out = capsys.readouterr().out
    table = out[out.index("stage jobs"):]
    lines = {l.split()[0]: l.split() for l in table.splitlines()[1:] if l.split() and l.split()[0] in
             ("pretrain", "finetune", "evaluate", "row", "total")}
    assert lines["pretrain"][1] == "12" and lines["finetune"][1] == "60" and lines["evaluate"][1] == "240"
    assert "60 arrays" in table and lines["total"][1] == "324" and "GPU_h" in table and "CPU_h" in table
    assert "324 stage jobs chained with dependencies" in out
    _, _, nodes, lcfg = main_graph
    df = stages.stage_table(nodes, 25).set_index("stage")
    # pretraining: 100k steps x 4 x 36 samples at 118 samples/s per H100 (UWM) ...; rollouts on CPU cores
    assert df.loc["pretrain", "GPU_h"] > 300 and df.loc["evaluate", "GPU_h"] == 0
    assert df.loc["evaluate", "CPU_h"] > 250  # at least the 250 CPU-hours of simulation
    assert df.loc["total", "jobs"] == 324 and df.loc["evaluate", "rollouts"] == 6000
    # the local launcher runs a cell per job unless asked, and says so
    assert sweep_cli.main(["main", "--dry-run", "--skip-data-check", "methods=[dp]", "seeds=[0]"]) == 0
    assert "1 jobs, one per cell" in capsys.readouterr().out


def test_chunks_cover_every_rollout_once():
    from uwmbench.schemas import RunEvalConfig
    ev = RunEvalConfig(n_rollouts=50, conditions=["id", "ood"], modes=["policy", "inverse_dynamics"])
    ch = protocol.eval_chunks(ev, "policy", 20)
    assert ch == [("id", 0, 19), ("id", 20, 39), ("id", 40, 49), ("ood", 0, 19), ("ood", 20, 39), ("ood", 40, 49)]
    assert protocol.eval_chunks(ev, "inverse_dynamics", 50) == [("id", 0, 49)]  # tracks the ID demos only
    from uwmbench.run_dir import StageKey
    key = protocol.parse_stage("eval/book_caddy/policy/ood/20-39")
    assert (key.kind, key.task, key.mode, key.chunk) == ("eval", "book_caddy", "policy", ("ood", 20, 39))
    with pytest.raises(ValueError, match="stage"):
        protocol.parse_stage("eval/book_caddy")
    with pytest.raises(ValueError, match="not a stage job"):
        protocol.parse_stage("eval/book_caddy/policy")          # a (task, mode) result, gathered by `row`
    # keys are typed values: they round-trip, also for task names with slashes (libero_10/<name>)
    task = "libero_10/KITCHEN_SCENE3_turn_on_the_stove_and_put_the_moka_pot_on_it"
    for k in (StageKey("data"), StageKey("pretrain"), StageKey("row"), StageKey.finetune(task),
              StageKey.diagnostics(task), StageKey.eval(task, "policy"), StageKey.eval(task, "inverse_dynamics"),
              StageKey.eval(task, "policy", ("ood", 20, 39))):
        assert StageKey.parse(str(k)) == k, k
    assert str(StageKey.eval("book_caddy", "policy", ("id", 0, 24))) == "eval/book_caddy/policy/id/0-24"
    assert protocol.parse_stage(f"finetune/{task}").task == task


def test_one_run_graph_for_the_local_run_and_the_stage_jobs(main_graph):
    """The stage order is written once (protocol.run_graph): a sweep's nodes of a cell are its run
    graph in rollout chunks, and a local run executes the same graph with one evaluation stage per
    (task, mode), in the order finetune -> its rollouts, task by task, then row."""
    tmp_path, cells, nodes, lcfg = main_graph
    c = cells[0]
    full = protocol._resolve(grids.compose_cell(c, str(tmp_path / "store"), str(tmp_path / "runs")))
    pre, fin, ev = protocol.check_run(full, data=False)
    chunked = protocol.run_graph(full, pre, fin, ev, per_job=lcfg["rollouts_per_job"])
    mine = [n for n in nodes if c.cell in n.cells]
    assert sorted(n.stage for n in mine) == sorted(str(k) for k, _ in chunked)
    by = {n.stage: n for n in mine}
    for k, deps in chunked:  # the same dependencies, under the sweep's node keys
        assert [by[str(d)].key for d in deps] == by[str(k)].deps, k
    local = [str(k) for k, _ in protocol.run_graph(full, pre, fin, ev)]
    t0 = full["tasks"][0]
    assert local[:2 + len(ev.modes)] == ["pretrain", f"finetune/{t0}"] + [f"eval/{t0}/{m}" for m in ev.modes]
    assert local[-1] == "row" and len(local) == 2 + len(full["tasks"]) * (1 + len(ev.modes))
    # a run without finetuning evaluates its pretrained checkpoint; without rollouts, row follows training
    no_fin = protocol.run_graph(full, pre, protocol.StageConfig(enabled=False), ev)
    assert [str(k) for k, _ in no_fin][:2] == ["pretrain", f"eval/{t0}/{ev.modes[0]}"] and no_fin[1][1] == [stages.StageKey("pretrain")]


def test_protocol_on_another_benchmark_in_process(reach_data, tmp_path, monkeypatch):
    """evaluate.runner plugs a benchmark into the protocol: the toy runner, no simulator."""
    monkeypatch.syspath_prepend(TESTS)
    from uwmbench.config import load_config
    cfg = load_config("run", TOY + ["method=bc", f"data_root={reach_data}", "tasks=[reach]",
                                    f"runs_root={tmp_path / 'runs'}", f"store={tmp_path / 'store'}", "run_id=toy"])
    row = protocol.run_protocol(cfg)
    assert row["status"] == "done" and row["evaluated"]
    df = ResultsStore(tmp_path / "store").rollouts()
    assert sorted(df["episode"]) == [0, 1, 2, 3] and set(df["task"]) == {"reach"}
    st = json.loads((tmp_path / "runs" / "toy" / "stages.json").read_text())
    assert st["eval/reach/policy"]["rollouts"] == 4
    with pytest.raises(Exception, match="reach"):  # an unknown task of that benchmark fails the check
        protocol.check_run(protocol._resolve(load_config("run", TOY + ["method=bc", "tasks=[nope]"])), data=False)


def test_stage_jobs_run_the_graph_locally(reach_data, tmp_path, monkeypatch, capsys):
    """launcher.stage_jobs=true on the local launcher: finetune -> 2 rollout chunks -> row as 4
    jobs started at once; each waits for the stages it needs. Every rollout lands once in the
    store, --status lists each stage done, and a rerun launches nothing."""
    monkeypatch.setenv("PYTHONPATH", TESTS + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.syspath_prepend(TESTS)
    store_dir, runs = tmp_path / "store", tmp_path / "runs"
    args = ["smoke", "--store", str(store_dir), "--runs", str(runs), "--threads", "1", "launcher.stage_jobs=true",
            "launcher.rollouts_per_job=2", "launcher.max_parallel=2", "methods=[bc]", "seeds=[0]", "tasks=[reach]",
            f"data_root={reach_data}"] + TOY
    t0 = time.time()
    assert sweep_cli.main(args) == 0
    assert time.time() - t0 < 60, "launch must return at once"
    out = capsys.readouterr().out
    assert "submitted 4 stage job(s)" in out and "1 finetune" in out and "2 evaluate" in out and "1 row" in out
    store = ResultsStore(store_dir)
    row = wait_until(lambda: (store.run("smoke/bc-s0") or {}).get("status") in ("done", "failed")
                     and store.run("smoke/bc-s0"), 300, "the row stage", poll=1)
    assert row["status"] == "done", row.get("error")
    df = store.rollouts()
    assert sorted(df["episode"]) == [0, 1, 2, 3]
    st = json.loads((runs / "smoke" / "bc-s0" / "stages.json").read_text())
    assert st["eval/reach/policy"] == {**st["eval/reach/policy"], "rollouts": 4, "chunks": 2}
    assert {"eval/reach/policy/id/0-1", "eval/reach/policy/id/2-3", "finetune/reach"} <= set(st)
    assert sweep_cli.main(["smoke", "--status", "--store", str(store_dir), "--runs", str(runs), "methods=[bc]",
                           "seeds=[0]", "tasks=[reach]", f"data_root={reach_data}", "launcher.stage_jobs=true"] + TOY) == 0
    assert "row done: 1" in capsys.readouterr().out.replace("  ", " ")
    assert sweep_cli.main(args) == 0
    assert "nothing to launch" in capsys.readouterr().out


def test_a_shared_pretrain_is_trained_once_and_reused(reach_data, tmp_path):
    """Two runs pointed at one pretrain.run_dir (what a sweep does for cells that pretrain the
    same): the first trains it, the second finetunes from its checkpoint without training it."""
    from uwmbench.config import load_config
    from uwmbench.run_dir import RunDir
    src = reach_data / "libero_10" / "reach.hdf5"
    shared = tmp_path / "runs" / "_pretrain" / "bc-s0-x"
    common = ["method=bc", "method.size=tiny", "tasks=[reach]", f"data_root={reach_data}", "evaluate.n_rollouts=0",
              f"runs_root={tmp_path / 'runs'}", f"store={tmp_path / 'store'}", "data.latent_cache=false",
              "data.val_fraction=0.34", f"pretrain.sources=[{{path:'{src}'}}]", f"pretrain.run_dir={shared}",
              "pretrain.trainer.steps=3", "pretrain.trainer.batch_size=4", "pretrain.trainer.device=cpu",
              "pretrain.trainer.progress=false", "pretrain.trainer.warmup_steps=0", "finetune.trainer.batch_size=4",
              "finetune.trainer.device=cpu", "finetune.trainer.progress=false", "finetune.trainer.warmup_steps=0"]
    a = protocol.run_protocol(load_config("run", common + ["run_id=a", "finetune.trainer.steps=2"]))
    mtime = (shared / "stages.json").stat().st_mtime_ns
    b = protocol.run_protocol(load_config("run", common + ["run_id=b", "finetune.trainer.steps=4"]))
    assert a["train_steps"] == 5 and b["train_steps"] == 7  # 3 pretrain steps counted in both, trained once
    assert (shared / "stages.json").stat().st_mtime_ns == mtime
    assert [r["step"] for r in RunDir(shared).read_metrics() if r["loss"]] == ["3"] and not (tmp_path / "runs" / "b" / "pretrain").exists()
    # the finetune starts from the shared checkpoint (trainer.init_from in its config.yaml)
    assert str(shared) in (tmp_path / "runs" / "b" / "finetune" / "reach" / "config.yaml").read_text()


def test_a_run_written_by_an_older_version_resumes(reach_data, tmp_path, monkeypatch):
    """A run folder whose config.yaml lacks keys added since (evaluate.runner, pretrain.run_dir: null
    by default) is the same run: it resumes; a real change is still refused."""
    monkeypatch.syspath_prepend(TESTS)
    from uwmbench.config import ConfigError, load_config
    ov = TOY + ["method=bc", f"data_root={reach_data}", "tasks=[reach]", f"runs_root={tmp_path / 'runs'}",
                f"store={tmp_path / 'store'}", "run_id=old", "evaluate.runner=null", "evaluate.n_rollouts=0"]
    protocol.run_protocol(load_config("run", ov))
    run = tmp_path / "runs" / "old"
    cfg = run / "config.yaml"
    old = "".join(l for l in cfg.read_text().splitlines(True) if l.strip() not in ("runner: null", "run_dir: null"))
    assert old != cfg.read_text()
    cfg.write_text(old)
    (run / "DONE").unlink()
    assert protocol.run_protocol(load_config("run", ov))["status"] == "done"
    assert "runner: null" in cfg.read_text()
    (run / "DONE").unlink()
    with pytest.raises(ConfigError, match="different config"):
        protocol.run_protocol(load_config("run", ov + ["finetune.trainer.lr=0.5"]))


def test_small_preset_open_loop_chunks_warn_once(monkeypatch, caplog):
    """method.size=small with evaluate.replan_every=16 (whole chunks open loop) says, once, what it
    did at reduced scale; replan_every=4 or another size says nothing."""
    monkeypatch.syspath_prepend(TESTS)
    monkeypatch.setattr(protocol, "_WARNED_OPEN_LOOP", set())
    from uwmbench.config import load_config

    def warnings(over):
        caplog.clear()
        protocol.check_run(protocol._resolve(load_config("run", TOY + ["method=bc", "tasks=[reach]", *over])),
                           data=False)
        return [r.getMessage() for r in caplog.records if "open loop" in r.getMessage()]

    with caplog.at_level("WARNING", logger=protocol.log.name):
        assert warnings(["method.size=small", "evaluate.replan_every=4"]) == []
        assert warnings(["evaluate.replan_every=16"]) == []                   # tiny
        first = warnings(["method.size=small", "evaluate.replan_every=16"])
        assert len(first) == 1 and "evaluate.replan_every=4" in first[0]
        assert warnings(["method.size=small", "evaluate.replan_every=16"]) == []  # once per process


def test_task_paths_name_a_task_by_its_run_name_or_its_libero_name(tmp_path):
    """`{task}` is the run's task name, `{task_name}` the LIBERO task name (the released files and
    `uwmbench corpus`: <TASK_NAME>_demo.hdf5); the input check and the data stage read both."""
    from uwmbench.config import ConfigError, load_config
    assert protocol.task_path("d/{task}.hdf5", "book_caddy") == "d/book_caddy.hdf5"
    assert protocol.task_path("d/{task_name}_demo.hdf5", "book_caddy") == \
        "d/STUDY_SCENE1_pick_up_the_book_and_place_it_in_the_back_compartment_of_the_caddy_demo.hdf5"
    assert protocol.task_path("d/{task_name}.hdf5", "reach") == "d/reach.hdf5"      # another benchmark's task
    assert protocol.task_path("d/*.hdf5", None) == "d/*.hdf5"
    official = tmp_path / "libero_10" / "KITCHEN_SCENE8_put_both_moka_pots_on_the_stove_demo.hdf5"
    write_smoke_hdf5(official)
    ov = ["method=bc", "tasks=[moka_moka,book_caddy]", "pretrain.enabled=false", "evaluate.n_rollouts=0",
          f"finetune.sources=[{{path:'{tmp_path}/libero_10/{{task_name}}_demo.hdf5'}}]"]
    full = protocol._resolve(load_config("run", ov))
    pre, fin, _ = protocol.check_run(full, data=False)
    with pytest.raises(ConfigError, match="STUDY_SCENE1_pick_up_the_book"):   # moka_moka's file exists
        protocol.check_inputs(full, pre, fin)
    full = protocol._resolve(load_config("run", ov + ["prepare.collect_missing=true"]))
    assert [t for t, _ in protocol.prepare_targets(full)[0]] == ["book_caddy"]  # the data stage would collect it
    assert protocol.prepare_targets(full)[0][0][1].endswith("STUDY_SCENE1_pick_up_the_book_and_place_it_in_the_back_compartment_of_the_caddy_demo.hdf5")
