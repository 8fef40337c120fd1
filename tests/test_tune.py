"""`uwmbench tune` robustness: a trial left RUNNING by a killed worker is failed and retried by
the next invocation (optuna heartbeat + retry callback), sampler seeds differ per invocation
(and a given seed reproduces), and a study refuses another training budget unless asked."""
import signal
import subprocess
import sys
import time

import optuna
import pytest

from uwmbench.config import ConfigError, load_config
from uwmbench.sweeps import tune

pytest_plugins = ["conftest_slurm"]
TS = optuna.trial.TrialState


def _cfg(tmp_path, smoke_data=None, *extra):
    src = f"{smoke_data}/libero_10/smoke.hdf5" if smoke_data else "/unused.hdf5"
    return tune.resolve(load_config("tune", [
        "launch_with=inline", "workers=1", "n_trials=1", f"storage=sqlite:///{tmp_path / 'study.db'}",
        f"out={tmp_path / 'tune'}", "study=s", "report_every=2", "train.method.name=bc", "train.method.size=tiny",
        f"train.data.sources=[{{path:'{src}'}}]", "train.data.val_fraction=0.34", "train.data.latent_cache=false",
        "train.trainer.steps=2", "train.trainer.batch_size=4",
        *extra]))


def _fake_objective(trial, cfg):
    p = tune.suggest(trial, cfg["space"])
    trial.set_user_attr("sampler_seed", cfg.get("sampler_seed"))
    return sum(p.values())


def _params(cfg):
    st = optuna.load_study(study_name=cfg["study"], storage=cfg["storage"])
    return [t.params for t in sorted(st.trials, key=lambda t: t.number)]


def test_seeds_differ_per_invocation_unless_given(tmp_path, monkeypatch):
    monkeypatch.setattr(tune, "objective", _fake_objective)
    cfg = _cfg(tmp_path, None, "sampler=random")
    tune.launch_study(cfg)
    tune.launch_study(cfg)  # a second invocation on the same study
    p = _params(cfg)
    assert len(p) == 2 and p[0] != p[1], "the second invocation repeated the first one's parameters"
    # a given seed reproduces a study, and a continued seeded study does not repeat its parameters
    runs = []
    for name in ("a", "b"):
        c = _cfg(tmp_path, None, "sampler=random", "seed=7", f"study={name}")
        tune.launch_study(c)
        runs.append(_params(c))
    assert runs[0] == runs[1]
    tune.launch_study(c)
    assert _params(c)[1] != _params(c)[0]
    # two workers of one invocation get different seeds
    assert len(set(tune.sampler_seeds(None, 0, 2))) == 2 and len(set(tune.sampler_seeds(7, 0, 2))) == 2


def test_budget_recorded_and_other_budget_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(tune, "objective", _fake_objective)
    cfg = _cfg(tmp_path, None, "n_trials=0")
    tune.launch_study(cfg)
    st = optuna.load_study(study_name="s", storage=cfg["storage"])
    assert st.user_attrs["budget"] == {"trainer.steps": 2, "trainer.batch_size": 4}
    with pytest.raises(ConfigError, match="budget.*allow_budget_change"):
        tune.launch_study(_cfg(tmp_path, None, "n_trials=0", "train.trainer.steps=8"))
    tune.launch_study(_cfg(tmp_path, None, "n_trials=1", "train.trainer.steps=8", "allow_budget_change=true"))
    st = optuna.load_study(study_name="s", storage=cfg["storage"])
    assert st.user_attrs["budget"]["trainer.steps"] == 8 and len(st.user_attrs["budget_history"]) == 2


KILLED_WORKER = """
import sys, time, json
from uwmbench.sweeps import tune
cfg = json.loads(sys.argv[1])
def stuck(trial, cfg):
    tune.suggest(trial, cfg["space"])
    trial.set_user_attr("run_dir", cfg["out"] + "/s/trial_0000")
    print("running", flush=True)
    time.sleep(600)
tune.objective = stuck
tune.tune_worker({**cfg, "sampler_seed": 1}, 1)
"""


def test_killed_trial_failed_and_retried_by_next_tune(tmp_path, smoke_data):
    import json
    cfg = _cfg(tmp_path, smoke_data, "heartbeat_interval=1", "grace_period=2", "failed_trial_retries=1")
    tune._make_study(cfg, create=True)
    p = subprocess.Popen([sys.executable, "-c", KILLED_WORKER, json.dumps(cfg)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "running"
        time.sleep(1.5)  # a heartbeat or two
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    st = optuna.load_study(study_name="s", storage=cfg["storage"])
    [killed] = st.trials
    assert killed.state == TS.RUNNING  # what a killed worker leaves behind
    time.sleep(2.5)  # past the grace period
    t0 = time.time()
    tune.launch_study(cfg)  # the next `uwmbench tune`: fails the stale trial and runs its retry
    st = optuna.load_study(study_name="s", storage=cfg["storage"])
    states = [t.state for t in sorted(st.trials, key=lambda t: t.number)]
    assert states == [TS.FAIL, TS.COMPLETE], states
    retry = st.trials[1]
    assert retry.params == killed.params  # same parameters
    assert retry.system_attrs.get("failed_trial") == killed.number
    assert retry.user_attrs["run_dir"] == killed.user_attrs["run_dir"]  # resumes in the killed trial's folder
    print(f"retried trial trained in {time.time() - t0:.1f} s")
