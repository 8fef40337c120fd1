"""Bad input at the command line: one line on stderr naming the file, key or value, exit code 2,
no traceback (``UWMBENCH_DEBUG=1`` shows it); checkpoints record their training frame size and
the evaluator refuses another camera size (or resizes when asked). No simulator."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import replace

import h5py
import numpy as np
import pytest
import torch

from libero_files import write_libero_hdf5
from uwmbench.benchmarks.data_sources import DataError, Hdf5Source
from uwmbench.cli import main
from uwmbench.config import ConfigError, ConfigPathError

VIEWS = ("agentview_rgb", "eye_in_hand_rgb")


def _err_lines(capsys) -> list[str]:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


def _obs_is_dataset(path):
    write_libero_hdf5(path, n_demos=2, length=20)
    with h5py.File(path, "a") as f:
        del f["data/demo_0/obs"]
        f["data/demo_0"].create_dataset("obs", data=np.zeros((20, 32, 32, 3), np.uint8))
    return path


@pytest.fixture(scope="module")
def ckpt64(tmp_path_factory):
    """A tiny bc checkpoint trained (1 step) on 64x64 frames."""
    from uwmbench.benchmarks.train import train
    from uwmbench.config import load_config

    d = tmp_path_factory.mktemp("ckpt64")
    data = write_libero_hdf5(d / "demos64.hdf5", n_demos=2, length=20, size=64)
    cfg = load_config("train", ["method=bc", "method.size=tiny", f"data.sources=[{{path:{data}}}]", "trainer.steps=1",
                                "trainer.batch_size=2", "trainer.progress=false", "data.val_fraction=0",
                                "data.latent_cache=false"])
    s = train(cfg, d / "run")
    return s["checkpoint"]


# ----------------------------------------------------------------------------- data errors
def test_missing_data_file_is_one_line_on_stderr(tmp_path):
    """The real console command, in a fresh process: exactly one stderr line, no traceback."""
    env = {**os.environ, "UWMBENCH_DEBUG": ""}
    r = subprocess.run([sys.executable, "-m", "uwmbench", "train", "method=bc", "method.size=tiny",
                        "data.sources=[{path:/nonexistent.hdf5}]", f"run_dir={tmp_path / 'run'}"],
                       capture_output=True, text=True, env=env, timeout=300)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("uwmbench train: data error: ") and "/nonexistent.hdf5" in lines[0]
    assert not (tmp_path / "run").exists()  # bad input leaves no empty run folder


def test_debug_env_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("UWMBENCH_DEBUG", "1")
    with pytest.raises(DataError, match="/nonexistent.hdf5"):
        main(["train", "method=bc", "method.size=tiny", "data.sources=[{path:/nonexistent.hdf5}]"])


def test_obs_dataset_instead_of_group_names_the_key(tmp_path, capsys):
    p = _obs_is_dataset(tmp_path / "bad.hdf5")
    with pytest.raises(DataError, match="'data/demo_0/obs' is a dataset") as e:
        Hdf5Source(str(p), VIEWS, action_dim=7)
    assert str(p) in str(e.value)
    assert main(["train", "method=bc", "method.size=tiny", f"data.sources=[{{path:{p}}}]",
                 f"run_dir={tmp_path / 'run'}"]) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("uwmbench train: data error: ")
    assert str(p) in lines[0] and "data/demo_0/obs" in lines[0]


def test_episode_without_obs_names_the_key(tmp_path):
    p = write_libero_hdf5(tmp_path / "no_obs.hdf5", n_demos=3, length=20)
    with h5py.File(p, "a") as f:
        del f["data/demo_2/obs"]  # the last episode: a validation episode is checked like the others
    with pytest.raises(DataError, match="missing key 'data/demo_2/obs'"):
        Hdf5Source(str(p), VIEWS, action_dim=7)


def test_validation_episodes_are_checked_at_start_up(tmp_path):
    """Validation episodes come from the same files as training ones (split per file after the
    file is validated), so a broken one fails before training starts."""
    from uwmbench.benchmarks.data import build_datasets, split_episodes
    from uwmbench.methods.base import build_method

    p = write_libero_hdf5(tmp_path / "d.hdf5", n_demos=4, length=20)
    _, val = split_episodes([f"demo_{i}" for i in range(4)], 0.25, 0)
    with h5py.File(p, "a") as f:
        del f[f"data/{val[0]}/obs/eye_in_hand_rgb"]
    with pytest.raises(DataError, match=f"data/{val[0]}/obs/eye_in_hand_rgb"):
        build_datasets({"sources": [{"path": str(p)}], "val_fraction": 0.25, "latent_cache": False},
                       build_method("bc", size="tiny"))


# ----------------------------------------------------------------------------- config errors
@pytest.mark.parametrize("args, named", [
    (["train", "method=bc", "method.size=tiny", "method.num_regsters=3"], "num_regsters"),
    (["evaluate", "checkpoint=/nonexistent/ckpt"], "/nonexistent/ckpt"),
    (["evaluate", "method=bc", "method.size=tiny", "tasks=[book_cady]"], "book_cady"),
])
def test_config_errors_are_one_line(args, named, capsys, tmp_path):
    if args[0] == "train":
        write_libero_hdf5(tmp_path / "d.hdf5", n_demos=2, length=20)
        args = [*args, f"data.sources=[{{path:{tmp_path / 'd.hdf5'}}}]", f"run_dir={tmp_path / 'run'}"]
    assert main(args) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(f"uwmbench {args[0]}: config error: ") and named in lines[0], lines


def test_missing_init_from_names_the_key(tmp_path):
    from uwmbench.benchmarks.train import train
    from uwmbench.config import load_config

    data = write_libero_hdf5(tmp_path / "d.hdf5", n_demos=2, length=20)
    cfg = load_config("train", ["method=bc", "method.size=tiny", f"data.sources=[{{path:{data}}}]", "trainer.steps=1",
                                "trainer.init_from=/nonexistent/pre", "data.latent_cache=false"])
    with pytest.raises(ConfigPathError, match="trainer.init_from=/nonexistent/pre"):
        train(cfg, tmp_path / "run")


def test_missing_checkpoint_is_still_a_file_not_found_error():
    from uwmbench.benchmarks.checkpoint import resolve_checkpoint

    with pytest.raises(FileNotFoundError, match="/nonexistent/ckpt"):
        resolve_checkpoint("/nonexistent/ckpt")


# ----------------------------------------------------------------------------- frame size
def test_checkpoint_records_its_frame_size(ckpt64):
    from uwmbench.benchmarks.evaluate import checkpoint_frame_size

    assert checkpoint_frame_size(ckpt64) == (64, 64)
    assert checkpoint_frame_size(os.path.dirname(os.path.dirname(ckpt64))) == (64, 64)  # the run folder


def test_other_camera_size_is_refused_naming_both(ckpt64, capsys, tmp_path):
    from uwmbench.benchmarks.evaluate import EvalOptions, evaluate

    with pytest.raises(ConfigError, match="64x64.*camera_size=128"):
        evaluate(ckpt64, ["book_caddy"], EvalOptions(conditions=["id"], n_rollouts=1, camera_size=128, workers=0))
    assert main(["evaluate", f"checkpoint={ckpt64}", "camera_size=128", "tasks=[book_caddy]", "conditions=[id]",
                 "n_rollouts=1", "workers=0", f"out={tmp_path / 'eval'}"]) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("uwmbench evaluate: config error: "), lines
    assert "64x64" in lines[0] and "128x128" in lines[0] and "camera_size=" in lines[0] and "resize_frames" in lines[0]


def test_matching_size_resize_and_old_checkpoints_pass_the_check(ckpt64, tmp_path, caplog):
    """No rollouts (episodes=[]): only the start-up checks run, no simulator."""
    import shutil

    from uwmbench.benchmarks.evaluate import EvalOptions, evaluate

    kw = dict(episodes=[], progress=False)
    opts = EvalOptions(conditions=["id"], workers=0)
    assert len(evaluate(ckpt64, ["book_caddy"], replace(opts, camera_size=64), **kw)) == 0
    with caplog.at_level(logging.INFO, logger="uwmbench.benchmarks.evaluate"):
        assert len(evaluate(ckpt64, ["book_caddy"], replace(opts, camera_size=128, resize_frames=True), **kw)) == 0
    assert "resized to the training size 64x64" in caplog.text
    old = tmp_path / "old"
    shutil.copytree(ckpt64, old)
    (old / "meta.json").unlink()  # a checkpoint written before frame_size was stored
    assert len(evaluate(str(old), ["book_caddy"], replace(opts, camera_size=128), **kw)) == 0


def test_policy_resizes_frames_to_the_training_size():
    from types import SimpleNamespace

    from uwmbench.benchmarks.evaluate import BatchedPolicy as _Policy

    class Recorder:
        cfg = SimpleNamespace(views=VIEWS, obs_frames=2, action_horizon=4, next_frames=2)
        name = "recorder"

        def __init__(self):
            self.seen = []

        def predict_action(self, batch):
            self.seen.append(batch["obs"])
            return torch.zeros(batch["obs"].shape[0], 4, 7)

    m = Recorder()
    pol = _Policy(m, flip_vertical=False, device="cpu", frame_size=(64, 64))
    obs = np.full((3, 2, 2, 3, 128, 128), 200, np.uint8)
    assert pol(obs).shape == (3, 4, 7)
    x = m.seen[-1]
    assert x.dtype == torch.uint8 and tuple(x.shape) == (3, 2, 2, 3, 64, 64) and bool((x == 200).all())
    pol(np.zeros((1, 2, 2, 3, 64, 64), np.uint8))  # already the training size: passed through
    assert tuple(m.seen[-1].shape[-2:]) == (64, 64)
