"""``uwmbench quickstart``: UWM and DP learn a LIBERO task on a CPU, offline, in ~10 minutes.

1. scripted-expert demonstrations of one task from random placements (real LIBERO simulator):
   ``episodes`` to train on and ``heldout_episodes`` never trained on (the run's validation split)
2. a small AutoencoderKL fitted on the demo frames (the offline latent encoder for UWM)
3. UWM and DP (``small`` presets) trained on the demos (protocol runs: finetune -> evaluate), then
   rolled out: from the training demos' own start states (memorisation) and from new placements
   in distribution and out of distribution (generalisation)
4. every UWM mode measured on the held-out windows against a baseline that needs no learning
   (policy, forward dynamics, inverse dynamics, video prediction; ``uwmbench modes``)
5. a report (tables with CIs, learning curves, predicted frames, a predicted clip, videos)

Every stage is resumable: rerunning skips what is finished. The numbers show that the pipeline
learns (minutes of CPU training on a few demos), NOT a reproduction of the paper: the closing
summary says what was shown and the command for a longer run.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

from uwmbench.analysis.report import make_report
from uwmbench.benchmarks.data import data_config_from, split_episodes
from uwmbench.benchmarks.evaluate import EvalOptions, evaluate
from uwmbench.benchmarks.fit_vae import fit_vae
from uwmbench.methods import get_method_class
from uwmbench.sweeps.protocol import run_protocol
from uwmbench.store import ResultsStore
from .config import load_config, to_container
from .run_dir import RunDir

log = logging.getLogger(__name__)

MEMORISE_SWEEP = "memorise"   # the rows of the memorisation check (their own report section)


class _Stages:
    """Numbered stage headers with the elapsed time; each stage's own duration for the summary."""

    def __init__(self, total: int):
        self.total, self.i, self.t0 = total, 0, time.time()
        self.times: list[tuple[str, float]] = []
        self._cur: tuple[str, float] | None = None

    def start(self, what: str, short: str | None = None) -> None:
        self.stop()
        self.i += 1
        self._cur = (short or what, time.time())
        print(f"\n[{self.i}/{self.total}] {what}   (elapsed {time.time() - self.t0:5.0f} s)", flush=True)

    def stop(self) -> None:
        if self._cur is not None:
            self.times.append((self._cur[0], time.time() - self._cur[1]))
            self._cur = None

    def summary(self) -> str:
        self.stop()
        return "Time per stage: " + ", ".join(f"{n} {t:.0f} s" for n, t in self.times)


def _quiet_third_party() -> None:
    """Each known third-party warning at most once (they repeat per call and per worker otherwise)."""
    import warnings

    for pat in (".*does not have many workers.*", ".*TypedStorage is deprecated.*",
                ".*torch.utils._pytree._register_pytree_node.*", ".*pkg_resources is deprecated.*"):
        warnings.filterwarnings("once", message=pat)
    warnings.simplefilter("once")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="uwmbench quickstart", description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="*", help="key=value overrides of uwmbench/configs/quickstart.yaml")
    a = p.parse_args(argv)
    cfg = to_container(load_config("quickstart", a.overrides))
    _quiet_third_party()
    out = Path(cfg["out"]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    st = _Stages(5)
    task = str(cfg["task"])
    k, h = int(cfg["episodes"]), int(cfg.get("heldout_episodes", 0))
    if k < 1 or h < 0:
        raise SystemExit(f"uwmbench quickstart: episodes={k} must be >= 1 and heldout_episodes={h} >= 0")
    store_dir = out / "results"

    # 1. demonstrations --------------------------------------------------------------
    st.start(f"collecting {k} + {h} held-out scripted demonstrations of {task} (LIBERO, {cfg['workers']} workers)",
             "demos")
    from uwmbench.benchmarks.libero.collect import CollectConfig, collect
    data = out / "data" / f"{_file_name(task)}.hdf5"
    if data.is_file():
        print(f"  {_rel(data)} exists: skipped")
    else:
        res = collect(CollectConfig(task=task, condition="id", episodes=k + h, workers=int(cfg["workers"]),
                                    out=str(data), seed=int(cfg["seed"]), noise=0.0, action_noise=0.0, max_steps=400))
        print(f"  wrote {_rel(data)}; expert success rate {res['expert_success_rate']:.2f} ({res['demos']} demos)")
    val_fraction = h / (k + h)

    # 2. latent encoder ----------------------------------------------------------------
    size = int(cfg["image_size"])
    resize = size + size // 8
    vae_dir = out / "vae"
    st.start(f"fitting the offline latent encoder (AutoencoderKL {cfg['vae']['preset']}, {cfg['vae']['steps']} steps) "
             "on the demo frames", "latent encoder")
    if (vae_dir / "config.json").is_file():
        print(f"  {_rel(vae_dir)} exists: skipped")
    else:
        vcfg = to_container(load_config("fit_vae", [f"out={vae_dir}"]))
        vcfg.update({"data": {**vcfg["data"], "sources": [{"path": str(data)}]}, "preset": cfg["vae"]["preset"],
                     "steps": int(cfg["vae"]["steps"]), "batch_size": int(cfg["vae"]["batch_size"]),
                     "image_size": size, "resize": resize, "seed": int(cfg["seed"])})
        r = fit_vae(vcfg)
        print(f"  saved {_rel(vae_dir)}; held-out reconstruction PSNR {r['psnr_holdout_db']:.1f} dB")

    # 3. protocol runs: train -> evaluate (memorisation, ID, OOD) ----------------------------
    t = cfg["train"]
    ev = cfg["evaluate"]
    st.start(f"training and evaluating {', '.join(cfg['methods'])} ({cfg['method_size']}, {t['steps']} steps on {k} "
             f"demos; rollouts: {k * int(cfg.get('memorise', 0))} from the demos' starts, "
             f"{ev['n_rollouts']} x {'/'.join(c.upper() for c in ev['conditions'])} from new placements)",
             "train + rollouts")
    runs: dict[str, Path] = {}
    for method in cfg["methods"]:
        ov = _run_overrides(cfg, method, task, data, out, store_dir, vae_dir, val_fraction)
        print(f"  -- {method}", flush=True)
        run_protocol(load_config("run", ov))
        runs[method] = RunDir(out / "runs" / "quickstart" / method).finetune(task).path
        _copy_curves(runs[method], store_dir / "curves" / method)
        if int(cfg.get("memorise", 0)) > 0:
            mem = memorise(runs[method], data, task, method, cfg, val_fraction, store_dir)
            print(f"  {method}: {mem['successes']}/{mem['rollouts']} rollouts from the training demos' own starts "
                  "succeeded (memorisation)")

    # 4. every UWM mode on held-out windows -----------------------------------------------------
    modes = None
    st.start("UWM modes on held-out windows: policy, forward dynamics, inverse dynamics, video prediction",
             "UWM modes")
    if "uwm" in runs and int(cfg.get("modes_windows", 0)) > 0 and h > 0:
        from uwmbench.benchmarks.modes import MODES_FILE, format_modes, measure_modes
        mdir = store_dir / "modes" / "uwm"
        if (mdir / MODES_FILE).is_file():
            modes = json.loads((mdir / MODES_FILE).read_text())
            print(f"  {_rel(mdir / MODES_FILE)} exists: skipped")
        else:
            modes = measure_modes(runs["uwm"], mdir, n_windows=int(cfg["modes_windows"]))
        print("\n".join(f"  {x}" for x in format_modes(modes)))
    else:
        print("  skipped (no UWM run, heldout_episodes=0 or modes_windows=0)")

    # 5. report ------------------------------------------------------------------------------
    st.start("writing the report (tables, learning curves, predicted frames, videos)", "report")
    index = make_report(store_dir, out / "report")
    ro = ResultsStore(store_dir).rollouts()
    print("\n" + closing_summary(cfg, ro, modes, index, st.summary(), time.time() - st.t0))
    return 0


def _run_overrides(cfg: dict, method: str, task: str, data: Path, out: Path, store_dir: Path, vae_dir: Path,
                   val_fraction: float) -> list[str]:
    """The `uwmbench run` overrides of one method's protocol run: train on the demos (the held-out
    ones as the validation split), then roll out from new placements."""
    size = int(cfg["image_size"])
    resize = size + size // 8
    t, ev = cfg["train"], cfg["evaluate"]
    ov = [f"method={method}", f"method.size={cfg['method_size']}", f"method.image_size={size}",
          f"method.resize={resize}", f"run_id=quickstart/{method}", "sweep_name=main", f"seed={cfg['seed']}",
          f"tasks=['{task}']", f"runs_root={out / 'runs'}", f"store={store_dir}", "pretrain.enabled=false",
          f"finetune.sources=[{{path:'{data}',kind:hdf5,weight:1.0}}]", f"data.val_fraction={val_fraction}",
          f"finetune.trainer.steps={t['steps']}", f"finetune.trainer.batch_size={t['batch_size']}",
          f"finetune.trainer.lr={t['lr']}", "finetune.trainer.schedule=cosine", "finetune.trainer.warmup_steps=50",
          f"finetune.trainer.ema={t.get('ema', 0.0)}",
          "finetune.trainer.grad_clip=1.0", "finetune.trainer.device=cpu",
          f"finetune.trainer.ckpt_every={t['ckpt_every']}", f"finetune.trainer.val_every={t['val_every']}",
          "finetune.trainer.val_batches=1",
          f"evaluate.n_rollouts={ev['n_rollouts']}", f"evaluate.max_steps={ev['max_steps']}",
          f"evaluate.replan_every={ev['replan_every']}", f"evaluate.workers={cfg['workers']}",
          f"evaluate.conditions=[{','.join(ev['conditions'])}]", "evaluate.videos=1",
          "evaluate.diagnose_windows=0", "evaluate.diagnose_first_obs=0"]
    if method == "dp" or "color_jitter" in {f.name for f in dataclasses.fields(get_method_class(method).config_class)}:
        ov.append("method.color_jitter=0.0")
    if "vae" in {f.name for f in dataclasses.fields(get_method_class(method).config_class)}:
        ov.append(f"method.vae={vae_dir}")
    return ov


def _file_name(task: str) -> str:
    return task.replace(":", "_").replace("/", "_")


def _rel(p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def _copy_curves(run: Path, dst: Path) -> None:
    """The run's training curves (metrics.csv) beside its rows, so the store alone rebuilds the report."""
    src = RunDir(run).metrics
    if src.is_file():
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst / src.name)


def training_episodes(data: Path, val_fraction: float) -> list[int]:
    """Indices ``i`` of the ``data/demo_i`` the trainer trains on (not its validation split)."""
    import h5py

    with h5py.File(data, "r") as f:
        names = sorted(f["data"].keys())
    train_eps, _ = split_episodes(names, val_fraction, data_config_from({"sources": []}).split_seed)
    return sorted(int(n.split("_")[-1]) for n in train_eps)


def memorise(run: Path, data: Path, task: str, method: str, cfg: dict, val_fraction: float,
             store_dir: Path) -> dict:
    """Roll the trained policy out from the start states of the demos it trained on (not the
    held-out ones); rows go to the store under the sweep ``memorise``. Resumable."""
    episodes = training_episodes(data, val_fraction)
    ev = cfg["evaluate"]
    meta = {"run_id": f"quickstart/{method}/memorise", "sweep": MEMORISE_SWEEP, "method": method,
            "variant": "default", "seed": int(cfg["seed"]), "size": str(cfg["method_size"])}
    n, ok = 0, 0
    for rep in range(int(cfg.get("memorise", 1))):   # the same starts, another rollout seed each time
        opts = EvalOptions(conditions=["id"], workers=int(cfg["workers"]), max_steps=int(ev["max_steps"]),
                           replan_every=int(ev["replan_every"]), seed=rep)
        df = evaluate(str(run), [task], opts, episodes=episodes, init_from=str(data), out_dir=run.parent.parent / "eval" / "memorise" / f"seed{rep}",
                      run_meta={**meta, "run_id": f"{meta['run_id']}/seed{rep}"},
                      row_sink=ResultsStore(store_dir).rollout_sink(), progress=True)
        n, ok = n + len(df), ok + int(df["success"].sum())
    return {"rollouts": n, "successes": ok}


def closing_summary(cfg: dict, ro, modes: dict | None, index: Path, times: str, elapsed: float) -> str:
    """What the run showed, in plain words, and what a longer run would show."""
    lines = [f"Done in {elapsed:.0f} s. Report: {_rel(index)}", times, ""]
    task, k = cfg["task"], int(cfg["episodes"])
    if ro is not None and len(ro):
        ro = ro.copy()
        ro["sweep"] = ro["sweep"].fillna("").astype(str)
        cnt = lambda m, sweep, cond: ro[(ro["method"] == m) & (ro["sweep"] == sweep) & (ro["condition"] == cond)]
        lines.append(f"What this run showed ({cfg['method_size']} models, {cfg['train']['steps']} training steps on "
                     f"{k} demos of {task}, minutes of CPU):")
        for m in cfg["methods"]:
            mem = cnt(m, MEMORISE_SWEEP, "id")
            parts = []
            if len(mem):
                parts.append(f"memorisation {int(mem['success'].sum())}/{len(mem)} (from its training demos' starts)")
            for c in cfg["evaluate"]["conditions"]:
                g = cnt(m, "main", c)
                if len(g):
                    parts.append(f"{c.upper()} {int(g['success'].sum())}/{len(g)} (new placements)")
            lines.append(f"  {m.upper()}: " + ", ".join(parts))
        lines.append("  Memorisation shows the pipeline learns end to end (frames, actions, training, rollouts). "
                     "The new-placement rows are generalisation from a handful of demos: a few rollouts, wide "
                     "uncertainty (the report gives Wilson CIs); not a comparison of the methods.")
    if modes:
        from uwmbench.benchmarks.modes import format_modes
        lines.append("Every UWM mode on held-out windows, each beside a baseline that needs no learning:")
        lines += [f"  {x}" for x in format_modes(modes)]
    lines += ["", "A longer run (hours on 2 cores) shows competence and generalisation on a paper task:",
              "  uwmbench quickstart task=book_caddy episodes=50 heldout_episodes=5 method_size=small image_size=64 "
              "train.steps=6000 train.lr=3e-4 evaluate.n_rollouts=20 evaluate.max_steps=400 "
              "out=runs/quickstart-book_caddy",
              "and the paper's tables at reduced scale: uwmbench sweep main scale=reduced (README)."]
    return "\n".join(lines)
