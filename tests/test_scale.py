"""``uwmbench sweep <name> scale=<scale>``: one reduced path for every sweep (uwmbench/configs/scale/),
the data stage that makes missing demos and the VAE, and a dry run whose GPU columns agree
with each other and whose CPU hours come from the rates measured on this machine."""
import json

import pytest
from conftest_slurm import wait_until

from uwmbench.sweeps import grids, protocol, stages, sweep as sweep_cli
from uwmbench.store import ResultsStore

pytest_plugins = ["conftest_slurm"]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("UWMBENCH_RUNS", str(tmp_path / "home"))
    return tmp_path / "home"


def test_reduced_scale_expands_every_ablation_the_same_way(home):
    main = grids.expand_sweep("main", ["scale=reduced"], estimate=False)
    assert sorted({c.method for c in main}) == ["bc", "dp", "uwm"] and {c.seed for c in main} == {0, 1}
    assert {tuple(c.tasks) for c in main} == {("book_caddy", "bowl_drawer")}
    for c in main:
        c.estimate = {}
    note = grids.format_job_table("main", main).splitlines()[-1]  # the scale's note, not the paper-scale one
    assert note.startswith("note:") and "20 ID + 20 OOD" in note and "LIBERO-90" not in note
    reg = grids.expand_sweep("registers", ["scale=reduced"], estimate=False)
    assert sorted({c.variant for c in reg}) == ["reg0", "reg4", "reg8", "xattn"] and len(reg) == 8
    for name in ("main", "registers", "objective", "dynamics"):
        for c in grids.expand_sweep(name, ["scale=reduced"], estimate=False):
            assert c.scale == "reduced" and c.resources.gpus == 0
            assert "method.size=small" in c.overrides and "pretrain.enabled=false" in c.overrides
            assert "evaluate.replan_every=4" in c.overrides and "prepare.collect_missing=true" in c.overrides
            assert f"data_root={home}/reduced/data" in c.overrides
    # the axes win over the scale (objective=none stays none), the command line over both
    obj = grids.expand_sweep("objective", ["scale=reduced", "finetune.trainer.steps=100"], estimate=False)
    none = next(c for c in obj if c.variant == "none")
    full = protocol._resolve(grids.compose_cell(none))
    assert full["method"]["objective"] == "none" and full["finetune"]["trainer"]["steps"] == 100
    assert full["method"]["vae"] == f"{home}/reduced/data/vae/small-book_caddy+soup_cheese"  # fitted by the data stage
    dp = protocol._resolve(grids.compose_cell(next(c for c in main if c.method == "dp")))
    assert "vae" not in dp["method"]  # methods without a VAE are left alone
    from uwmbench.config import ConfigError
    with pytest.raises(ConfigError, match="scale=huge"):
        grids.expand_sweep("main", ["scale=huge"], estimate=False)


def test_reduced_dry_run_counts_cpu_hours_from_the_measured_rates(home, capsys):
    assert sweep_cli.main(["registers", "scale=reduced", "--dry-run", "seeds=[0]", "tasks=[book_caddy]"]) == 0
    out = capsys.readouterr().out
    assert f"store {home}/reduced/results" in out  # the scale's store, outside the work tree
    rates = grids.load_rates("cpu")
    cells = grids.expand_sweep("registers", ["scale=reduced", "seeds=[0]", "tasks=[book_caddy]"])
    e = cells[0].estimate
    # the latent cache and the data stage are priced per frame / env step of book_caddy's measured demos
    frames = 50 * rates["demo_steps"]["book_caddy"]
    train = (6000 * rates["train_s_per_step"]["uwm"] + frames * rates["latent_cache_s_per_frame"] + rates["diagnose_s"]) / 3600
    assert e["train_wall_h"] == pytest.approx(train)
    ev = 40 * 400 * rates["rollout_length"] * rates["rollout_s_per_step"]["uwm"] / 3600 / 2
    assert e["eval_wall_h"] == pytest.approx(ev) and e["gpu_h"] == 0
    data = (frames * rates["collect_s_per_env_step"] + 800 * rates["vae_s_per_step"]) / 3600
    assert f"{4 * (train + ev) + data:.1f} h wall-clock" in out and "one cell at a time" in out
    # the two tables agree on GPUs: 0 in the cells' column and 0 per stage job; a data stage first
    table = out[out.index("stage jobs"):]
    rows = {l.split()[0]: l.split() for l in table.splitlines()[1:] if l.split()}
    assert rows["data"][1] == "1" and rows["finetune"][5] == "0.0" and rows["finetune"][-1] == "cpu"
    top = out[:out.index("stage jobs")]
    assert all(l.split()[5] == "0" for l in top.splitlines() if l.startswith(("reg", "xattn")))


def test_full_scale_gpu_columns_agree_under_each_launcher(capsys):
    # SLURM: 1 GPU per cell in the top table and per training job in the stage table
    assert sweep_cli.main(["registers", "--dry-run", "--skip-data-check", "--launcher", "slurm", "seeds=[0]"]) == 0
    out = capsys.readouterr().out
    top, table = out[:out.index("stage jobs")], out[out.index("stage jobs"):]
    assert all(l.split()[5] == "1" for l in top.splitlines() if l.startswith(("reg", "xattn")))
    rows = {l.split()[0]: l.split() for l in table.splitlines()[1:] if l.split()}
    assert float(rows["pretrain"][5]) >= 1 and float(rows["pretrain"][-3]) > 0  # GPU_h of pretraining
    # local without GPUs: 0 in both, and the paper size has no CPU rate: said, not counted as 0
    assert sweep_cli.main(["registers", "--dry-run", "--skip-data-check", "seeds=[0]"]) == 0
    out = capsys.readouterr().out
    top = out[:out.index("stage jobs")]
    assert all(l.split()[5] == "0" for l in top.splitlines() if l.startswith(("reg", "xattn")))
    assert "have no CPU rate" in out and "launcher.gpus_per_node" in out


def test_data_stage_targets_and_check(home, tmp_path):
    """The data stage makes only what is missing, and a run whose demos it will collect passes
    the input check that fails a run without it."""
    from uwmbench.config import ConfigError, load_config
    ov = ["method=bc", "method.size=tiny", "tasks=[book_caddy,soup_cheese]", f"data_root={tmp_path}/d",
          "pretrain.enabled=false"]
    full = protocol._resolve(load_config("run", ov + ["prepare.collect_missing=true"]))
    collect, vae = protocol.prepare_targets(full)
    assert [t for t, _ in collect] == ["book_caddy", "soup_cheese"] and vae is None
    (tmp_path / "d" / "libero_10").mkdir(parents=True)
    (tmp_path / "d" / "libero_10" / "book_caddy.hdf5").touch()
    assert [t for t, _ in protocol.prepare_targets(full)[0]] == ["soup_cheese"]
    protocol.check_run(full, data=True)
    with pytest.raises(ConfigError, match="soup_cheese.hdf5"):
        protocol.check_run(protocol._resolve(load_config("run", ov)), data=True)



def test_data_stage_resumes_collection_rounds(home, tmp_path, monkeypatch):
    """A task whose expert missed a demo is resumed with new attempts (prepare.collect_rounds),
    not failed on the first shortfall (it cost a whole cell of the reduced main sweep once); past the
    last round the error names the task, the partial file and the setting."""
    from uwmbench.benchmarks.libero import collect as collect_mod
    from uwmbench.config import load_config
    calls = []

    def fake_collect(cfg, progress=True):
        calls.append(cfg.out)
        got = 2 if len(calls) < need else 3
        if got == 3:
            open(cfg.out, "w").close()
        return {"demos": got, "wanted": 3, "expert_success_rate": 0.9}
    monkeypatch.setattr(collect_mod, "collect", fake_collect)
    ov = ["method=bc", "method.size=tiny", "tasks=[book_caddy]", f"data_root={tmp_path}/d",
          "pretrain.enabled=false", "prepare.collect_missing=true", "prepare.episodes=3"]
    need = 2
    made = protocol.stage_prepare(protocol._resolve(load_config("run", ov)))
    assert len(calls) == 2 and [c["task"] for c in made["collected"]] == ["book_caddy"]
    calls.clear(); need = 99
    ov[3] = f"data_root={tmp_path}/e"
    with pytest.raises(RuntimeError, match=r"book_caddy .*\.partial\) after 2 rounds \(prepare.collect_rounds\)"):
        protocol.stage_prepare(protocol._resolve(load_config("run", ov + ["prepare.collect_rounds=2"])))
    assert len(calls) == 2

@pytest.mark.libero
def test_tiny_scale_sweep_runs_end_to_end_and_resumes(home, tmp_path, capsys):
    """scale=tiny, the reduced path in minutes: the data stage collects scripted demos (real LIBERO)
    and fits UWM's VAE, both cells train, roll out and write rows, the report tabulates them; a
    second launch adds a cell and runs only it."""
    args = ["main", "scale=tiny", "tasks=[libero_90:0]", "--threads", "1"]
    assert sweep_cli.main(args + ["methods=[bc]"]) == 0
    store = ResultsStore(home / "tiny" / "results")
    row = wait_until(lambda: (store.run("main/bc-s0") or {}).get("status") in ("done", "failed")
                     and store.run("main/bc-s0"), 600, "cell bc-s0", poll=2)
    assert row["status"] == "done", row.get("error")
    data = home / "tiny" / "data" / "libero_10" / "libero_90:0.hdf5"
    assert data.is_file()
    capsys.readouterr()
    assert sweep_cli.main(args + ["methods=[bc,uwm]"]) == 0
    out = capsys.readouterr().out
    assert "launched 1 job(s)" in out and "1 done" in out and "uwm-s0" in out and "bc-s0=" not in out
    row = wait_until(lambda: (store.run("main/uwm-s0") or {}).get("status") in ("done", "failed")
                     and store.run("main/uwm-s0"), 600, "cell uwm-s0", poll=2)
    assert row["status"] == "done", row.get("error")
    vae = home / "tiny" / "data" / "vae" / "tiny-libero_90:0"
    assert (vae / "config.json").is_file()
    cfg = json.loads(json.dumps(__import__("yaml").safe_load((home / "tiny" / "runs" / "main" / "uwm-s0" /
                                                               "config.yaml").read_text())))
    assert cfg["method"]["vae"] == str(vae)
    df = store.rollouts()
    assert set(df["method"]) == {"bc", "uwm"} and set(df["condition"]) == {"id"} and len(df) == 2
    from uwmbench.analysis import report
    assert report.main([str(home / "tiny" / "results"), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "index.md").read_text()
    assert "uwm" in md and "bc" in md

