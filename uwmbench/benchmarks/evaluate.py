"""Parallel LIBERO evaluation of a policy, in-distribution and OOD.

Layout: the policy lives in the main process; a pool of ``opts.workers`` spawned processes
each owns one :class:`~uwmbench.benchmarks.libero.envs.LiberoEnv` (kept across rollouts of the
same task and condition). At every replanning point a worker sends its observation history;
the main process stacks the observations of all workers that are waiting, calls
``method.predict_action`` once on the batch and sends each worker its action chunk, which the
worker executes open loop (``replan_every`` actions) with lazy camera rendering.

Every rollout has a fixed seed, ``rollout_seed(seed, task, condition, episode)``, and episode
``i`` starts from init state ``i`` of the task (LIBERO's shipped states in-distribution,
generated ones OOD). One result row per rollout is appended to ``<out>/rollouts.jsonl`` as soon
as it finishes (one ``write`` of a whole line, flushed and fsynced) and handed to ``row_sink``;
a rerun with the same output folder skips the rollouts already there.

Python::

    from uwmbench.benchmarks.evaluate import EvalOptions, evaluate

    opts = EvalOptions(n_rollouts=50, conditions=["id", "ood"], workers=4, max_steps=600, replan_every=8)
    df = evaluate("runs/dp/checkpoints/latest", ["book_caddy"], opts, out_dir="eval/dp")

CLI: ``uwmbench evaluate checkpoint=PATH tasks=[book_caddy] conditions=[id,ood] n_rollouts=50
workers=2 out=DIR`` (hydra config ``uwmbench/configs/evaluate.yaml``).

This module is the public entry point; the evaluator lives in ``uwmbench/benchmarks/evaluation/``, one
file per job: the runner interface a benchmark implements (``runner.py``; LIBERO is
``libero_runner.py``), serial and pooled execution (``pool.py``), the batched policy
(``policy.py``), expert demos (``reference.py``), ``evaluate()`` (``core.py``) and the CLI
(``cli.py``). Rows are ``uwmbench.rows.RolloutRow``.
"""
from __future__ import annotations

from uwmbench.rows import ROLLOUTS_FILE, RolloutRow, append_jsonl, read_jsonl
from uwmbench.schemas import EvalOptions

from .evaluation import cli as _cli
from .evaluation.cli import EvaluateConfig
from .evaluation.core import MODES, evaluate, summarize
from .evaluation.libero_runner import LiberoRunner, demo_init_overlap
from .evaluation.policy import WEIGHTS, BatchedPolicy, checkpoint_flip, checkpoint_frame_size, resolve_policy
from .evaluation.reference import DemoReference, reference_path
from .evaluation.runner import (EpisodeStart, RolloutEnv, RolloutJob, Runner, RunnerSettings, TaskInfo,
                                WorkerSettings, rollout_seed)

__all__ = ["evaluate", "EvalOptions", "rollout_seed", "summarize", "append_jsonl", "read_jsonl", "main",
           "EvaluateConfig", "checkpoint_frame_size", "checkpoint_flip", "resolve_policy", "reference_path",
           "demo_init_overlap", "ROLLOUTS_FILE", "RolloutRow", "Runner", "RolloutEnv", "RolloutJob", "RunnerSettings",
           "TaskInfo", "EpisodeStart", "LiberoRunner", "BatchedPolicy", "DemoReference", "MODES", "WEIGHTS",
           "WorkerSettings"]


def main(argv: list[str]) -> int:
    """``uwmbench evaluate key=value ...`` (``--help`` prints this module's docstring and the keys)."""
    return _cli.main(argv, doc=__doc__)
