"""Compiled-model cache: a LIBERO scene's MJCF compiled once, loaded as a MuJoCo binary after.

Building a LIBERO environment compiles its MJCF (meshes, convex hulls, textures: 1.5-3.5 s on
this 2-core machine, in every evaluation worker, for every task). The compiled model depends only
on the XML, the asset files it names and MuJoCo's version, and robosuite's XML of a LIBERO task does
not depend on the seed (fixture placements are applied at reset, see ``scene.py``), so the model
is saved once as MJB (``mj_saveModel``, an exact copy of ``mjModel``) and loaded from there
(~0.2 s) by every later environment of that task. The same key keeps the culling's convex hulls
(``culling.mesh_hulls``, ~0.4 s).

Where: ``$UWMBENCH_MODEL_CACHE`` (``off`` turns the cache off), by default
``$XDG_CACHE_HOME/uwmbench/models`` (``~/.cache/uwmbench/models``). An MJB of a LIBERO scene is
~200 MB; the directory is kept under ``$UWMBENCH_MODEL_CACHE_GB`` (default 8) by removing the
least recently used models. Files are written atomically; an unreadable one is removed and the
model compiled again (with a warning). Only the ``fast`` engine uses the cache: ``robosuite``
compiles as robosuite does. ``sim.model.get_xml()`` of a model loaded from the cache loads the
XML first (:func:`saved_xml`), so code that asks for it (demo collection's ``model_file``) gains
nothing from the cache and builds its envs with ``use_model_cache=False``.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from uwmbench.fileio import atomic_write_bytes

CACHE_ENV = "UWMBENCH_MODEL_CACHE"
LIMIT_ENV = "UWMBENCH_MODEL_CACHE_GB"
FORMAT = 1  # bump when what is stored under a key changes

_FILE_ATTR = re.compile(r'\sfile="([^"]+)"')


def cache_dir() -> Path | None:
    """The cache directory, or None when the cache is off."""
    v = os.environ.get(CACHE_ENV)
    if v is not None and v.strip().lower() in ("off", "0", "false", "none", ""):
        return None
    if v:
        return Path(v).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "uwmbench" / "models"


def limit_bytes() -> int:
    raw = os.environ.get(LIMIT_ENV, "8")
    try:
        gb = float(raw)
    except ValueError:
        raise ValueError(f"{LIMIT_ENV}={raw!r} is not a number of GB") from None
    return int(gb * 2**30)


def model_key(xml: str) -> str:
    """Key of the model an XML compiles to: the XML, size and modification time of every asset file
    it names (a reinstalled asset changes the key), MuJoCo's version and this cache's format."""
    import mujoco

    h = hashlib.sha256()
    h.update(f"mujoco {mujoco.__version__} format {FORMAT}\n".encode())
    h.update(xml.encode())
    for name in sorted(set(_FILE_ATTR.findall(xml))):
        try:
            st = os.stat(name)
            h.update(f"\n{name} {st.st_size} {st.st_mtime_ns}".encode())
        except OSError:
            h.update(f"\n{name} ?".encode())  # relative or missing: the compiler decides
    return h.hexdigest()[:32]


def _evict(d: Path, keep: Path) -> None:
    """Remove least recently used entries (by modification time, refreshed on every hit) until
    the directory fits the limit; ``keep`` (just written) stays."""
    files = [p for p in d.glob("*.mjb") if p != keep]
    total = sum(p.stat().st_size for p in files) + (keep.stat().st_size if keep.exists() else 0)
    for p in sorted(files, key=lambda p: p.stat().st_mtime):
        if total <= limit_bytes():
            break
        total -= p.stat().st_size
        for q in (p, p.with_suffix(".hulls.npz")):
            with contextlib.suppress(OSError):
                q.unlink()


def load_or_compile(xml: str) -> tuple[Any, str, str | None]:
    """``(MjModel, status, key)``; status ``hit`` (loaded), ``miss`` (compiled and stored) or ``off``."""
    import mujoco

    d = cache_dir()
    if d is None:
        return mujoco.MjModel.from_xml_string(xml), "off", None
    key = model_key(xml)
    path = d / f"{key}.mjb"
    if path.exists():
        try:
            model = mujoco.MjModel.from_binary_path(str(path))
            with contextlib.suppress(OSError):
                os.utime(path)
            return model, "hit", key
        except Exception as e:  # truncated or from another build: compile again
            warnings.warn(f"model cache: {path} could not be loaded ({e}); compiling the MJCF again", stacklevel=2)
            with contextlib.suppress(OSError):
                path.unlink()
    model = mujoco.MjModel.from_xml_string(xml)
    try:
        buf = np.empty(mujoco.mj_sizeModel(model), dtype=np.uint8)
        mujoco.mj_saveModel(model, None, buf)
        atomic_write_bytes(path, buf.tobytes())
        _evict(d, path)
    except OSError as e:
        warnings.warn(f"model cache: could not write {path} ({e}); continuing without it", stacklevel=2)
    return model, "miss", key


def cached_hulls(key: str | None, compute: Callable[[], dict[int, np.ndarray]]) -> dict[int, np.ndarray]:
    """``compute()`` (culling's convex hulls of a model), kept beside the model under ``key``."""
    d = cache_dir()
    if key is None or d is None:
        return compute()
    path = d / f"{key}.hulls.npz"
    if path.exists():
        try:
            with np.load(path) as z:
                return {int(k): z[k] for k in z.files}
        except Exception:  # unreadable: recompute and rewrite
            with contextlib.suppress(OSError):
                path.unlink()
    hulls = compute()
    buf = io.BytesIO()
    np.savez(buf, **{str(k): v for k, v in hulls.items()})
    with contextlib.suppress(OSError):
        atomic_write_bytes(path, buf.getvalue())
    return hulls


def saved_xml(model: Any, xml: str) -> str:
    """robosuite's ``sim.model.get_xml()`` for a model loaded from the cache: the MJCF with the
    model's current values (``mj_saveLastXML``, e.g. fixture placements of a LIBERO demo's
    ``model_file``). ``mj_saveLastXML`` writes the XML last loaded in the process, so the model's
    own XML is compiled first (~1-2 s: the cache saves nothing for callers of this)."""
    import tempfile

    import mujoco

    # An MJB does not keep mjModel's signature, which mj_saveLastXML checks against the XML's: the
    # XML's own model takes the cached model's real-valued arrays (what mj_saveLastXML copies back)
    fresh = mujoco.MjModel.from_xml_string(xml)
    for name in dir(fresh):
        if name.startswith("_"):
            continue
        a = getattr(fresh, name, None)
        if isinstance(a, np.ndarray) and a.dtype.kind == "f":
            b = getattr(model, name)
            if b.shape == a.shape:
                a[...] = b
    with tempfile.TemporaryDirectory() as td:
        path = os.path.join(td, "model.xml")
        mujoco.mj_saveLastXML(path, fresh)
        with open(path) as f:
            return f.read()


class CompiledModels:
    """While active, robosuite's ``MjSim.from_xml_string`` goes through :func:`load_or_compile`.
    ``status``/``key``/``model``: of the last model built under it."""

    def __init__(self) -> None:
        self.status: str | None = None
        self.key: str | None = None
        self.model: Any = None  # the MjModel the key is of

    @contextlib.contextmanager
    def active(self) -> Iterator["CompiledModels"]:
        from robosuite.utils import binding_utils

        sim_cls = binding_utils.MjSim
        original = sim_cls.__dict__["from_xml_string"]

        def from_xml_string(cls, xml):
            model, self.status, self.key = load_or_compile(xml)
            self.model = model
            sim = cls(model)
            if self.status == "hit":  # robosuite's get_xml needs the XML loaded in this process
                sim.model.get_xml = functools.partial(saved_xml, model, xml)
            return sim

        sim_cls.from_xml_string = classmethod(from_xml_string)
        try:
            yield self
        finally:
            sim_cls.from_xml_string = original


__all__ = ["CACHE_ENV", "LIMIT_ENV", "CompiledModels", "cache_dir", "cached_hulls", "load_or_compile", "model_key"]
