"""Trainer: resume is step-for-step identical to an uninterrupted run (CPU, fixed seed);
checkpoints round-trip; schedules; config errors name the key."""
from __future__ import annotations

import csv

import pytest
import torch

from uwmbench.config import ConfigError, load_config
from conftest import product_methods
from libero_files import write_libero_hdf5


def _cfg(tmp_path, method="uwm", steps=6, extra=()):
    data = write_libero_hdf5(tmp_path / "demos.hdf5", n_demos=3, length=24)
    return load_config("train", [f"method={method}", "method.size=tiny", f"data.sources=[{{path:{data}}}]",
                                 f"trainer.steps={steps}", "trainer.batch_size=4", "trainer.log_every=1",
                                 "trainer.ckpt_every=2", "trainer.val_every=3", "trainer.progress=false",
                                 "data.latent_cache=false", *extra])


def _losses(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f) if r.get("loss")]


def test_resume_matches_uninterrupted(tmp_path):
    from uwmbench.benchmarks.train import train
    cfg = _cfg(tmp_path)
    full = train(cfg, tmp_path / "full")
    assert full["completed"] and full["steps"] == 6
    part = train(_cfg(tmp_path, extra=["trainer.stop_after=3"]), tmp_path / "resumed")  # stops at 3, ckpt at 2
    assert part["interrupted"] and part["steps"] == 3
    resumed = train(cfg, tmp_path / "resumed")
    assert resumed["steps"] == 6
    a, b = _losses(tmp_path / "full"), _losses(tmp_path / "resumed")
    assert [s for s, _ in a] == list(range(1, 7)) and [s for s, _ in b] == list(range(1, 7))
    assert a == b, f"resumed curve differs:\n{a}\n{b}"
    # final weights identical too
    from safetensors.torch import load_file
    wa = load_file(str(tmp_path / "full/checkpoints/step_00000006/model.safetensors"))
    wb = load_file(str(tmp_path / "resumed/checkpoints/step_00000006/model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_rerun_of_finished_run_does_nothing(tmp_path):
    from uwmbench.benchmarks.train import train
    cfg = _cfg(tmp_path, steps=2)
    train(cfg, tmp_path / "r")
    before = (tmp_path / "r/metrics.csv").read_text()
    s = train(cfg, tmp_path / "r")
    assert s["steps"] == 2 and (tmp_path / "r/metrics.csv").read_text() == before


def test_validation_and_checkpoint_contents(tmp_path):
    from uwmbench.benchmarks.train import train
    s = train(_cfg(tmp_path, extra=["trainer.ema=0.9", "trainer.schedule=cosine", "trainer.warmup_steps=2",
                                     "trainer.grad_clip=1.0"]), tmp_path / "r")
    ck = tmp_path / "r/checkpoints/step_00000006"
    for f in ("model.safetensors", "ema.safetensors", "trainer_state.pt", "method.json", "config.yaml"):
        assert (ck / f).is_file(), f
    assert (tmp_path / "r/checkpoints/latest").read_text().strip() == "step_00000006"
    assert len(list((tmp_path / "r/checkpoints").glob("step_*"))) == 2  # keep_checkpoints=2
    assert any(k.startswith("val/") for k in s["val"]), s["val"]
    rows = list(csv.DictReader(open(tmp_path / "r/metrics.csv")))
    lrs = [float(r["lr"]) for r in rows if r.get("lr")]
    assert lrs[0] < lrs[1] and lrs[-1] < max(lrs)  # warmup then cosine decay
    from uwmbench.benchmarks.checkpoint import load_method
    m = load_method(tmp_path / "r", ema=True)
    assert m.cfg.size == "tiny"
    # the evaluator rolls out the EMA weights of a checkpoint trained with EMA (rows say so)
    from safetensors.torch import load_file

    from uwmbench.benchmarks.evaluate import resolve_policy as _resolve_policy
    from uwmbench.rows import rollout_key as _row_key
    from uwmbench.config import ConfigError
    ema = load_file(str(ck / "ema.safetensors"))
    raw = load_file(str(ck / "model.safetensors"))
    k = next(k for k in ema if not torch.equal(ema[k], raw[k]))        # EMA differs from the weights
    for weights, ref, used in (("auto", ema, "ema"), ("ema", ema, "ema"), ("raw", raw, "raw")):
        pol, _, _, got = _resolve_policy(str(tmp_path / "r"), "cpu", weights)
        assert got == used and torch.equal(dict(pol.named_parameters())[k].detach(), ref[k]), weights
    plain = train(_cfg(tmp_path, steps=2), tmp_path / "plain")               # trained without EMA
    assert _resolve_policy(plain["checkpoint"], "cpu", "auto")[3] == "raw"
    with pytest.raises(ConfigError, match="weights="):
        _resolve_policy(str(tmp_path / "r"), "cpu", "best")
    # rows written before the column existed were raw-weight rollouts; they are not EMA rollouts
    old = {"checkpoint": "c", "method": "m", "task": "t", "condition": "id", "rollout_seed": 1, "episode": 0}
    assert _row_key(old) == _row_key({**old, "weights": "raw"}) != _row_key({**old, "weights": "ema"})


def test_validation_writes_the_learning_diagnostics_while_training(tmp_path):
    """Every val_every steps metrics.csv gets the held-out open-loop action error (env units,
    relative to the action magnitude) of the raw and, with EMA, of the EMA weights; UWM adds its
    forward-dynamics error beside the copy-last-frame baseline and the inverse-dynamics error."""
    from uwmbench.benchmarks.train import train
    train(_cfg(tmp_path, extra=["trainer.ema=0.9"]), tmp_path / "r")
    rows = [r for r in csv.DictReader(open(tmp_path / "r/metrics.csv")) if r.get("val/open_loop_rel_err_pos")]
    assert [int(r["step"]) for r in rows] == [3, 6]
    for k in ("val/open_loop_rel_err_pos", "val/open_loop_rel_err_pos_ema", "val/open_loop_grip_agree",
              "val/forward_psnr", "val/copy_last_psnr", "val/copy_last_latent_mse", "val/next_obs_latent_mse",
              "val/inverse_rel_err_pos"):
        assert all(float(r[k]) == float(r[k]) for r in rows), k
    assert rows[0]["val/open_loop_rel_err_pos"] != rows[0]["val/open_loop_rel_err_pos_ema"]


def test_policy_metrics_are_the_diagnose_numbers_and_deterministic():
    """policy_metrics is action_error_summary (the definition `uwmbench diagnose` reports) of the
    policy's chunks; a policy that predicts the true chunk scores 0, one that predicts no motion
    scores a relative error of 1; per-window generators make a sampling policy repeat itself."""
    from uwmbench.benchmarks.diagnose import action_error_summary
    from uwmbench.benchmarks.train import policy_metrics
    from uwmbench.methods import POLICY

    g = torch.Generator().manual_seed(0)
    batch = {"obs": torch.zeros(5, 2, 2, 3, 8, 8, dtype=torch.uint8), "action": torch.rand(5, 16, 7, generator=g) * 2 - 1,
             "action_mask": torch.tensor([True, True, True, True, False])}

    class Fixed:
        capabilities = frozenset({POLICY})

        def __init__(self, out):
            self.out = out

        def predict_action(self, obs):
            return self.out[: obs["obs"].shape[0]]

    exact = policy_metrics(Fixed(batch["action"][:4]), batch)
    assert exact["val/open_loop_rel_err_pos"] == 0 and exact["val/open_loop_grip_agree"] == 1
    still = policy_metrics(Fixed(torch.zeros(4, 16, 7)), batch)
    assert still["val/open_loop_rel_err_pos"] == pytest.approx(1.0)
    uwm = build_tiny("uwm")
    full = {**batch, "obs": torch.randint(0, 256, (5, 2, 2, 3, 40, 40), generator=g, dtype=torch.uint8)}
    a, b = policy_metrics(uwm, full), policy_metrics(uwm, full)
    assert a == b
    gens = [torch.Generator().manual_seed(i) for i in range(4)]
    ref = action_error_summary(uwm.predict_action({"obs": full["obs"][:4]}, generator=gens), full["action"][:4])
    assert a["val/open_loop_rel_err_pos"] == pytest.approx(ref["rel_err_pos"])
    assert policy_metrics(uwm, {**full, "action_mask": torch.zeros(5, dtype=torch.bool)}) == {}


def build_tiny(name):
    from uwmbench.methods import build_method
    torch.manual_seed(0)
    return build_method(name, "tiny")


def test_finetune_init_from(tmp_path):
    from uwmbench.benchmarks.train import train
    pre = train(_cfg(tmp_path, steps=2), tmp_path / "pre")
    s = train(_cfg(tmp_path, steps=2, extra=[f"trainer.init_from={pre['checkpoint']}"]), tmp_path / "ft")
    assert s["completed"]


def test_unknown_trainer_key_is_named(tmp_path):
    from uwmbench.benchmarks.train import train
    with pytest.raises(ConfigError, match="trainer.stepz"):
        train(_cfg(tmp_path, extra=["trainer.stepz=3"]), tmp_path / "r")


def test_unknown_method_key_is_named(tmp_path):
    from uwmbench.benchmarks.train import train
    with pytest.raises(ConfigError, match="num_regsters"):
        train(_cfg(tmp_path, extra=["method.num_regsters=3"]), tmp_path / "r")


@pytest.mark.parametrize("name", product_methods())
def test_short_training_run_of_every_method_on_libero_layout_file(name, tmp_path):
    """Every registered method (tiny) trains through the real trainer and data pipeline on a
    LIBERO-layout HDF5 file, with the latent cache on, and its checkpoint loads back."""
    from uwmbench.benchmarks.checkpoint import load_method
    from uwmbench.benchmarks.train import train
    cfg = _cfg(tmp_path, method=name, steps=3, extra=["data.latent_cache=true", f"data.cache_dir={tmp_path / 'cache'}"])
    s = train(cfg, tmp_path / "run")
    assert s["completed"] and s["steps"] == 3 and s["final_loss"] == s["final_loss"]  # not NaN
    m = load_method(tmp_path / "run")
    assert m.name == name


def test_torchrun_ddp_two_cpu_processes(tmp_path):
    """Multi-GPU path, exercised on CPU: torchrun with 2 processes (gloo backend)."""
    import os
    import subprocess
    import sys
    data = write_libero_hdf5(tmp_path / "demos.hdf5", n_demos=3, length=24)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           "-m", "uwmbench", "train", "method=dp", "method.size=tiny", f"data.sources=[{{path:{data}}}]",
           "trainer.steps=4", "trainer.batch_size=4", "trainer.log_every=1", "trainer.ckpt_every=2",
           "trainer.progress=false", "data.latent_cache=false", "--run-dir", str(tmp_path / "run")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("trained 4 steps") == 2  # both ranks finished
    assert (tmp_path / "run/checkpoints/step_00000004/model.safetensors").is_file()
    assert [s for s, _ in _losses(tmp_path / "run")] == [1, 2, 3, 4]


def test_fused_optimizer_is_the_same_update(tmp_path):
    """trainer.fused_optimizer=true (perf train's fast path) trains the same curve as the default
    AdamW to float rounding: same data, same noise, same update rule."""
    from uwmbench.benchmarks.train import train
    train(_cfg(tmp_path, method="dp", steps=5), tmp_path / "a")
    train(_cfg(tmp_path, method="dp", steps=5, extra=["trainer.fused_optimizer=true"]), tmp_path / "b")
    a, b = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert [s for s, _ in a] == [s for s, _ in b]
    assert all(abs(x - y) <= 1e-4 * max(1.0, abs(x)) for (_, x), (_, y) in zip(a, b)), (a, b)
    assert a[-1] != a[0]


def test_compiled_training_is_the_same_update(tmp_path, monkeypatch):
    """trainer.compile=true (perf train's compiled path) trains the same curve as eager mode to float
    rounding: torch.compile fuses kernels, it must not change the loss, the noise or the update."""
    import torch._inductor.config as inductor_config

    from uwmbench.benchmarks.train import train
    # compile in this process: no pool of compile workers loading the machine the other tests share
    monkeypatch.setattr(inductor_config, "compile_threads", 1)
    monkeypatch.setattr(inductor_config, "fallback_random", inductor_config.fallback_random)  # restored after
    train(_cfg(tmp_path, method="uwm", steps=3), tmp_path / "a")
    train(_cfg(tmp_path, method="uwm", steps=3, extra=["trainer.compile=true"]), tmp_path / "b")
    a, b = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert [s for s, _ in a] == [s for s, _ in b] == [1, 2, 3]
    assert all(abs(x - y) <= 1e-3 * max(1.0, abs(x)) for (_, x), (_, y) in zip(a, b)), (a, b)
