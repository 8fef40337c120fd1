"""``uwmbench tasks``: list LIBERO tasks, or show one task's ID vs OOD placement ranges and objects."""
from __future__ import annotations

import argparse
from pathlib import Path


def _fmt_ranges(reg) -> str:
    if reg is None:
        return "-"
    parts = []
    for x0, y0, x1, y1 in reg.ranges:
        parts.append(f"x[{x0:+.3f},{x1:+.3f}] y[{y0:+.3f},{y1:+.3f}]")
    return "; ".join(parts)


def show_task(name: str, margin: float) -> None:
    from .ood import bddl_info
    from .tasks import get_task

    sid = get_task(name, "id")
    sood = get_task(name, "ood", ood_margin=margin)
    a = bddl_info(Path(sid.bddl_file).read_text())
    b = bddl_info(Path(sood.bddl_file).read_text())
    print(f"{sid.display_name}: {sid.key}")
    print(f"  language : {sid.language}")
    print(f"  max_steps: {sid.max_steps} (LIBERO default for {sid.suite}; the UWM paper used 1000)")
    print(f"  ID  bddl : {sid.bddl_file}")
    print(f"  OOD bddl : {sood.bddl_file} (margin {margin})")
    print(f"  fixtures : {', '.join(a.fixtures)}")
    print(f"  task objects (obj_of_interest): {', '.join(a.obj_of_interest)}")
    pa, pb = a.placement(), b.placement()
    w = max([len(o) for o in a.objects] + [6])
    print(f"\n  {'object':<{w}}  {'ID placement range':<38}  OOD placement range")
    for o in a.objects:
        ood = _fmt_ranges(pb.get(o)) if o in b.objects else "(removed)"
        print(f"  {o:<{w}}  {_fmt_ranges(pa.get(o)):<38}  {ood}")
    print(f"\n  ID objects : {', '.join(a.objects)}")
    print(f"  OOD objects: {', '.join(b.objects)}")


def main(argv: list[str]) -> int:
    if argv and argv[0] == "coverage":   # uwmbench tasks coverage key=value ...: the expert's success per task
        from .coverage import main as coverage_main
        return coverage_main(argv[1:])
    p = argparse.ArgumentParser(prog="uwmbench tasks", description=__doc__,
                                epilog="uwmbench tasks coverage suite=libero_90 episodes=10: the scripted expert's "
                                       "success rate per task (see `uwmbench tasks coverage --help`)")
    p.add_argument("task", nargs="?", help="show one task (short name, suite/name or suite:index)")
    p.add_argument("--suite", default=None, help="libero_spatial|libero_object|libero_goal|libero_10|libero_90")
    p.add_argument("--ood", action="store_true", help="list the OOD variants (generates their BDDL files)")
    p.add_argument("--margin", type=float, default=0.03, help="OOD placement half-range (m)")
    a = p.parse_args(argv)
    from .tasks import list_tasks

    if a.task:
        try:
            show_task(a.task, a.margin)
        except KeyError as e:
            print(f"uwmbench tasks: {e.args[0]}")
            return 2
        return 0
    try:
        specs = list_tasks(a.suite, condition="ood" if a.ood else "id", **({"ood_margin": a.margin} if a.ood else {}))
    except KeyError as e:
        print(f"uwmbench tasks: {e.args[0]}")
        return 2
    cur = None
    for s in specs:
        if s.suite != cur:
            cur = s.suite
            idx = 0
            print(f"{cur} (max_steps {s.max_steps}):")
        tag = f"{s.short:<12}" if s.short else " " * 12
        extra = f"  -> {s.bddl_file}" if a.ood else ""
        print(f"  {cur}:{idx:<3} {tag} {s.task_name}{extra}")
        idx += 1
    return 0
