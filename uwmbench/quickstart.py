"""``uwmbench quickstart``: the whole pipeline at toy scale, offline, on a CPU.

1. scripted-expert demonstrations for one paper task (real LIBERO simulator)
2. a small AutoencoderKL fitted on those frames (the offline latent encoder for UWM)
3. tiny UWM and DP trained on the demos (protocol runs: finetune -> evaluate)
4. rollouts in distribution and out of distribution (widened init ranges, no distractors)
5. UWM forward dynamics on held-out windows (predicted vs true frames)
6. a memorisation check: a ``small`` BC policy trained on one demo of a short task, rolled out
   from that demo's own start (evidence that learning works end to end, not a benchmark number)
7. the paper-format table printed and a report written (tables, figures, index page)

Every stage is resumable: rerunning skips what is finished. The numbers are a smoke test of
the machinery, NOT a reproduction (tiny models, minutes of training): see the README for the
knobs and for the paper-scale sweeps.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from uwmbench.analysis.report import make_report
from uwmbench.analysis.tables import paper_table, summarize_arms
from uwmbench.benchmarks.checkpoint import load_method
from uwmbench.benchmarks.data import build_datasets, data_config_from, make_loader
from uwmbench.benchmarks.evaluate import evaluate
from uwmbench.benchmarks.fit_vae import fit_vae
from uwmbench.benchmarks.train import train
from uwmbench.methods import get_method_class
from uwmbench.sweeps.protocol import run_protocol
from uwmbench.sweeps.store import ResultsStore
from .config import load_config, to_container
from .fileio import atomic_write_text
from .run_dir import RunDir

log = logging.getLogger(__name__)


class _Stages:
    def __init__(self, total: int):
        self.total, self.i, self.t0 = total, 0, time.time()

    def start(self, what: str) -> None:
        self.i += 1
        print(f"\n[{self.i}/{self.total}] {what}   (elapsed {time.time() - self.t0:5.0f} s)", flush=True)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="uwmbench quickstart", description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="*", help="key=value overrides of configs/quickstart.yaml")
    a = p.parse_args(argv)
    cfg = to_container(load_config("quickstart", a.overrides))
    out = Path(cfg["out"]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    st = _Stages(6)
    task = cfg["task"]

    # 1. demonstrations --------------------------------------------------------------
    st.start(f"collecting {cfg['episodes']} scripted demonstrations of {task} (LIBERO, {cfg['workers']} workers)")
    from uwmbench.benchmarks.libero.collect import CollectConfig, collect
    data = out / "data" / f"{task}.hdf5"
    if data.is_file():
        print(f"  {data} exists: skipped")
    else:
        res = collect(CollectConfig(task=task, condition="id", episodes=int(cfg["episodes"]), workers=int(cfg["workers"]),
                                    out=str(data), seed=int(cfg["seed"])))
        print(f"  wrote {data}; expert success rate {res['expert_success_rate']:.2f} ({res['demos']} demos)")

    # 2. latent encoder ----------------------------------------------------------------
    st.start("fitting the offline latent encoder (AutoencoderKL) on the demo frames")
    vae_dir = out / "vae"
    size = int(cfg["image_size"])
    resize = size + size // 8
    if (vae_dir / "config.json").is_file():
        print(f"  {vae_dir} exists: skipped")
    else:
        vcfg = to_container(load_config("fit_vae", [f"out={vae_dir}"]))
        vcfg.update({"data": {**vcfg["data"], "sources": [{"path": str(data)}]}, "preset": cfg["vae"]["preset"],
                     "steps": int(cfg["vae"]["steps"]), "batch_size": int(cfg["vae"]["batch_size"]),
                     "image_size": size, "resize": resize, "seed": int(cfg["seed"])})
        r = fit_vae(vcfg)
        print(f"  saved {vae_dir}; held-out reconstruction PSNR {r['psnr_holdout_db']:.1f} dB")

    # 3 + 4. protocol runs: finetune -> evaluate ID/OOD ------------------------------------
    st.start(f"training and evaluating {', '.join(cfg['methods'])} ({cfg['method_size']}, "
             f"{cfg['train']['steps']} steps; {cfg['evaluate']['n_rollouts']} rollouts x {cfg['evaluate']['conditions']})")
    summaries = {}
    for method in cfg["methods"]:
        ov = [f"method={method}", f"method.size={cfg['method_size']}", f"method.image_size={size}", f"method.resize={resize}",
              f"run_id=quickstart/{method}", "sweep_name=main", f"seed={cfg['seed']}", f"tasks=[{task}]",
              f"runs_root={out / 'runs'}", f"store={out / 'results'}", "pretrain.enabled=false",
              f"finetune.sources=[{{path:'{data}',kind:hdf5,weight:1.0}}]",
              f"finetune.trainer.steps={cfg['train']['steps']}", f"finetune.trainer.batch_size={cfg['train']['batch_size']}",
              f"finetune.trainer.ckpt_every={cfg['train']['ckpt_every']}", f"finetune.trainer.val_every={cfg['train']['val_every']}",
              "finetune.trainer.warmup_steps=20",
              f"evaluate.n_rollouts={cfg['evaluate']['n_rollouts']}", f"evaluate.max_steps={cfg['evaluate']['max_steps']}",
              f"evaluate.workers={cfg['workers']}", f"evaluate.conditions=[{','.join(cfg['evaluate']['conditions'])}]"]
        if "vae" in {f.name for f in dataclasses.fields(get_method_class(method).config_class)}:
            ov.append(f"method.vae={vae_dir}")
        print(f"  -- {method}", flush=True)
        summaries[method] = run_protocol(load_config("run", ov))

    # 5. forward dynamics --------------------------------------------------------------------
    st.start("UWM forward dynamics: predicted vs true next frames on held-out windows")
    run_uwm = RunDir(out / "runs" / "quickstart" / "uwm").finetune(task).path
    if "uwm" in cfg["methods"] and run_uwm.exists():
        print(f"  wrote {dump_forward_predictions(run_uwm, data, out / 'results' / 'predictions_uwm_forward.npz')}")
    else:
        print("  skipped (no UWM run)")

    # 6. memorisation check ---------------------------------------------------------------------
    mem = memorisation_check(cfg, out, st)

    # 7. report ------------------------------------------------------------------------------
    st.start("writing the report (tables, figures, index page)")
    index = make_report(out, out / "report")  # results store + training curves + predictions
    ro = ResultsStore(out / "results").rollouts()
    if len(ro):
        summary = summarize_arms(ro)
        for cond in cfg["evaluate"]["conditions"]:
            t = paper_table(summary, condition=cond, sweep="main")
            if t is not None:
                print(f"\n{t.title}\n{t.to_markdown()}")
    else:
        print("  no rollout rows were recorded (evaluate.n_rollouts=0?)")
    lines = [f"\nDone in {time.time() - st.t0:.0f} s. Report: {index}"]
    if mem is not None:
        lines.append(f"Memorisation check: {mem['successes']}/{mem['rollouts']} rollouts reproduced the training demo "
                     f"({mem['method']} {mem['size']}, {mem['steps']} steps on {mem['episodes']} demo(s) of {mem['task']}, "
                     "rolled out from the demos' own starts)"
                     + (": a policy trained here solves a task." if mem["successes"] else
                        ": it did NOT reproduce it (see README 'Evidence that the harness learns')."))
    if len(ro):
        per = ro.groupby(["method", "condition"])["success"].agg(["sum", "count"])
        lines.append("Benchmark rollouts (tiny models, minutes of CPU training; not a comparison of the methods): "
                     + ", ".join(f"{m} {c.upper()} {int(r['sum'])}/{int(r['count'])}" for (m, c), r in per.iterrows())
                     + ".")
    print("\n".join(lines))
    return 0


def memorisation_check(cfg: dict, out: Path, st: "_Stages") -> dict | None:
    """Train ``memorise.method`` on ``memorise.episodes`` scripted demos of ``memorise.task`` and
    roll it out from those demos' own starts (``evaluate(init_from=...)``); resumable."""

    m = cfg.get("memorise") or {}
    if not m or int(m.get("episodes", 0)) < 1:
        st.start("memorisation check: skipped (memorise.episodes=0)")
        return None
    task, n = str(m["task"]), int(m["episodes"])
    st.start(f"memorisation check: {m['method']} ({m['method_size']}) trained on {n} demo(s) of {task}, "
             "rolled out from the demos' own starts")
    result_file = out / "memorise" / "result.json"
    if result_file.is_file():
        res = json.loads(result_file.read_text())
        print(f"  {result_file} exists: {res['successes']}/{res['rollouts']} successes")
        return res
    from uwmbench.benchmarks.libero.collect import CollectConfig, collect

    demo = out / "memorise" / "demos.hdf5"
    if not demo.is_file():
        collect(CollectConfig(task=task, condition="id", episodes=n, workers=1, out=str(demo), seed=int(m["seed"]),
                              noise=0.0, action_noise=0.0, max_steps=int(m["expert_max_steps"])))
    run = out / "memorise" / "run"
    steps = int(m["steps"])
    summary = train(load_config("train", [
        f"method={m['method']}", f"method.size={m['method_size']}", "method.color_jitter=0.0",
        f"data.sources=[{{path:'{demo}'}}]", "data.val_fraction=0.0", f"trainer.steps={steps}",
        "trainer.batch_size=32", f"trainer.lr={m['lr']}", f"trainer.ckpt_every={steps}", "trainer.val_every=100000",
        "trainer.log_every=50", "seed=0", f"run_dir={run}"]))
    df = evaluate(str(run), [task], conditions=["id"], n_rollouts=n, num_workers=0, max_steps=int(m["max_steps"]),
                  init_from=str(demo), out_dir=out / "memorise" / "eval", progress=False)
    res = {"task": task, "method": m["method"], "size": m["method_size"], "episodes": n, "steps": steps,
           "final_loss": summary.get("final_loss"), "rollouts": int(len(df)), "successes": int(df["success"].sum())}
    atomic_write_text(result_file, json.dumps(res, indent=1))
    loss = res["final_loss"]
    print(f"  {res['successes']}/{res['rollouts']} successes (final training loss "
          f"{'n/a' if loss is None else format(loss, '.4f')})")
    return res


def dump_forward_predictions(run_dir: Path, data_file: Path, out_file: Path, n: int = 6) -> Path:
    """UWM forward dynamics p(o'|o,a) on validation windows: decoded predicted next frames and
    the true next frames (first view, first next frame, same crop), saved as ``pred``/``true``
    arrays (N, H, W, 3) uint8 for the report's prediction grid."""


    method = load_method(run_dir)
    dcfg = data_config_from({"sources": [{"path": str(data_file)}], "latent_cache": False})
    bundle = build_datasets(dcfg, method)
    ds = bundle.val if bundle.val is not None else bundle.train
    batch = next(iter(make_loader(ds, n, seed=0)))
    torch.manual_seed(0)
    with torch.no_grad():
        z = method.predict_next_obs({"obs": batch["obs"]}, batch["action"])
        pred = method.latent_encoder.decode(z)[:, 0, 0]  # (N, 3, S, S) uint8
        true = method.latent_encoder.pre(batch["next_obs"][:, 0, :1], train=False)[:, 0]
        true = (true.clamp(-1, 1) * 127.5 + 127.5).round().to(torch.uint8)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(out_file.stem + ".tmp.npz")
    np.savez(tmp, pred=pred.permute(0, 2, 3, 1).numpy(), true=true.permute(0, 2, 3, 1).numpy())
    tmp.replace(out_file)
    return out_file
