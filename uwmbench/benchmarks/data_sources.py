"""Episode sources: where frames and actions come from (read side of the data pipeline).

A *source* is one file (or one folder of videos) that holds episodes. Every source exposes the
same small surface, so windowing (``uwmbench/benchmarks/data.py``) and the latent cache
(``uwmbench/benchmarks/latent_cache.py``) do not care where the frames live:

- ``episodes``: episode names (``demo_0``, ... or video stems), ``lengths``: frames per episode
- ``frame_shape``: (H, W) of the frames the loader returns (uint8, channels first)
- ``has_actions``; ``load_actions(ep)`` -> float32 (T, A)
- ``read_frames(ep, view, start, stop)`` -> uint8 (stop-start, 3, H, W), flipped if asked
- ``load_episode_frames(ep)`` -> uint8 (T, V, 3, H, W) (all views; cache building, fit-vae)
- ``identity()``: what the latent-cache key hashes (absolute path, size, mtime, episodes, ...)

Kinds:

``hdf5``            LIBERO / robomimic layout: ``data/demo_N/actions`` (T, A) and
                    ``data/demo_N/obs/<view>`` uint8 (T, H, W, 3).
``hdf5_action_free`` the same layout without (or ignoring) ``actions``.
``video_folder``    a folder of video files (mp4, avi, mov, mkv, webm, gif, ...), one episode per
                    file, or one per ``<episode>__<view>.<ext>`` group (see ``docs/data.md``).

Every problem found (missing file or key, wrong shape or dtype, empty or corrupt file) raises
:class:`DataError` with the file and the key named. HDF5 handles are opened lazily in the
process that reads (never pickled), so DataLoader workers each get their own.
"""
from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from tqdm import tqdm

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".gif", ".mpg", ".mpeg", ".ogv")
SOURCE_KINDS = ("hdf5", "hdf5_action_free", "video_folder")
VIEW_SEPARATOR = "__"  # video naming convention: <episode>__<view>.<ext>


class DataError(ValueError):
    """A data file is missing, unreadable or not in the expected layout (file and key named)."""


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def expand_paths(pattern: str, kind: str) -> list[str]:
    """``~`` and environment variables expanded; a glob (``*``, ``?``, ``[``) expands to the
    matching files (sorted, natural order). A path without glob characters is returned as is
    (existence is checked by the source)."""
    p = os.path.expandvars(os.path.expanduser(str(pattern)))
    if any(c in p for c in "*?["):
        hits = sorted(glob.glob(p), key=_natural_key)
        if kind == "video_folder":
            hits = [h for h in hits if os.path.isdir(h)]
        else:
            hits = [h for h in hits if os.path.isfile(h)]
        if not hits:
            raise DataError(f"data source {pattern!r}: the pattern matches no {'folder' if kind == 'video_folder' else 'file'}")
        return [os.path.abspath(h) for h in hits]
    return [os.path.abspath(p)]


def check_source_path(path: str, kind: str) -> None:
    """The cheap checks of one source path (exists; a file, or a folder for ``video_folder``;
    not empty). The sources run them first; the trainer runs them on every source before it
    builds a model, so a misspelt path fails at once."""
    if kind == "video_folder":
        if not os.path.exists(path):
            raise DataError(f"{path}: no such folder (video_folder source)")
        if not os.path.isdir(path):
            raise DataError(f"{path}: not a folder (kind=video_folder expects a folder of video files)")
        return
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file (data source)")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a folder; an HDF5 source must be a file (use kind=video_folder for videos)")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: empty file (0 bytes), not an HDF5 dataset")


def check_source_paths(sources) -> None:
    """:func:`check_source_path` on every file of every source (``SourceConfig``-like entries
    with ``path`` and ``kind``; globs expanded)."""
    for sc in sources:
        for p in expand_paths(sc.path, sc.kind):
            check_source_path(p, sc.kind)


# ----------------------------------------------------------------------------- episode memory
_PROCESS_USED = [0]  # bytes held by every EpisodeMemory of this process (a forked child inherits the count with the arrays)


class EpisodeMemory:
    """Decoded episode arrays of one source, bounded by a byte budget shared by every source
    of the process (``data.episode_memory_mb``). Arrays are kept while the process total stays
    under budget; after that, episodes not already held are read from disk on every access (no
    eviction, so random access over a dataset larger than the budget does not thrash)."""

    def __init__(self, budget_bytes: int):
        self.budget = int(budget_bytes)
        self.used = 0
        self.items: OrderedDict[Any, np.ndarray] = OrderedDict()

    def get(self, key):
        return self.items.get(key)

    def room_for(self, nbytes: int) -> bool:
        return _PROCESS_USED[0] + nbytes <= self.budget

    def put(self, key, arr: np.ndarray) -> None:
        if key not in self.items and self.room_for(arr.nbytes):
            self.items[key] = arr
            self.used += arr.nbytes
            _PROCESS_USED[0] += arr.nbytes

    def clear(self) -> None:
        self.items.clear()
        _PROCESS_USED[0] -= self.used
        self.used = 0

    def __del__(self):
        try:
            self.clear()
        except Exception:
            pass


# ----------------------------------------------------------------------------- base
class EpisodeSource:
    kind: str = "?"

    def __init__(self, path: str, views: tuple[str, ...], memory_bytes: int):
        self.path = path
        self.views = tuple(views)
        self.episodes: list[str] = []
        self.lengths: dict[str, int] = {}
        self.frame_shape: tuple[int, int] = (0, 0)
        self.has_actions = False
        self.action_dim = 0
        self.env_meta: dict[str, Any] | None = None
        # frames vs actions: 0 when frame j was observed before actions[j] ("before_action"), 1 when
        # frame j is what env.step(actions[j]) returned (LIBERO's official files, "after_action")
        self.obs_alignment = "before_action"
        self.action_offset = 0
        self._memory_bytes = int(memory_bytes)
        self._memory = EpisodeMemory(memory_bytes)
        self._pid = os.getpid()

    # pickling (DataLoader workers): drop handles and decoded arrays, re-created lazily
    def __getstate__(self):
        d = self.__dict__.copy()
        d["_memory"] = None
        d["_pid"] = None
        self._drop_handles(d)
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)
        self._memory = EpisodeMemory(self._memory_bytes)
        self._pid = os.getpid()

    def _drop_handles(self, d: dict) -> None:
        pass

    def _check_process(self) -> None:
        if self._pid != os.getpid():  # forked without pickling: the parent's handles are not ours
            self._drop_handles(self.__dict__)  # (decoded arrays are kept: shared copy-on-write)
            self._pid = os.getpid()

    @property
    def name(self) -> str:
        return Path(self.path).name

    def num_frames(self) -> int:
        return int(sum(self.lengths[e] for e in self.episodes))

    def load_actions(self, ep: str) -> np.ndarray:
        raise NotImplementedError

    def read_frames(self, ep: str, view: str, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    def load_episode_frames(self, ep: str) -> np.ndarray:
        """uint8 (T, V, 3, H, W), views in ``self.views`` order."""
        t = self.lengths[ep]
        return np.stack([self.read_frames(ep, v, 0, t) for v in self.views], axis=1)

    def identity(self) -> dict[str, Any]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return dict(path=self.path, kind=self.kind, episodes=len(self.episodes), frames=self.num_frames(),
                    frame_shape=list(self.frame_shape), has_actions=self.has_actions)


def _select(names: list[str], demos: list[str] | None, max_episodes: int | None, path: str,
            masks: dict[str, list[str]] | None = None) -> list[str]:
    """Apply ``demos`` (explicit names, or ``mask/<filter_key>`` entries for robomimic filter
    keys) and then ``max_episodes`` (the first N in natural order)."""
    if demos is not None:
        chosen: list[str] = []
        known = set(names)
        for d in demos:
            d = str(d)
            if d.startswith("mask/"):
                if masks is None or d not in masks:
                    avail = sorted(masks) if masks else []
                    raise DataError(f"{path}: missing key {d!r} (filter keys in this file: {avail})")
                chosen += masks[d]
            else:
                chosen.append(d)
        missing = [d for d in chosen if d not in known]
        if missing:
            raise DataError(f"{path}: missing key 'data/{missing[0]}' (asked for by data.sources[].demos; "
                            f"{len(missing)} missing in all; the file has {len(names)} episodes)")
        seen = set()
        names = [d for d in sorted(chosen, key=_natural_key) if not (d in seen or seen.add(d))]
    if max_episodes is not None:
        if max_episodes < 1:
            raise DataError(f"{path}: max_episodes={max_episodes} must be >= 1")
        names = names[:max_episodes]
    return names


# ----------------------------------------------------------------------------- HDF5
def file_conventions(attrs, path: str) -> tuple[str, str]:
    """(image convention, frame/action alignment) of an HDF5 file from its ``data`` attributes
    (see :meth:`Hdf5Source._read_conventions`)."""
    def text(v):
        return v.decode() if isinstance(v, bytes) else str(v)

    conv = text(attrs.get("macros_image_convention", "opengl"))
    align = attrs.get("uwmbench_obs_alignment")
    if align is None:
        legacy = "expert_success_rate" in attrs and "macros_image_convention" not in attrs
        align = "before_action" if legacy else "after_action"
    align = text(align)
    if conv not in ("opengl", "opencv"):
        raise DataError(f"{path}: attribute data.macros_image_convention={conv!r}, expected 'opengl' or 'opencv'")
    if align not in ("before_action", "after_action"):
        raise DataError(f"{path}: attribute data.uwmbench_obs_alignment={align!r}, expected "
                        "'before_action' or 'after_action'")
    return conv, align


class Hdf5Source(EpisodeSource):
    """LIBERO / robomimic HDF5. Validation reads only metadata (shapes, dtypes, attributes)."""

    def __init__(self, path: str, views: tuple[str, ...], action_dim: int, action_free: bool = False,
                 flip_vertical: bool = True, demos: list[str] | None = None, max_episodes: int | None = None,
                 memory_bytes: int = 4 << 30):
        super().__init__(path, views, memory_bytes)
        self.kind = "hdf5_action_free" if action_free else "hdf5"
        self.flip_vertical = bool(flip_vertical)
        self._h5 = None
        self._validate(action_dim, action_free, demos, max_episodes)
        self._read_conventions()

    def _read_conventions(self) -> None:
        """The file's image convention and frame/action alignment (``data`` attributes).

        - ``macros_image_convention``: "opengl" (LIBERO's default: frames stored upside down) or
          "opencv" (upright). ``flip_vertical`` means "give the policy upright frames", so an opencv
          file is not flipped (the evaluator flips the simulator's opengl frames the same way).
        - alignment: ``uwmbench_obs_alignment`` when present; files written by uwmbench's collect
          before it followed the official layout (``expert_success_rate`` without
          ``macros_image_convention``) are "before_action"; every other file is LIBERO's official
          "after_action" (obs[j] is what env.step(actions[j]) returned, create_dataset.py)."""
        with h5py.File(self.path, "r") as f:
            conv, align = file_conventions(f["data"].attrs, self.path)
        self.image_convention = conv
        self.flip_vertical = self.flip_vertical and conv == "opengl"
        self.obs_alignment = align
        self.action_offset = 1 if align == "after_action" else 0

    # -- handles
    def _drop_handles(self, d: dict) -> None:
        d["_h5"] = None

    def _file(self):
        self._check_process()
        if self._h5 is None:
            try:
                self._h5 = h5py.File(self.path, "r")
            except OSError as e:
                raise DataError(f"{self.path}: cannot open the HDF5 file ({e})") from None
        return self._h5

    def close(self) -> None:
        if self._h5 is not None:
            try:
                self._h5.close()
            except Exception:
                pass
        self._h5 = None

    # -- validation
    def _validate(self, action_dim: int, action_free: bool, demos, max_episodes) -> None:
        p = self.path
        check_source_path(p, self.kind)
        try:
            f = h5py.File(p, "r")
        except OSError as e:
            raise DataError(f"{p}: corrupt or not an HDF5 file ({e})") from None
        try:
            if "data" not in f:
                raise DataError(f"{p}: missing key 'data' (expected the LIBERO/robomimic layout data/demo_N/...)")
            data = f["data"]
            if not isinstance(data, h5py.Group):
                raise DataError(f"{p}: key 'data' is not a group")
            names = sorted(data.keys(), key=_natural_key)
            if not names:
                raise DataError(f"{p}: key 'data' holds no episodes (empty dataset)")
            masks = None
            if "mask" in f and isinstance(f["mask"], h5py.Group):
                masks = {f"mask/{k}": [x.decode() if isinstance(x, bytes) else str(x) for x in np.asarray(f["mask"][k])]
                         for k in f["mask"].keys()}
            names = _select(names, demos, max_episodes, p, masks)
            if "env_args" in data.attrs:
                self.env_meta = _env_meta(p, data.attrs["env_args"])
            shape = None
            dims = set()
            for ep in names:
                g = data[ep]
                if not isinstance(g, h5py.Group):
                    raise DataError(f"{p}: key 'data/{ep}' is not a group")
                if "obs" not in g:
                    raise DataError(f"{p}: missing key 'data/{ep}/obs' (expected a group of frames data/{ep}/obs/<view>; "
                                    f"keys of data/{ep}: {sorted(g.keys())})")
                if not isinstance(g["obs"], h5py.Group):
                    raise DataError(f"{p}: key 'data/{ep}/obs' is a dataset of shape {getattr(g['obs'], 'shape', None)}, "
                                    f"expected a group of frames data/{ep}/obs/<view> (views {list(self.views)})")
                t = None
                for v in self.views:
                    key = f"data/{ep}/obs/{v}"
                    if key not in f:
                        have = sorted(g["obs"].keys()) if "obs" in g else []
                        raise DataError(f"{p}: missing key {key!r} (obs keys of data/{ep}: {have}; "
                                        f"the views come from method.views)")
                    ds = f[key]
                    if not isinstance(ds, h5py.Dataset) or ds.ndim != 4 or ds.shape[-1] != 3:
                        raise DataError(f"{p}: key {key!r} has shape {getattr(ds, 'shape', None)}, expected (T, H, W, 3) RGB frames")
                    if ds.dtype != np.uint8:
                        raise DataError(f"{p}: key {key!r} has dtype {ds.dtype}, expected uint8 frames")
                    if ds.shape[0] == 0:
                        raise DataError(f"{p}: key {key!r} has 0 frames (empty episode)")
                    if t is None:
                        t = int(ds.shape[0])
                    elif ds.shape[0] != t:
                        raise DataError(f"{p}: key {key!r} has {ds.shape[0]} frames but data/{ep}/obs/{self.views[0]} has {t}")
                    hw = tuple(int(x) for x in ds.shape[1:3])
                    if shape is None:
                        shape = hw
                    elif hw != shape:
                        raise DataError(f"{p}: key {key!r} has frames of {hw[0]}x{hw[1]}, other frames in this file are "
                                        f"{shape[0]}x{shape[1]} (all views and episodes must share one size)")
                if not action_free:
                    key = f"data/{ep}/actions"
                    if key not in f:
                        raise DataError(f"{p}: missing key {key!r} (use kind=hdf5_action_free for files without actions)")
                    ds = f[key]
                    if not isinstance(ds, h5py.Dataset) or ds.ndim != 2:
                        raise DataError(f"{p}: key {key!r} has shape {getattr(ds, 'shape', None)}, expected (T, action_dim)")
                    if ds.shape[0] != t:
                        raise DataError(f"{p}: key {key!r} has {ds.shape[0]} steps but data/{ep}/obs/{self.views[0]} has {t} frames")
                    if ds.shape[1] != action_dim:
                        raise DataError(f"{p}: key {key!r} has shape {tuple(ds.shape)}: action_dim {ds.shape[1]} != "
                                        f"method.action_dim={action_dim}")
                    if not np.issubdtype(ds.dtype, np.number):
                        raise DataError(f"{p}: key {key!r} has dtype {ds.dtype}, expected numbers")
                    dims.add(int(ds.shape[1]))
                self.lengths[ep] = int(t)
            self.episodes = names
            self.frame_shape = shape  # type: ignore[assignment]
            self.has_actions = not action_free
            self.action_dim = action_dim
        except DataError:
            raise
        except (OSError, RuntimeError, KeyError) as e:  # corrupt internals (truncated file, bad B-tree, ...)
            raise DataError(f"{p}: corrupt HDF5 file ({type(e).__name__}: {e})") from None
        finally:
            f.close()

    # -- reading
    def _read(self, key: str, sel=slice(None)) -> np.ndarray:
        try:
            return self._file()[key][sel]
        except DataError:
            raise
        except Exception as e:
            raise DataError(f"{self.path}: cannot read key {key!r} ({type(e).__name__}: {e})") from None

    def _process(self, frames: np.ndarray) -> np.ndarray:
        """(n, H, W, 3) as stored -> (n, 3, H, W) contiguous, flipped vertically if asked."""
        from robomimic.utils.obs_utils import batch_image_hwc_to_chw
        if self.flip_vertical:
            frames = frames[:, ::-1]
        return np.ascontiguousarray(batch_image_hwc_to_chw(frames))

    def read_frames(self, ep: str, view: str, start: int, stop: int) -> np.ndarray:
        self._check_process()
        key = ("frames", ep, view)
        arr = self._memory.get(key)
        if arr is None:
            t = self.lengths[ep]
            h, w = self.frame_shape
            if self._memory.room_for(t * 3 * h * w):
                arr = self._process(self._read(f"data/{ep}/obs/{view}"))
                self._memory.put(key, arr)
            else:
                return self._process(self._read(f"data/{ep}/obs/{view}", slice(start, stop)))
        return arr[start:stop]

    def load_actions(self, ep: str) -> np.ndarray:
        if not self.has_actions:
            raise DataError(f"{self.path}: source kind {self.kind} has no actions")
        self._check_process()
        key = ("actions", ep)
        arr = self._memory.get(key)
        if arr is None:
            arr = np.asarray(self._read(f"data/{ep}/actions"), dtype=np.float32)
            if not np.all(np.isfinite(arr)):
                raise DataError(f"{self.path}: key 'data/{ep}/actions' holds non-finite values")
            self._memory.put(key, arr)
        return arr

    def identity(self) -> dict[str, Any]:
        st = os.stat(self.path)
        return dict(kind=self.kind, path=os.path.abspath(self.path), size=st.st_size, mtime_ns=st.st_mtime_ns,
                    flip=self.flip_vertical)


def _env_meta(path: str, raw) -> dict[str, Any] | None:
    """Env metadata (env name, type, kwargs) through robomimic's reader; a malformed attribute
    is reported, not fatal (training does not need it)."""
    try:
        import contextlib
        import io
        with contextlib.redirect_stdout(io.StringIO()):  # robomimic prints a macro-file notice on import
            from robomimic.utils.file_utils import get_env_metadata_from_dataset
        return get_env_metadata_from_dataset(path)
    except ImportError:
        pass
    except Exception as e:
        log.warning("%s: attribute data.env_args is not readable env metadata (%s)", path, e)
        return None
    try:
        return json.loads(raw)
    except Exception:
        return None


def read_env_meta(path: str) -> dict[str, Any]:
    """robomimic env metadata of an HDF5 dataset (``data.attrs['env_args']``): env name, type,
    kwargs. Raises :class:`DataError` naming the file and key when absent."""
    p = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(p):
        raise DataError(f"{p}: no such file")
    try:
        with h5py.File(p, "r") as f:
            if "data" not in f or "env_args" not in f["data"].attrs:
                raise DataError(f"{p}: missing key 'data' attribute 'env_args' (robomimic env metadata)")
    except OSError as e:
        raise DataError(f"{p}: corrupt or not an HDF5 file ({e})") from None
    meta = _env_meta(p, None)
    if meta is None:
        raise DataError(f"{p}: attribute 'data'.env_args is not valid JSON")
    return meta


# ----------------------------------------------------------------------------- videos
def _decode_video(path: str) -> np.ndarray:
    """All frames of a video/gif as uint8 (T, H, W, 3)."""
    import imageio.v3 as iio
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: empty file (0 bytes), not a video")
    try:
        frames = iio.imread(path, index=None)
    except Exception as e:
        raise DataError(f"{path}: corrupt or unreadable video ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    frames = np.asarray(frames)
    if frames.ndim == 3 and path.lower().endswith(".gif"):  # single-frame gif
        frames = frames[None]
    if frames.ndim == 3:  # (T, H, W) gray
        frames = frames[..., None]
    if frames.ndim != 4:
        raise DataError(f"{path}: decoded frames have shape {frames.shape}, expected (T, H, W, C)")
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    elif frames.shape[-1] == 4:
        frames = frames[..., :3]
    elif frames.shape[-1] != 3:
        raise DataError(f"{path}: frames have {frames.shape[-1]} channels, expected 1, 3 or 4")
    if frames.dtype != np.uint8:
        frames = np.clip(frames, 0, 255).astype(np.uint8)
    if frames.shape[0] == 0:
        raise DataError(f"{path}: video has 0 frames")
    return frames


def resize_frames(frames: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """uint8 (T, H, W, 3) -> uint8 (T, 3, h, w), bilinear with antialiasing."""
    import torch
    import torch.nn.functional as F
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    if tuple(x.shape[-2:]) != tuple(shape):
        out = []
        for i in range(0, x.shape[0], 256):
            y = F.interpolate(x[i:i + 256].float(), size=tuple(shape), mode="bilinear", antialias=True, align_corners=False)
            out.append(y.round_().clamp_(0, 255).to(torch.uint8))
        x = torch.cat(out)
    return np.ascontiguousarray(x.numpy())


class VideoFolderSource(EpisodeSource):
    """A folder of videos, read with imageio (imageio-ffmpeg for mp4/avi/..., pillow for gif).

    Naming: ``<episode>.<ext>`` is one single-view episode whose frames are used for every
    view; ``<episode>__<view>.<ext>`` files (``view`` one of the method's views) form one
    multi-view episode and every view must be present. Frames are resized to ``frame_shape``.
    Frame counts are found by decoding each file once and remembered in ``index_dir`` keyed by
    the file's size and mtime. Videos are taken as upright: no vertical flip."""

    kind = "video_folder"

    def __init__(self, path: str, views: tuple[str, ...], frame_shape: tuple[int, int],
                 demos: list[str] | None = None, max_episodes: int | None = None, memory_bytes: int = 4 << 30,
                 index_dir: str | None = None):
        super().__init__(path, views, memory_bytes)
        self.frame_shape = (int(frame_shape[0]), int(frame_shape[1]))
        self.files: dict[str, dict[str, str]] = {}  # episode -> view -> file ("*" = all views)
        self._index_dir = index_dir
        self._scan(demos, max_episodes)

    def _scan(self, demos, max_episodes) -> None:
        p = self.path
        check_source_path(p, self.kind)
        groups: dict[str, dict[str, str]] = {}
        for fn in sorted(os.listdir(p)):
            stem, ext = os.path.splitext(fn)
            if ext.lower() not in VIDEO_EXTENSIONS or not os.path.isfile(os.path.join(p, fn)):
                continue
            ep, view = stem, "*"
            if VIEW_SEPARATOR in stem:
                head, tail = stem.rsplit(VIEW_SEPARATOR, 1)
                if tail in self.views:
                    ep, view = head, tail
            g = groups.setdefault(ep, {})
            if view in g:
                raise DataError(f"{p}: episode {ep!r} view {view!r} has two files: {g[view]} and {fn}")
            g[view] = fn
        if not groups:
            raise DataError(f"{p}: no video files (extensions {', '.join(VIDEO_EXTENSIONS)})")
        for ep, g in groups.items():
            if "*" in g and len(g) > 1:
                raise DataError(f"{p}: episode {ep!r} has both a single-view file {g['*']} and per-view files "
                                f"{sorted(v for v in g if v != '*')}")
            if "*" not in g:
                missing = [v for v in self.views if v not in g]
                if missing:
                    raise DataError(f"{p}: episode {ep!r} is missing view file(s) "
                                    f"{[f'{ep}{VIEW_SEPARATOR}{v}.<ext>' for v in missing]}")
        names = _select(sorted(groups, key=_natural_key), demos, max_episodes, p)
        self.files = {ep: groups[ep] for ep in names}
        self.episodes = names
        index = self._load_index()
        changed = False
        for ep in tqdm(names, desc=f"scan {self.name}", disable=len(names) < 20, leave=False):
            counts = []
            for view, fn in self.files[ep].items():
                fp = os.path.join(p, fn)
                st = os.stat(fp)
                ikey = f"{fn}:{st.st_size}:{st.st_mtime_ns}"
                if ikey not in index:
                    index[ikey] = int(_decode_video(fp).shape[0])
                    changed = True
                counts.append((index[ikey], fn))
            n = {c for c, _ in counts}
            if len(n) > 1:
                raise DataError(f"{p}: episode {ep!r}: view files have different frame counts {counts}")
            self.lengths[ep] = counts[0][0]
        if changed:
            self._save_index(index)

    def _index_path(self) -> str | None:
        if not self._index_dir:
            return None
        h = hashlib.sha256(os.path.abspath(self.path).encode()).hexdigest()[:16]
        return os.path.join(os.path.expanduser(self._index_dir), f"{Path(self.path).name}-{h}.json")

    def _load_index(self) -> dict[str, int]:
        ip = self._index_path()
        if ip and os.path.isfile(ip):
            try:
                with open(ip) as f:
                    return dict(json.load(f))
            except Exception:
                return {}
        return {}

    def _save_index(self, index: dict[str, int]) -> None:
        ip = self._index_path()
        if not ip:
            return
        try:
            os.makedirs(os.path.dirname(ip), exist_ok=True)
            tmp = f"{ip}.tmp-{os.getpid()}"
            with open(tmp, "w") as f:
                json.dump(index, f)
            os.replace(tmp, ip)
        except OSError as e:  # a read-only cache folder must not stop training
            log.warning("could not write the video frame-count index %s: %s", ip, e)

    def _episode_frames(self, ep: str, view: str) -> np.ndarray:
        self._check_process()
        g = self.files[ep]
        fn = g.get(view, g.get("*"))
        key = ("frames", ep, fn)
        arr = self._memory.get(key)
        if arr is None:
            fp = os.path.join(self.path, fn)
            arr = resize_frames(_decode_video(fp), self.frame_shape)
            if arr.shape[0] != self.lengths[ep]:
                raise DataError(f"{fp}: decoded {arr.shape[0]} frames, the index says {self.lengths[ep]} "
                                "(file changed while in use?)")
            self._memory.put(key, arr)
        return arr

    def read_frames(self, ep: str, view: str, start: int, stop: int) -> np.ndarray:
        return self._episode_frames(ep, view)[start:stop]

    def load_actions(self, ep: str) -> np.ndarray:
        raise DataError(f"{self.path}: video_folder sources have no actions")

    def identity(self) -> dict[str, Any]:
        h = hashlib.sha256()
        for ep in self.episodes:
            for view, fn in sorted(self.files[ep].items()):
                st = os.stat(os.path.join(self.path, fn))
                h.update(f"{ep}:{view}:{fn}:{st.st_size}:{st.st_mtime_ns};".encode())
        return dict(kind=self.kind, path=os.path.abspath(self.path), files=h.hexdigest())


def hdf5_frame_shape(path: str, views: tuple[str, ...]) -> tuple[int, int] | None:
    """(H, W) of the first episode's first view, or None if unreadable (validation reports it)."""
    try:
        with h5py.File(path, "r") as f:
            names = sorted(f["data"].keys(), key=_natural_key)
            ds = f[f"data/{names[0]}/obs/{views[0]}"]
            return int(ds.shape[1]), int(ds.shape[2])
    except Exception:
        return None


def describe_hdf5(path: str) -> dict[str, Any]:
    """Summary of an HDF5 dataset: episodes, frames, obs keys and shapes, action dim, env
    metadata (through robomimic). For ``uwmbench cache-latents --info`` and debugging."""
    p = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(p):
        raise DataError(f"{p}: no such file")
    try:
        with h5py.File(p, "r") as f:
            if "data" not in f:
                raise DataError(f"{p}: missing key 'data'")
            names = sorted(f["data"].keys(), key=_natural_key)
            info: dict[str, Any] = dict(path=p, episodes=len(names))
            if names:
                g = f[f"data/{names[0]}"]
                obs = g["obs"] if "obs" in g else None
                info["obs"] = ({k: list(getattr(obs[k], "shape", ())[1:]) for k in obs.keys()}
                               if isinstance(obs, h5py.Group) else {})
                info["action_dim"] = int(g["actions"].shape[1]) if "actions" in g else None
            info["frames"] = int(sum(f[f"data/{n}"].attrs.get("num_samples", 0) for n in names))
            info["filter_keys"] = sorted(f["mask"].keys()) if "mask" in f else []
    except OSError as e:
        raise DataError(f"{p}: corrupt or not an HDF5 file ({e})") from None
    try:
        info["env_meta"] = read_env_meta(p)
    except DataError:
        info["env_meta"] = None
    return info
