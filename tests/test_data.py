"""Data pipeline: windows, flip, splits, stats, action-free sources, videos, mixtures, sampler, errors."""
from __future__ import annotations

import json
import types

import h5py
import numpy as np
import pytest
import torch

from uwmbench.benchmarks.data import (DataConfig, SourceConfig, StepBatchSampler, build_datasets, data_config_from,
                                      make_loader)
from uwmbench.benchmarks.data_sources import DataError, describe_hdf5, read_env_meta
from uwmbench.config import ConfigError
from uwmbench.methods.base import MethodConfig

VIEWS = ("agentview_rgb", "eye_in_hand_rgb")
S = 32


def write_indexed_hdf5(path, lengths=(25, 25, 25, 25), size=S, with_actions=True, marker=True, views=VIEWS,
                       action_dim=7, alignment="before_action", convention=None):
    """LIBERO layout whose pixels encode (frame index, demo index, view index): channel 0 = t,
    channel 1 = demo, channel 2 = view; row 0 is 255 in channel 2 (orientation marker).
    actions[t] = [t, demo, 0.1 * t, ...]. ``alignment`` None writes no alignment attribute (an
    official LIBERO file: frame t is what env.step(actions[t]) returned)."""
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        if alignment is not None:
            data.attrs["uwmbench_obs_alignment"] = alignment
        if convention is not None:
            data.attrs["macros_image_convention"] = convention
        data.attrs["env_args"] = json.dumps({"env_name": "LIVING_ROOM_SCENE1", "type": 1,
                                             "env_kwargs": {"camera_heights": size}})
        total = 0
        for d, T in enumerate(lengths):
            g = data.create_group(f"demo_{d}")
            t = np.arange(T, dtype=np.float32)
            if with_actions:
                a = np.zeros((T, action_dim), np.float32)
                a[:, 0], a[:, 1], a[:, 2] = t, d, 0.1 * t
                a[:, 3:] = np.sin(t[:, None] + np.arange(action_dim - 3))
                g.create_dataset("actions", data=a)
            for vi, v in enumerate(views):
                fr = np.zeros((T, size, size, 3), np.uint8)
                fr[..., 0] = np.arange(T, dtype=np.uint8)[:, None, None]
                fr[..., 1] = d
                fr[..., 2] = vi
                if marker:
                    fr[:, 0, :, 2] = 255
                g.create_dataset(f"obs/{v}", data=fr)
            g.create_dataset("obs/ee_pos", data=np.zeros((T, 3), np.float32))
            g.create_dataset("states", data=np.zeros((T, 9), np.float32))
            g.attrs["num_samples"] = T
            total += T
        data.attrs["total"] = total
        f.create_dataset("mask/first_two", data=np.array([b"demo_0", b"demo_1"]))
    return str(path)


def fake_method(obs_frames=2, action_horizon=16, next_frames=2, keys=None, action_dim=7):
    cfg = MethodConfig(name="fake", obs_frames=obs_frames, action_horizon=action_horizon, next_frames=next_frames,
                       action_dim=action_dim)
    # the members of the Method contract the data pipeline calls (batch_keys, latent_encoder)
    keys = ("obs", "action", "action_mask", "next_obs") if keys is None else tuple(keys)
    return types.SimpleNamespace(cfg=cfg, name="fake", batch_keys=lambda cached_latents=True: keys, latent_encoder=None)


def dcfg(*sources, **kw):
    kw.setdefault("val_fraction", 0.0)
    return data_config_from({"sources": list(sources), **kw})


@pytest.fixture
def h5(tmp_path):
    return write_indexed_hdf5(tmp_path / "demos.hdf5")


# ----------------------------------------------------------------------------- windows
def test_window_offsets_exact(h5):
    b = build_datasets(dcfg({"path": h5}), fake_method())
    ds = b.train.datasets[0]
    assert len(b.train) == 4 * (25 - 1)  # s = 0 .. T - To
    for idx in range(len(ds)):
        ep, s = ds.locate(idx)
        d = int(ep.split("_")[1])
        x = ds[idx]
        assert x["obs"].shape == (2, 2, 3, S, S) and x["obs"].dtype == np.uint8
        assert x["next_obs"].shape == (2, 2, 3, S, S)
        assert x["action"].shape == (16, 7) and x["action"].dtype == np.float32 and bool(x["action_mask"])
        # pixels encode the frame index; views in method order; the demo in channel 1
        np.testing.assert_array_equal(x["obs"][:, :, 0, 5, 5], [[s, s + 1]] * 2)
        np.testing.assert_array_equal(x["obs"][:, 0, 1, 5, 5], [d, d])
        np.testing.assert_array_equal(x["obs"][:, 0, 2, 5, 5], [0, 1])
        # actions s+1 .. s+16, then the last action repeated
        np.testing.assert_array_equal(x["action"][:, 0], np.minimum(np.arange(s + 1, s + 17), 24))
        np.testing.assert_array_equal(x["action"][:, 1], d)
        # next frames s+17, s+18, then the last frame repeated
        np.testing.assert_array_equal(x["next_obs"][:, :, 0, 5, 5], [[min(s + 17, 24), min(s + 18, 24)]] * 2)
    x = ds[0]
    np.testing.assert_array_equal(x["obs"][0, :, 0, 0, 0], [0, 1])
    np.testing.assert_array_equal(x["action"][:, 0], np.arange(1, 17))
    np.testing.assert_array_equal(x["next_obs"][0, :, 0, 0, 0], [17, 18])


def test_window_offsets_official_alignment(tmp_path):
    """LIBERO's official files store, at index j, the frame returned by env.step(actions[j]): the
    first action after frames (s, s+1) is actions[s+2]; the last frame has no action after it."""
    p = write_indexed_hdf5(tmp_path / "official.hdf5", alignment=None)
    b = build_datasets(dcfg({"path": p}), fake_method())
    ds = b.train.datasets[0]
    assert ds.source.obs_alignment == "after_action" and ds.source.action_offset == 1
    assert len(b.train) == 4 * (25 - 2)
    for idx in (0, 7, len(ds) - 1):
        ep, s = ds.locate(idx)
        x = ds[idx]
        np.testing.assert_array_equal(x["obs"][:, :, 0, 5, 5], [[s, s + 1]] * 2)
        np.testing.assert_array_equal(x["action"][:, 0], np.minimum(np.arange(s + 2, s + 18), 24))
        np.testing.assert_array_equal(x["next_obs"][:, :, 0, 5, 5], [[min(s + 17, 24), min(s + 18, 24)]] * 2)


def test_opencv_files_are_not_flipped_twice(tmp_path):
    """flip_vertical means 'upright frames for the policy': an opencv file is already upright."""
    m = fake_method(keys=("obs", "action", "action_mask"))
    gl = write_indexed_hdf5(tmp_path / "gl.hdf5", convention="opengl")
    cv = write_indexed_hdf5(tmp_path / "cv.hdf5", convention="opencv")
    x_gl = build_datasets(dcfg({"path": gl}, flip_vertical=True), m).train[0]["obs"]
    x_cv = build_datasets(dcfg({"path": cv}, flip_vertical=True), m).train[0]["obs"]
    assert (x_gl[..., 2, -1, :] == 255).all() and (x_cv[..., 2, 0, :] == 255).all()


def test_configurable_lengths(h5):
    m = fake_method(obs_frames=3, action_horizon=4, next_frames=1)
    ds = build_datasets(dcfg({"path": h5}), m).train.datasets[0]
    assert len(ds) == 4 * (25 - 2)
    x = ds[5]
    np.testing.assert_array_equal(x["obs"][0, :, 0, 0, 0], [5, 6, 7])
    np.testing.assert_array_equal(x["action"][:, 0], [7, 8, 9, 10])
    np.testing.assert_array_equal(x["next_obs"][0, :, 0, 0, 0], [11])
    # methods without next frames get none
    m = fake_method(next_frames=0, keys=("obs", "action", "action_mask"))
    x = build_datasets(dcfg({"path": h5}), m).train[0]
    assert set(x) == {"obs", "action", "action_mask"}


def test_flip_vertical(h5):
    m = fake_method(keys=("obs", "action", "action_mask"))
    up = build_datasets(dcfg({"path": h5}, flip_vertical=False), m).train[0]["obs"]
    fl = build_datasets(dcfg({"path": h5}, flip_vertical=True), m).train[0]["obs"]
    assert (up[:, :, 2, 0, :] == 255).all() and not (up[:, :, 2, -1, :] == 255).any()
    assert (fl[:, :, 2, -1, :] == 255).all() and not (fl[:, :, 2, 0, :] == 255).any()
    np.testing.assert_array_equal(fl, up[..., ::-1, :])


def test_val_split_by_episode(tmp_path):
    p = write_indexed_hdf5(tmp_path / "many.hdf5", lengths=[20] * 20)
    m = fake_method()
    b = build_datasets(dcfg({"path": p}, val_fraction=0.2, split_seed=3), m)
    tr, va = b.train.episode_names(), b.val.episode_names()
    assert len(va) == 4 and len(tr) == 16 and not (tr & va)
    assert {e for _, e in tr | va} == {f"demo_{i}" for i in range(20)}
    # every validation window comes from a validation episode
    vds = b.val.datasets[0]
    assert all(vds.locate(i)[0] in vds.demos for i in range(len(vds)))
    assert len(b.val) == 4 * 19
    again = build_datasets(dcfg({"path": p}, val_fraction=0.2, split_seed=3), m)
    assert again.val.episode_names() == va
    other = build_datasets(dcfg({"path": p}, val_fraction=0.2, split_seed=4), m)
    assert other.val.episode_names() != va
    assert build_datasets(dcfg({"path": p}, val_fraction=0.0), m).val is None


def test_action_stats_over_train_episodes(tmp_path):
    p = write_indexed_hdf5(tmp_path / "s.hdf5", lengths=[10, 20, 30, 40, 50])
    b = build_datasets(dcfg({"path": p}, val_fraction=0.2), fake_method())
    train_eps = sorted(e for _, e in b.train.episode_names())
    with h5py.File(p) as f:
        a = np.concatenate([f[f"data/{e}/actions"][()] for e in train_eps]).astype(np.float64)
    st = b.action_stats
    assert set(st) == {"min", "max", "mean", "std"}
    np.testing.assert_allclose(st["min"], a.min(0), atol=1e-6)
    np.testing.assert_allclose(st["max"], a.max(0), atol=1e-6)
    np.testing.assert_allclose(st["mean"], a.mean(0), atol=1e-5)
    np.testing.assert_allclose(st["std"], a.std(0), atol=1e-5)
    assert all(v.dtype == np.float32 and v.shape == (7,) for v in st.values())
    # the method's normaliser accepts them (minmax and gaussian)
    from uwmbench.methods.base import ActionNormalizer
    for mode in ("minmax", "gaussian"):
        n = ActionNormalizer(7, mode)
        n.set_stats(st)
        x = torch.from_numpy(a[:5].astype(np.float32))
        torch.testing.assert_close(n.unnormalize(n.normalize(x)), x)


def test_robomimic_filter_key_and_max_episodes(h5):
    m = fake_method()
    b = build_datasets(dcfg({"path": h5, "demos": ["mask/first_two"]}), m)
    assert {e for _, e in b.train.episode_names()} == {"demo_0", "demo_1"}
    b = build_datasets(dcfg({"path": h5, "demos": ["demo_3", "demo_1"]}), m)
    assert {e for _, e in b.train.episode_names()} == {"demo_1", "demo_3"}
    b = build_datasets(dcfg({"path": h5, "max_episodes": 3}), m)
    assert {e for _, e in b.train.episode_names()} == {"demo_0", "demo_1", "demo_2"}
    assert b.env_meta["env_name"] == "LIVING_ROOM_SCENE1"
    assert read_env_meta(h5)["env_kwargs"]["camera_heights"] == S
    info = describe_hdf5(h5)
    assert info["episodes"] == 4 and info["action_dim"] == 7 and info["filter_keys"] == ["first_two"]


# ----------------------------------------------------------------------------- action-free
def test_action_free_hdf5(tmp_path):
    p = write_indexed_hdf5(tmp_path / "nofree.hdf5", with_actions=False)
    b = build_datasets(dcfg({"path": p, "kind": "hdf5_action_free"}), fake_method())
    x = b.train[3]
    assert not bool(x["action_mask"]) and x["action"].shape == (16, 7) and not x["action"].any()
    np.testing.assert_array_equal(x["next_obs"][0, :, 0, 0, 0], [20, 21])
    # a file with actions can be used as action-free too
    q = write_indexed_hdf5(tmp_path / "withact.hdf5")
    assert not bool(build_datasets(dcfg({"path": q, "kind": "hdf5_action_free"}), fake_method()).train[0]["action_mask"])


def _write_video(path, frames, fps=10):
    import imageio
    import imageio.v3 as iio
    if str(path).endswith(".gif"):
        iio.imwrite(path, frames, duration=100, loop=0)
    else:
        w = imageio.get_writer(str(path), fps=fps, macro_block_size=1, quality=10)
        for f in frames:
            w.append_data(f)
        w.close()


def _ramp(T, size, offset=0):
    fr = np.zeros((T, size, size, 3), np.uint8)
    fr[...] = (offset + 8 * np.arange(T, dtype=np.uint8))[:, None, None, None]
    return fr


def test_video_folder_source(tmp_path, h5):
    vids = tmp_path / "videos"
    vids.mkdir()
    _write_video(vids / "clip_a.gif", _ramp(24, 48))          # single view: duplicated to both views
    _write_video(vids / "clip_b.mp4", _ramp(22, 64))
    _write_video(vids / "two__agentview_rgb.gif", _ramp(21, 40))           # naming convention: one file per view
    _write_video(vids / "two__eye_in_hand_rgb.gif", _ramp(21, 40, offset=3))
    (vids / "notes.txt").write_text("ignored")
    m = fake_method()
    cfg = dcfg({"path": h5, "weight": 1.0}, {"path": str(vids), "kind": "video_folder", "weight": 1.0},
               cache_dir=str(tmp_path / "cache"))
    b = build_datasets(cfg, m)
    vds = b.train.groups[1][0]
    assert vds.source.episodes == ["clip_a", "clip_b", "two"]
    assert vds.source.lengths == {"clip_a": 24, "clip_b": 22, "two": 21}
    assert len(vds) == 23 + 21 + 20
    x = vds[0]
    assert x["obs"].shape == (2, 2, 3, S, S) and x["obs"].dtype == np.uint8  # resized to the HDF5 frame size
    assert not bool(x["action_mask"]) and not x["action"].any()
    np.testing.assert_array_equal(x["obs"][0], x["obs"][1])                 # duplicated view
    np.testing.assert_array_equal(x["obs"][0, :, 0, 10, 10], [0, 8])
    np.testing.assert_array_equal(x["next_obs"][0, :, 0, 10, 10], [136, 144])
    ep, s = vds.locate(23 + 21 + 2)
    assert (ep, s) == ("two", 2)
    y = vds[23 + 21 + 2]
    np.testing.assert_array_equal(y["obs"][:, 0, 0, 3, 3], [16, 19])         # per-view files in view order
    z = vds[23 + 1]                                                          # mp4 (lossy): frame 1, 2 of clip_b
    assert abs(int(z["obs"][0, 0, 0, 5, 5]) - 8) <= 3 and abs(int(z["obs"][0, 1, 0, 5, 5]) - 16) <= 3
    # frame counts remembered in the index
    assert list((tmp_path / "cache" / "video_index").glob("*.json"))
    # a frame_size for a video-only dataset
    b2 = build_datasets(dcfg({"path": str(vids), "kind": "video_folder"}, frame_size=16,
                             cache_dir=str(tmp_path / "cache")), m)
    assert b2.train[0]["obs"].shape == (2, 2, 3, 16, 16)


# ----------------------------------------------------------------------------- mixture + sampler
def test_mixture_ratio(tmp_path):
    a = write_indexed_hdf5(tmp_path / "a.hdf5", lengths=[40] * 6)
    b = write_indexed_hdf5(tmp_path / "b.hdf5", lengths=[20] * 2, with_actions=False)
    cfg = dcfg({"path": a, "weight": 3.0}, {"path": b, "kind": "hdf5_action_free", "weight": 1.0})
    data = build_datasets(cfg, fake_method(keys=("obs", "action", "action_mask")))
    mix = data.train
    assert mix.weights == pytest.approx([0.75, 0.25])
    s = StepBatchSampler(mix, batch_size=64, seed=0)
    idx = np.concatenate([s.indices(k) for k in range(100)])
    from_b = (idx >= mix.group_offsets[1]).mean()
    assert abs(from_b - 0.25) < 0.03, from_b      # small group sampled 25% despite having 13% of windows
    # each window of a group is reachable and sampling inside a group is uniform-ish
    assert len(np.unique(idx[idx >= mix.group_offsets[1]])) == mix.group_sizes[1]
    loader = make_loader(mix, 256, seed=1)
    m = next(loader)["action_mask"].float().mean().item()
    assert abs(m - 0.75) < 0.1


def test_step_batch_sampler_deterministic_and_resumable(h5):
    ds = build_datasets(dcfg({"path": h5}), fake_method()).train
    s1 = StepBatchSampler(ds, 8, seed=5)
    s2 = StepBatchSampler(ds, 8, seed=5)
    assert s1.indices(7) == s2.indices(7) and s1.indices(0) != s1.indices(1)
    assert StepBatchSampler(ds, 8, seed=6).indices(7) != s1.indices(7)
    it = iter(s1)
    first = [next(it) for _ in range(10)]
    resumed = iter(StepBatchSampler(ds, 8, seed=5, start_step=6))
    assert [next(resumed) for _ in range(4)] == first[6:]
    full = make_loader(ds, 4, seed=2)
    batches = [next(full) for _ in range(5)]
    res = make_loader(ds, 4, seed=2, start_step=3)
    for want in batches[3:]:
        got = next(res)
        for k in want:
            assert torch.equal(want[k], got[k]), k


def test_step_batch_sampler_ranks_split_the_global_batch(h5):
    """Data parallel: the 3 processes' batches of 4 at a step are the slices of the batch of 12 a
    single process draws (same samples per step, so the same gradients up to float sums)."""
    ds = build_datasets(dcfg({"path": h5}), fake_method()).train
    one = StepBatchSampler(ds, 12, seed=5)
    ranks = [StepBatchSampler(ds, 4, seed=5, rank=r, world=3) for r in range(3)]
    for step in (0, 1, 9):
        assert sum((s.indices(step) for s in ranks), []) == one.indices(step)
    a = make_loader(ds, 12, seed=2, start_step=1)
    parts = [make_loader(ds, 4, seed=2, start_step=1, rank=r, world=3) for r in range(3)]
    want, got = next(a), [next(p) for p in parts]
    for k in want:
        assert torch.equal(want[k], torch.cat([g[k] for g in got])), k
    with pytest.raises(ValueError, match="rank"):
        StepBatchSampler(ds, 4, rank=3, world=3)


def test_loader_batch_format_and_workers(h5):
    ds = build_datasets(dcfg({"path": h5}), fake_method()).train
    b0 = make_loader(ds, 6, seed=9, num_workers=0)
    b2 = make_loader(ds, 6, seed=9, num_workers=2)
    for _ in range(3):
        x, y = next(b0), next(b2)
        assert x["obs"].dtype == torch.uint8 and x["obs"].shape == (6, 2, 2, 3, S, S)
        assert x["next_obs"].dtype == torch.uint8 and x["next_obs"].shape == (6, 2, 2, 3, S, S)
        assert x["action"].dtype == torch.float32 and x["action"].shape == (6, 16, 7)
        assert x["action_mask"].dtype == torch.bool and x["action_mask"].shape == (6,)
        for k in x:
            assert torch.equal(x[k], y[k]), k


def test_episode_memory_budget_gives_same_samples(h5):
    m = fake_method()
    held = build_datasets(dcfg({"path": h5}), m).train
    direct = build_datasets(dcfg({"path": h5}, episode_memory_mb=0), m).train  # read slices from the file
    for i in (0, 7, len(held) - 1):
        a, b = held[i], direct[i]
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    assert direct.datasets[0].source._memory.used == 0 and held.datasets[0].source._memory.used > 0


def test_glob_source_is_one_group(tmp_path):
    for i in range(3):
        write_indexed_hdf5(tmp_path / f"task{i}_demo.hdf5", lengths=[10 + i])
    b = build_datasets(dcfg({"path": str(tmp_path / "task*_demo.hdf5")}), fake_method())
    assert len(b.train.groups) == 1 and len(b.train.datasets) == 3
    assert len(b.train) == 9 + 10 + 11


# ----------------------------------------------------------------------------- config + errors
def test_data_config_from():
    c = data_config_from({"sources": ["a.hdf5", {"path": "v/", "kind": "video_folder", "weight": 0.5}],
                          "val_fraction": 0.1})
    assert isinstance(c, DataConfig) and c.sources[0] == SourceConfig(path="a.hdf5")
    assert c.sources[1].kind == "video_folder" and c.sources[1].weight == 0.5 and c.val_fraction == 0.1
    with pytest.raises(ConfigError, match="data.sources\\[0\\].*bogus"):
        data_config_from({"sources": [{"path": "a", "bogus": 1}]})
    with pytest.raises(ConfigError, match="kind"):
        data_config_from({"sources": [{"path": "a", "kind": "csv"}]})
    with pytest.raises(ConfigError, match="data.nope"):
        data_config_from({"sources": [], "nope": 1})
    with pytest.raises(ConfigError, match="weight"):
        data_config_from({"sources": [{"path": "a", "weight": 0}]})
    with pytest.raises(ConfigError, match="empty"):
        build_datasets(data_config_from({"sources": []}), fake_method())


def _err(cfg, method=None):
    with pytest.raises(DataError) as e:
        build_datasets(cfg, method or fake_method())
    return str(e.value)


def test_errors_name_file_and_key(tmp_path, h5):
    missing = str(tmp_path / "nope.hdf5")
    assert missing in _err(dcfg({"path": missing})) and "no such file" in _err(dcfg({"path": missing}))

    empty = tmp_path / "empty.hdf5"
    empty.write_bytes(b"")
    msg = _err(dcfg({"path": str(empty)}))
    assert str(empty) in msg and "empty" in msg

    corrupt = tmp_path / "corrupt.hdf5"
    corrupt.write_bytes(b"this is not an hdf5 file" * 100)
    msg = _err(dcfg({"path": str(corrupt)}))
    assert str(corrupt) in msg and "corrupt" in msg

    nokey = tmp_path / "noview.hdf5"
    write_indexed_hdf5(nokey, views=("eye_in_hand_rgb",))
    msg = _err(dcfg({"path": str(nokey)}))
    assert str(nokey) in msg and "'data/demo_0/obs/agentview_rgb'" in msg

    shape = tmp_path / "shape.hdf5"
    write_indexed_hdf5(shape)
    with h5py.File(shape, "a") as f:
        del f["data/demo_1/obs/eye_in_hand_rgb"]
        f["data/demo_1/obs/eye_in_hand_rgb"] = np.zeros((25, S, S), np.uint8)
    msg = _err(dcfg({"path": str(shape)}))
    assert str(shape) in msg and "'data/demo_1/obs/eye_in_hand_rgb'" in msg and "shape" in msg

    adim = tmp_path / "adim.hdf5"
    write_indexed_hdf5(adim, action_dim=6)
    msg = _err(dcfg({"path": str(adim)}))
    assert str(adim) in msg and "'data/demo_0/actions'" in msg and "action_dim" in msg

    noact = tmp_path / "noact.hdf5"
    write_indexed_hdf5(noact, with_actions=False)
    msg = _err(dcfg({"path": str(noact)}))
    assert "'data/demo_0/actions'" in msg and "hdf5_action_free" in msg

    nodata = tmp_path / "nodata.hdf5"
    with h5py.File(nodata, "w") as f:
        f.create_group("data")
    msg = _err(dcfg({"path": str(nodata)}))
    assert str(nodata) in msg and "no episodes" in msg
    with h5py.File(nodata, "w") as f:
        f.create_group("something_else")
    assert "missing key 'data'" in _err(dcfg({"path": str(nodata)}))

    msg = _err(dcfg({"path": h5, "demos": ["demo_0", "demo_9"]}))
    assert h5 in msg and "'data/demo_9'" in msg
    assert "'mask/nope'" in _err(dcfg({"path": h5, "demos": ["mask/nope"]}))

    dtype = tmp_path / "dtype.hdf5"
    write_indexed_hdf5(dtype)
    with h5py.File(dtype, "a") as f:
        del f["data/demo_2/obs/agentview_rgb"]
        f["data/demo_2/obs/agentview_rgb"] = np.zeros((25, S, S, 3), np.float32)
    msg = _err(dcfg({"path": str(dtype)}))
    assert "'data/demo_2/obs/agentview_rgb'" in msg and "uint8" in msg

    big = tmp_path / "big.hdf5"
    write_indexed_hdf5(big, size=16)
    msg = _err(dcfg({"path": h5}, {"path": str(big)}))
    assert str(big) in msg and "frame size" in msg


def test_truncated_file_error(tmp_path, h5):
    data = open(h5, "rb").read()
    cut = tmp_path / "truncated.hdf5"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as e:
        b = build_datasets(dcfg({"path": str(cut)}), fake_method())
        for i in range(len(b.train)):  # if the metadata survived, reading frames must fail clearly
            b.train[i]
    assert str(cut) in str(e.value)


def test_video_errors(tmp_path):
    m = fake_method()
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    msg = _err(dcfg({"path": str(empty), "kind": "video_folder"}, cache_dir=str(tmp_path / "c")), m)
    assert str(empty) in msg and "no video files" in msg
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "clip.mp4").write_bytes(b"garbage" * 50)
    msg = _err(dcfg({"path": str(bad), "kind": "video_folder"}, cache_dir=str(tmp_path / "c")), m)
    assert str(bad / "clip.mp4") in msg and "corrupt" in msg
    partial = tmp_path / "partial"
    partial.mkdir()
    _write_video(partial / "ep__agentview_rgb.gif", _ramp(5, 16))
    msg = _err(dcfg({"path": str(partial), "kind": "video_folder"}, cache_dir=str(tmp_path / "c")), m)
    assert "ep__eye_in_hand_rgb" in msg and str(partial) in msg
    assert "no such folder" in _err(dcfg({"path": str(tmp_path / "absent"), "kind": "video_folder"}), m)
