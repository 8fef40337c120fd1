"""``uwmbench evaluate key=value ...``: rollouts of a checkpoint (or an untrained method, for
smoke runs) on LIBERO, rows to ``<out>/rollouts.jsonl``, a summary to ``<out>/summary.{csv,md}``.
The keys are :class:`uwmbench.schemas.EvaluateConfig` (``uwmbench/configs/evaluate.yaml``)."""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

from uwmbench.fileio import atomic_write_text, markdown_table
from uwmbench.run_dir import EvalDir
from uwmbench.schemas import EvaluateConfig

from .core import evaluate, summarize
from .libero_runner import LiberoRunner


def main(argv: list[str], doc: str | None = None) -> int:
    """``uwmbench evaluate``; ``doc``: the text ``--help`` prints above the options (the public
    module's docstring, passed by :func:`uwmbench.benchmarks.evaluate.main`)."""
    if any(a in ("-h", "--help") for a in argv):
        print(doc or __doc__)
        print("options (key=value):")
        for f in dataclasses.fields(EvaluateConfig):
            d = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            print(f"  {f.name}={d}")
        return 0
    from uwmbench.config import ConfigError, build_method_from_config, error_message, load_config, typed

    cfg = typed(load_config("evaluate", argv), EvaluateConfig, "evaluate")
    if (cfg.checkpoint is None) == (cfg.method is None):
        raise ConfigError("give exactly one of checkpoint=PATH or method=NAME (untrained, for smoke runs, "
                          "e.g. method=bc method.size=tiny)")
    runner = LiberoRunner(ood_margin=cfg.ood_margin, ood_seed=cfg.ood_seed)
    for t in cfg.tasks:
        try:
            runner.check_task(str(t))
        except KeyError as e:
            raise ConfigError(f"tasks: {error_message(e)}") from None
    if cfg.checkpoint is not None:
        policy: Any = cfg.checkpoint
    else:
        policy = build_method_from_config(cfg.method)
    out = EvalDir(cfg.out if cfg.out else Path("runs") / "eval" / time.strftime("%Y%m%d-%H%M%S"))
    meta = {"run_id": cfg.run_id, "sweep": cfg.sweep_name, "cell": cfg.cell, "variant": cfg.variant}
    if cfg.train_seed is not None:
        meta["seed"] = cfg.train_seed
    from uwmbench.lease import run_lease
    with run_lease(out.path, "uwmbench evaluate"):  # one process per output folder (its rows resume)
        df = evaluate(policy, cfg.tasks, cfg, run_meta=meta, out_dir=out.path, resume=cfg.resume,
                      init_from=cfg.init_from, runner=runner if not cfg.runner else None)
    summary = summarize(df)
    md = markdown_table(summary, "{:.3f}")
    atomic_write_text(out.summary_csv, summary.to_csv(index=False))
    atomic_write_text(out.summary_md, md + "\n")
    print(md)
    print(f"\nrows: {out.rollouts}\nsummary: {out.summary_csv}", file=sys.stderr)
    return 0
