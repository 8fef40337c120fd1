"""Spawned simulator workers fed from a job queue (``uwmbench collect``, ``uwmbench tasks coverage``)."""
from __future__ import annotations

import multiprocessing as mp
import queue
from typing import Any, Callable, Iterator


def worker_results(target: Callable, cfg: dict, jobs: list, workers: int, n_results: int,
                   what: str) -> Iterator[Any]:
    """Start ``min(workers, len(jobs))`` spawned processes running ``target(cfg, jobs, results)``
    (each takes jobs until it gets ``None``), and yield ``n_results`` results as they come. A
    worker that dies leaves the others running; when all have exited before ``n_results``, a
    RuntimeError naming ``what`` is raised. The workers are joined (or terminated) when the
    caller is done, also on an error or a break."""
    ctx = mp.get_context("spawn")
    jq, rq = ctx.Queue(), ctx.Queue()
    for job in jobs:
        jq.put(job)
    nw = max(1, min(workers, len(jobs)))
    for _ in range(nw):
        jq.put(None)
    procs = [ctx.Process(target=target, args=(cfg, jq, rq), daemon=True) for _ in range(nw)]
    for p in procs:
        p.start()
    try:
        got = 0
        while got < n_results:
            try:
                r = rq.get(timeout=30)
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    raise RuntimeError(f"{what}: all workers exited early (see their errors above)") from None
                continue
            got += 1
            yield r
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
