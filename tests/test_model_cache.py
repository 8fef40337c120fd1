"""The compiled-model cache (uwmbench/benchmarks/libero/model_cache.py): an MJB loaded from the cache is the
model the MJCF compiles to, byte for byte; keys follow the XML and its asset files; bad files are
recompiled; the directory stays under its size limit; a LIBERO env built from the cache simulates
and renders exactly as one compiled from its MJCF."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from uwmbench.benchmarks.libero import model_cache

XML = """<mujoco><asset><texture name="t" type="2d" builtin="checker" width="64" height="64"/>
<material name="m" texture="t"/></asset><worldbody><light pos="0 0 2"/>
<geom type="plane" size="1 1 .1" material="m"/><body pos="0 0 .3"><freejoint/>
<geom type="box" size=".{s} .1 .1" rgba="1 0 0 1"/></body></worldbody></mujoco>"""


def _bytes(model) -> bytes:
    import mujoco

    buf = np.zeros(mujoco.mj_sizeModel(model), dtype=np.uint8)
    mujoco.mj_saveModel(model, None, buf)
    return buf.tobytes()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "models"
    monkeypatch.setenv(model_cache.CACHE_ENV, str(d))
    monkeypatch.delenv(model_cache.LIMIT_ENV, raising=False)
    return d


def test_a_cached_model_is_the_compiled_model_byte_for_byte(cache):
    import mujoco

    xml = XML.format(s=1)
    compiled = mujoco.MjModel.from_xml_string(xml)
    m1, status1, key = model_cache.load_or_compile(xml)
    m2, status2, key2 = model_cache.load_or_compile(xml)
    assert (status1, status2) == ("miss", "hit") and key == key2
    assert (cache / f"{key}.mjb").is_file()
    assert _bytes(m1) == _bytes(compiled) == _bytes(m2)


def test_keys_follow_the_xml_the_asset_files_and_can_be_turned_off(cache, tmp_path, monkeypatch):
    asset = tmp_path / "a.stl"
    asset.write_bytes(b"solid a\nendsolid a\n")
    xml = f'<mujoco><asset><mesh name="a" file="{asset}"/></asset></mujoco>'
    k1 = model_cache.model_key(xml)
    assert model_cache.model_key(xml) == k1
    assert model_cache.model_key(xml.replace("name=\"a\"", "name=\"b\"")) != k1
    asset.write_bytes(b"solid a\n\nendsolid a\n")      # reinstalled asset: new size and time
    os.utime(asset, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert model_cache.model_key(xml) != k1
    monkeypatch.setenv(model_cache.CACHE_ENV, "off")
    assert model_cache.cache_dir() is None
    _, status, key = model_cache.load_or_compile(XML.format(s=1))
    assert (status, key) == ("off", None) and not cache.exists()


def test_an_unreadable_cache_file_is_compiled_again_with_a_warning(cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                          # MuJoCo logs the bad file to ./MUJOCO_LOG.TXT
    xml = XML.format(s=2)
    _, _, key = model_cache.load_or_compile(xml)
    path = cache / f"{key}.mjb"
    path.write_bytes(path.read_bytes()[:100])            # truncated (a killed writer, a full disk)
    with pytest.warns(UserWarning, match=str(path)):
        model, status, _ = model_cache.load_or_compile(xml)
    assert status == "miss" and model.ngeom == 2
    assert model_cache.load_or_compile(xml)[1] == "hit"  # rewritten whole


def test_the_cache_keeps_under_its_limit_by_dropping_the_least_recently_used(cache, monkeypatch):
    keys = []
    for s in (1, 2, 3):
        keys.append(model_cache.load_or_compile(XML.format(s=s))[2])
        time.sleep(0.02)
    size = (cache / f"{keys[0]}.mjb").stat().st_size
    monkeypatch.setenv(model_cache.LIMIT_ENV, str(2.5 * size / 2**30))  # room for two
    os.utime(cache / f"{keys[0]}.mjb")                   # the first used again: most recent
    model_cache.load_or_compile(XML.format(s=4))
    left = sorted(p.stem for p in cache.glob("*.mjb"))
    assert keys[0] in left and keys[1] not in left and len(left) == 2
    monkeypatch.setenv(model_cache.LIMIT_ENV, "lots")
    with pytest.raises(ValueError, match=model_cache.LIMIT_ENV):
        model_cache.limit_bytes()


@pytest.mark.libero
def test_a_libero_env_from_the_cache_simulates_and_renders_as_a_compiled_one(cache, monkeypatch):
    """book_caddy: the second env loads the cached model (and culling hulls); its states and frames
    over a few policy steps equal those of an env compiled with the cache off."""
    pytest.importorskip("libero.libero")
    from uwmbench.benchmarks.libero.envs import make_env

    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(12, 7))

    def run():
        with make_env("book_caddy", seed=0, render="lazy", replan_every=4, engine="fast") as env:
            frames = [env.reset(init_state=1)]
            states = []
            for t, a in enumerate(actions):
                env.step(a)
                states.append(env.sim_state())
                if (t + 1) % env.replan_every == 0:
                    frames.append(env.observation())
            return env.model_cache, np.array(states), frames

    first = run()
    hit = run()
    monkeypatch.setenv(model_cache.CACHE_ENV, "off")
    off = run()
    assert (first[0], hit[0], off[0]) == ("miss", "hit", "off")
    assert len(list(cache.glob("*.hulls.npz"))) == 1
    for other in (hit, first):
        assert np.array_equal(other[1], off[1])
        assert all(np.array_equal(a, b) for a, b in zip(other[2], off[2]))


@pytest.mark.libero
def test_get_xml_of_a_cached_model_is_robosuites(cache, monkeypatch):
    """A demo's model_file comes from robosuite's sim.model.get_xml() (mj_saveLastXML, which needs the
    XML loaded in the process): for a model loaded from the cache it is the same MJCF, fixture
    placements of the current scene included, as for a compiled one; the collector compiles."""
    pytest.importorskip("libero.libero")
    from uwmbench.benchmarks.libero.envs import make_env

    def xml(**kw):
        with make_env("book_caddy", seed=0, render="lazy", **kw) as env:
            env.reset(init_state=0, seed=3)                 # fixture placement drawn from seed 3
            return env.model_cache, env._rs.sim.model.get_xml()

    make_env("book_caddy", seed=0).close()                 # fills the cache
    hit = xml()
    compiled = xml(use_model_cache=False)
    assert (hit[0], compiled[0]) == ("hit", None)
    assert hit[1] == compiled[1] and "desk_caddy" in hit[1]
