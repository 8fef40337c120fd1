"""OOD variant of a LIBERO task: wider object placement ranges, distractors removed.

Exact rule (``make_ood_bddl``), applied to the task's BDDL text:

1. **Distractors removed.** Every entry of ``(:objects ...)`` that is not listed in
   ``(:obj_of_interest ...)`` is deleted, together with every ``(:init ...)`` predicate that
   mentions it and every region whose ``:target`` is a deleted object or that is referenced only by
   deleted objects' init predicates. Fixtures (``(:fixtures ...)``: tables, cabinets, wine racks,
   stoves, caddies...) are never removed.
2. **Placement ranges widened.** For every region that places a *movable object* on a fixture
   (an ``(On <kept object> <fixture>_<region>)`` init predicate), each rectangle
   ``(x_min y_min x_max y_max)`` keeps its center ``c`` and gets half-extent
   ``max(h, margin)`` per axis (``h`` = its original half-extent): ranges narrower than
   ``+-margin`` become exactly ``+-margin`` (default 0.03 m, the UWM paper's OOD setting), wider
   ones are unchanged. Yaw ranges are unchanged. Fixture placement regions are NOT widened:
   LIBERO places fixtures by editing the model's body positions, which the flattened sim state
   (the init states) does not carry, so a widened fixture range could not be reproduced from
   saved init states.

Because objects are removed the sim state size changes and LIBERO's shipped init states no
longer apply: :func:`generate_init_states` resets the OOD env with a seeded placement per episode
(``np.random.seed(sha(seed, i))`` before ``reset()``, LIBERO's samplers use the global numpy RNG)
and stores the flattened sim states. Files live under
``$UWMBENCH_CACHE`` (default ``~/.cache/uwmbench``)``/ood/<suite>/<task>/<hash>/`` as
``task.bddl`` and ``init_states_seed<k>.npy``; the hash covers the original BDDL text, the margin
and :data:`OOD_VERSION`. Writes are atomic; existing files are reused (and extended when more
states are requested).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from uwmbench.fileio import atomic_write_bytes, atomic_write_text

OOD_VERSION = 1
DEFAULT_MARGIN = 0.03

# ---------------------------------------------------------------------------------- s-expressions

Sexp = Any  # str | list[Sexp]


def parse_sexp(text: str) -> list[Sexp]:
    text = re.sub(r";[^\n]*", "", text)
    tokens = re.findall(r"\(|\)|[^\s()]+", text)
    stack: list[list] = [[]]
    for tok in tokens:
        if tok == "(":
            stack.append([])
        elif tok == ")":
            if len(stack) == 1:
                raise ValueError("unbalanced ')' in BDDL")
            done = stack.pop()
            stack[-1].append(done)
        else:
            stack[-1].append(tok)
    if len(stack) != 1:
        raise ValueError("unbalanced '(' in BDDL")
    return stack[0]


def _fmt_num(tok: str) -> str:
    return tok


def dump_sexp(node: Sexp, indent: int = 0) -> str:
    pad = "  " * indent
    if isinstance(node, str):
        return pad + node
    if all(isinstance(c, str) for c in node):
        return pad + "(" + " ".join(node) + ")"
    head = [c for c in node[:1] if isinstance(c, str)]
    rest = node[len(head):]
    lines = [pad + "(" + " ".join(head)]
    lines += [dump_sexp(c, indent + 1) for c in rest]
    lines.append(pad + ")")
    return "\n".join(lines)


def _section(problem: list, key: str) -> list | None:
    for c in problem:
        if isinstance(c, list) and c and c[0] == key:
            return c
    return None


def _typed_names(section: list | None) -> dict[str, str]:
    """('a', 'b', '-', 'type', 'c', '-', 't2') -> {a: type, b: type, c: t2}"""
    out: dict[str, str] = {}
    if section is None:
        return out
    pending: list[str] = []
    toks = section[1:]
    i = 0
    while i < len(toks):
        t = toks[i]
        if t == "-":
            for p in pending:
                out[p] = toks[i + 1]
            pending = []
            i += 2
            continue
        pending.append(t)
        i += 1
    return out


def _typed_section(key: str, names: dict[str, str]) -> list:
    by_type: dict[str, list[str]] = {}
    for n, t in names.items():
        by_type.setdefault(t, []).append(n)
    out: list = [key]
    for t, ns in by_type.items():
        out += ns + ["-", t]
    return out


def _flat(node: Sexp) -> list[str]:
    if isinstance(node, str):
        return [node]
    return [x for c in node for x in _flat(c)]


# ---------------------------------------------------------------------------------- BDDL summary


@dataclass
class Region:
    name: str
    target: str
    ranges: list[tuple[float, float, float, float]] = field(default_factory=list)
    yaw: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class BddlInfo:
    problem_name: str
    language: str
    fixtures: dict[str, str]
    objects: dict[str, str]
    obj_of_interest: list[str]
    regions: dict[str, Region]
    init: list[list[str]]
    goal: Sexp

    def placement(self) -> dict[str, Region]:
        """movable object -> the table region it is sampled in (from its (On obj <fixture>_<region>))."""
        out = {}
        for pred in self.init:
            if len(pred) == 3 and pred[0].lower() == "on" and pred[1] in self.objects:
                for r in self.regions.values():
                    if r.ranges and pred[2] == f"{r.target}_{r.name}":
                        out[pred[1]] = r
        return out


def _problem(tree: list) -> list:
    for c in tree:
        if isinstance(c, list) and c and c[0] == "define":
            return c
    raise ValueError("BDDL: no (define ...) form")


def bddl_info(text: str) -> BddlInfo:
    problem = _problem(parse_sexp(text))
    name = next(c[1] for c in problem if isinstance(c, list) and c and c[0] == "problem")
    lang = _section(problem, ":language")
    regions: dict[str, Region] = {}
    for r in (_section(problem, ":regions") or [])[1:]:
        reg = Region(name=r[0], target="")
        for part in r[1:]:
            if part[0] == ":target":
                reg.target = part[1]
            elif part[0] == ":ranges":
                reg.ranges = [tuple(float(v) for v in rect) for rect in part[1]]
            elif part[0] == ":yaw_rotation":
                reg.yaw = [tuple(float(v) for v in rng) for rng in part[1]]
        regions[reg.name] = reg
    init = [c for c in (_section(problem, ":init") or [])[1:]]
    goal = (_section(problem, ":goal") or [None, None])[1]
    return BddlInfo(problem_name=name, language=" ".join(lang[1:]) if lang else "",
                    fixtures=_typed_names(_section(problem, ":fixtures")),
                    objects=_typed_names(_section(problem, ":objects")),
                    obj_of_interest=list((_section(problem, ":obj_of_interest") or [None])[1:]),
                    regions=regions, init=[list(map(str, _flat(p))) for p in init], goal=goal)


# ---------------------------------------------------------------------------------- transformation


def _num(x: float) -> str:
    return repr(float(round(x, 10)))


def make_ood_bddl(text: str, margin: float = DEFAULT_MARGIN) -> str:
    """The OOD BDDL text (rule in the module docstring)."""
    if not margin > 0:
        raise ValueError(f"OOD margin must be > 0, got {margin}")
    tree = parse_sexp(text)
    problem = _problem(tree)
    info = bddl_info(text)
    keep_interest = set(info.obj_of_interest)
    removed = {o for o in info.objects if o not in keep_interest}

    # objects
    objs = _section(problem, ":objects")
    if objs is not None:
        kept = {n: t for n, t in info.objects.items() if n not in removed}
        objs[:] = _typed_section(":objects", kept)
    # init predicates mentioning removed objects
    init = _section(problem, ":init")
    used_refs: set[str] = set()
    if init is not None:
        new = [init[0]]
        for p in init[1:]:
            if set(_flat(p)) & removed:
                continue
            new.append(p)
            used_refs.update(_flat(p))
        init[:] = new
    goal = _section(problem, ":goal")
    if goal is not None:
        used_refs.update(_flat(goal))
    removed_refs = {p[2] for p in info.init if len(p) >= 3 and p[1] in removed}
    # regions
    regs = _section(problem, ":regions")
    placement_refs = {p[2] for p in info.init if len(p) == 3 and p[0].lower() == "on" and p[1] in info.objects
                      and p[1] not in removed}
    if regs is not None:
        new_regs = [regs[0]]
        for r in regs[1:]:
            reg = info.regions[r[0]]
            ref = f"{reg.target}_{reg.name}"
            if reg.target in removed:
                continue
            if ref in removed_refs and ref not in used_refs:
                continue
            if ref in placement_refs:
                for part in r[1:]:
                    if part[0] == ":ranges":
                        part[1] = [_widen(rect, margin) for rect in part[1]]
            new_regs.append(r)
        regs[:] = new_regs
    header = f"; uwmbench OOD variant (v{OOD_VERSION}): placement ranges widened to >= +-{margin} m, " \
             f"distractors removed: {sorted(removed) or 'none'}\n"
    return header + "\n".join(dump_sexp(c) for c in tree) + "\n"


def _widen(rect: list[str], margin: float) -> list[str]:
    x0, y0, x1, y1 = (float(v) for v in rect)
    out = []
    for lo, hi in ((x0, x1), (y0, y1)):
        c, h = (lo + hi) / 2, (hi - lo) / 2
        h = max(h, margin)
        out.append((c - h, c + h))
    (a, b), (c_, d) = out
    return [_num(a), _num(c_), _num(b), _num(d)]


# ---------------------------------------------------------------------------------- cache files


def cache_root() -> Path:
    return Path(os.environ.get("UWMBENCH_CACHE", Path.home() / ".cache" / "uwmbench"))


def write_ood_bddl(spec, margin: float = DEFAULT_MARGIN) -> Path:
    """Generate (or reuse) the OOD BDDL of an ID TaskSpec; returns its path."""
    src = Path(spec.bddl_file).read_text()
    h = hashlib.sha1(f"{OOD_VERSION}|{margin!r}|{src}".encode()).hexdigest()[:12]
    path = cache_root() / "ood" / spec.suite / spec.task_name / h / "task.bddl"
    if not path.is_file():
        atomic_write_bytes(path, make_ood_bddl(src, margin).encode())
    return path


def ood_init_states_path(bddl_path: Path | str, seed: int) -> Path:
    return Path(bddl_path).parent / f"init_states_seed{int(seed)}.npy"


def episode_seed(seed: int, i: int) -> int:
    return int.from_bytes(hashlib.sha256(f"uwmbench-ood|{seed}|{i}".encode()).digest()[:4], "little")


def make_sim_env(bddl_file: str, render: bool = False, camera_size: int = 128, camera_obs: bool | None = None,
                 **kwargs):
    """A LIBERO ControlEnv; no offscreen renderer unless ``render``. ``camera_obs`` (default =
    render) controls whether step() renders the cameras; render=True, camera_obs=False plans
    fast and can still render on demand with ``env.sim.render`` (used for replay)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    from libero.libero.envs.env_wrapper import ControlEnv

    camera_obs = render if camera_obs is None else camera_obs
    return ControlEnv(bddl_file_name=str(bddl_file), has_renderer=False, has_offscreen_renderer=render,
                      use_camera_obs=camera_obs, camera_heights=camera_size, camera_widths=camera_size, **kwargs)


def seeded_reset(env, seed: int) -> None:
    from robosuite.utils.errors import RandomizationError

    rng_state = np.random.get_state()
    np.random.seed(seed)
    try:
        for _ in range(100):
            try:
                env.env.reset()
                return
            except RandomizationError:
                continue
        raise RuntimeError(f"OOD reset: placement failed 100 times (seed {seed})")
    finally:
        np.random.set_state(rng_state)


def ood_init_fixtures_path(states_path: Path | str) -> Path:
    p = Path(states_path)
    return p.with_name(p.stem.replace("init_states", "init_fixtures") + ".json")


def load_init_fixtures(spec) -> list[dict] | None:
    """Fixture poses ({name: (pos, quat)}) stored beside generated OOD init states, one per
    init state; None when the task has no such file (shipped ID init states)."""
    if not spec.init_states_file:
        return None
    path = ood_init_fixtures_path(spec.init_states_file)
    if not path.is_file():
        return None
    rows = json.loads(path.read_text())
    return [{k: (np.asarray(v[0], np.float64), np.asarray(v[1], np.float64)) for k, v in r.items()} for r in rows]


def generate_init_states(spec, n: int = 50, env=None, progress: bool = True) -> np.ndarray:
    """(n, D) init states of an OOD TaskSpec (cached, extended when more are asked for). The
    fixture poses of each placement are stored beside them (``init_fixtures_seed<k>.json``): a
    generated init state is only reproducible together with them (see ``scene.py``)."""
    from .scene import capture_scene

    if spec.condition != "ood":
        raise ValueError(f"generate_init_states needs an OOD TaskSpec, got condition={spec.condition!r}")
    path = Path(spec.init_states_file)
    fpath = ood_init_fixtures_path(path)
    have = np.load(path) if path.is_file() and fpath.is_file() else None
    fixtures = json.loads(fpath.read_text()) if have is not None else []
    if have is not None and len(fixtures) != len(have):
        have, fixtures = None, []
    if have is not None and len(have) >= n:
        return have[:n]
    own = env is None
    env = env or make_sim_env(spec.bddl_file)
    try:
        rows = [] if have is None else list(have)
        it = range(len(rows), n)
        if progress:
            from tqdm import tqdm
            it = tqdm(it, desc=f"OOD init states {spec.short or spec.task_name}", leave=False)
        for i in it:
            seeded_reset(env, episode_seed(spec.ood_seed or 0, i))
            sc = capture_scene(env.env)
            rows.append(sc.state.copy())
            fixtures.append({k: [p.tolist(), q.tolist()] for k, (p, q) in sc.fixtures.items()})
    finally:
        if own:
            env.close()
    states = np.stack(rows).astype(np.float64)
    import io
    buf = io.BytesIO()
    np.save(buf, states)
    atomic_write_text(fpath, json.dumps(fixtures))
    atomic_write_bytes(path, buf.getvalue())
    return states
