"""Hydra entry point for protocol runs, so that ``hydra -m`` and its launchers work:

  python -m uwmbench.sweeps.hydra_run -m hydra/launcher=submitit_slurm \
      hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=1 method=uwm,dp seed=0,1

(``hydra/launcher=submitit_local`` runs the same jobs on this machine.) Each job composes
uwmbench/configs/run.yaml with its overrides and calls :func:`uwmbench.sweeps.protocol.run_protocol`; its
result rows go to the results store ``store`` and its run folder is ``runs_root/run_id``
(default run_id ``<method>-s<seed>``), so a rerun skips finished runs and resumes interrupted ones.
Requires hydra-submitit-launcher for the submitit launchers.
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from uwmbench.config import register_schemas
from .protocol import run_protocol

# the schemas and every registered method (plugins included) must be in hydra's ConfigStore
# before @hydra.main composes: the same strict composition as `uwmbench run`
register_schemas()


@hydra.main(config_path="pkg://uwmbench.configs", config_name="run", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    row = run_protocol(cfg)
    return {k: row.get(k) for k in ("run_id", "status", "train_steps", "final_loss")}


if __name__ == "__main__":
    main()
