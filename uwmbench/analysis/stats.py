"""Statistics over rollout rows: per-seed success, hierarchical bootstrap confidence intervals
and paired method comparisons.

Conventions (shared with tables.py):
- per-seed success = mean of ``success`` over that training seed's rollouts;
- a cell's point estimate = mean over seeds of the per-seed success, its spread = std over seeds;
- bootstrap = hierarchical: resample seeds with replacement, then rollouts within each drawn
  seed (each draw of a seed gets its own rollout resample); the statistic is the mean of the
  resampled per-seed means. Several tasks are resampled independently (stratified) and the
  statistic is the mean over tasks.
"""
from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

DEFAULT_N_BOOT = 2000
DEFAULT_N_PERM = 2000


def _check_columns(df: pd.DataFrame, cols, where: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise KeyError(f"{where}: rollout rows lack column(s) {missing}; have {list(df.columns)}")


def per_seed_success(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """One row per ``by`` + seed: success (mean over rollouts) and n_rollouts."""
    _check_columns(df, [*by, "seed", "success"], "per_seed_success")
    g = df.assign(success=df["success"].astype(float)).groupby([*by, "seed"], dropna=False, sort=True)
    out = g["success"].agg(success="mean", n_rollouts="size").reset_index()
    return out


def _seed_groups(df: pd.DataFrame) -> list[np.ndarray]:
    """Success arrays (float) per seed, in seed order."""
    return [g["success"].to_numpy(dtype=float) for _, g in df.groupby("seed", sort=True)]


def _boot_one_stratum(groups: list[np.ndarray], n_boot: int, rng: np.random.Generator,
                      chunk: int = 20_000_000) -> np.ndarray:
    """Hierarchical bootstrap replicates (n_boot,) of the mean of per-seed means."""
    s = len(groups)
    if s == 0:
        raise ValueError("bootstrap: no seeds")
    n = np.array([len(g) for g in groups])
    if (n == 0).any():
        raise ValueError("bootstrap: a seed has no rollouts")
    nmax = int(n.max())
    padded = np.zeros((s, nmax))
    for i, g in enumerate(groups):
        padded[i, : len(g)] = g
    out = np.empty(n_boot)
    step = max(1, chunk // max(1, s * nmax))
    for start in range(0, n_boot, step):
        b = min(step, n_boot - start)
        seeds = rng.integers(0, s, size=(b, s))                      # resample seeds
        ns = n[seeds]                                               # (b, s) rollouts of drawn seed
        idx = np.floor(rng.random((b, s, nmax)) * ns[..., None]).astype(np.int64)  # rollouts
        vals = padded[seeds[..., None], idx]                        # (b, s, nmax)
        mask = np.arange(nmax)[None, None, :] < ns[..., None]
        seed_means = (vals * mask).sum(-1) / ns
        out[start:start + b] = seed_means.mean(-1)
    return out


def bootstrap_replicates(df: pd.DataFrame, n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
                         strata: str | list[str] | None = "task") -> np.ndarray:
    """Replicates of the (mean over strata of the) mean of per-seed success rates."""
    _check_columns(df, ["seed", "success"], "bootstrap_replicates")
    rng = np.random.default_rng(seed)
    if strata is None:
        parts = [df]
    else:
        cols = [strata] if isinstance(strata, str) else list(strata)
        cols = [c for c in cols if c in df.columns]
        parts = [g for _, g in df.groupby(cols, sort=True)] if cols else [df]
    reps = [_boot_one_stratum(_seed_groups(p), n_boot, rng) for p in parts]
    return np.mean(reps, axis=0)


@dataclass
class Estimate:
    mean: float
    std: float            # std over seeds (ddof as asked) for one task; across tasks for several
    ci_low: float
    ci_high: float
    n_seeds: int
    n_rollouts: int


def wilson_interval(successes: int, n: int, ci: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (does not collapse at 0/n or n/n)."""

    if n <= 0:
        return float("nan"), float("nan")
    z = NormalDist().inv_cdf(1 - (1 - ci) / 2)
    p = successes / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, float(mid - half)), min(1.0, float(mid + half))


def estimate(df: pd.DataFrame, n_boot: int = DEFAULT_N_BOOT, ci: float = 0.95, seed: int = 0,
             ddof: int = 0) -> Estimate:
    """Point estimate, std over seeds, hierarchical percentile bootstrap CI of a group of rollouts
    (one task, or several tasks: then the mean over task means and the std across tasks). One
    task and one training seed: the Wilson score interval of the rollouts instead (the percentile
    bootstrap of a single binomial collapses to [0, 0] at 0 successes)."""
    if len(df) == 0:
        raise ValueError("estimate: no rollouts")
    tasks = df["task"].unique() if "task" in df.columns else [None]
    if len(tasks) > 1:
        task_means = [per_seed_success(g, [])["success"].mean() for _, g in df.groupby("task")]
        mean, std = float(np.mean(task_means)), float(np.std(task_means, ddof=0))
    else:
        ps = per_seed_success(df, [])["success"].to_numpy()
        mean = float(ps.mean())
        std = float(ps.std(ddof=ddof)) if len(ps) > ddof else float("nan")
    if len(tasks) == 1 and df["seed"].nunique() == 1:
        lo, hi = wilson_interval(int(df["success"].astype(bool).sum()), int(len(df)), ci)
        return Estimate(mean, std, lo, hi, 1, int(len(df)))
    reps = bootstrap_replicates(df, n_boot=n_boot, seed=seed)
    alpha = (1 - ci) / 2
    lo, hi = np.quantile(reps, [alpha, 1 - alpha])
    return Estimate(mean, std, float(lo), float(hi), int(df["seed"].nunique()), int(len(df)))


def summarize(df: pd.DataFrame, by: list[str], n_boot: int = DEFAULT_N_BOOT, ci: float = 0.95,
              seed: int = 0, ddof: int = 0) -> pd.DataFrame:
    """One row per ``by`` group: mean, std (over seeds), ci_low, ci_high, n_seeds, n_rollouts."""
    _check_columns(df, [*by, "seed", "success"], "summarize")
    rows = []
    for key, g in df.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        e = estimate(g, n_boot=n_boot, ci=ci, seed=seed, ddof=ddof)
        rows.append({**dict(zip(by, key)), **e.__dict__})
    cols = [*by, "mean", "std", "ci_low", "ci_high", "n_seeds", "n_rollouts"]
    return pd.DataFrame(rows, columns=cols)


# ----------------------------------------------------------------------------- paired tests

def _paired_arrays(a: pd.DataFrame, b: pd.DataFrame) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
    """Per task: (seed success arrays of a, of b) over the seeds both have."""
    out = []
    tasks = sorted(set(a["task"]) & set(b["task"]))
    for t in tasks:
        at, bt = a[a["task"] == t], b[b["task"] == t]
        seeds = sorted(set(at["seed"]) & set(bt["seed"]))
        if not seeds:
            continue
        out.append(([at.loc[at["seed"] == s, "success"].to_numpy(float) for s in seeds],
                    [bt.loc[bt["seed"] == s, "success"].to_numpy(float) for s in seeds]))
    return out


def _diff_stat(strata) -> float:
    return float(np.mean([np.mean([x.mean() - y.mean() for x, y in zip(xa, ya)]) for xa, ya in strata]))


def paired_difference(a: pd.DataFrame, b: pd.DataFrame, n_boot: int = DEFAULT_N_BOOT,
                      n_perm: int = DEFAULT_N_PERM, ci: float = 0.95, seed: int = 0) -> dict:
    """Difference a - b of success, paired by (task, seed): only seeds present for both in a task.

    diff: mean over tasks of the mean over paired seeds of (success_a - success_b).
    CI: hierarchical bootstrap of the pairs (resample paired seeds, then rollouts of each method
    within the seed). p_value: two-sided stratified permutation test (method labels shuffled
    among the pooled rollouts of each (task, seed) pair), with the +1 correction.
    """
    strata = _paired_arrays(a, b)
    if not strata:
        raise ValueError("paired_difference: no (task, seed) present for both methods")
    obs = _diff_stat(strata)
    rng = np.random.default_rng(seed)

    # bootstrap: per task, resample seed pairs then rollouts within each method
    reps = np.zeros(n_boot)
    for xa, ya in strata:
        s = len(xa)
        seeds = rng.integers(0, s, size=(n_boot, s))
        task_rep = np.zeros(n_boot)
        for arrs, sign in ((xa, 1.0), (ya, -1.0)):
            means = np.empty((n_boot, s))
            for j in range(s):
                for i in range(s):
                    sel = seeds[:, j] == i
                    k = int(sel.sum())
                    if k:
                        x = arrs[i]
                        means[sel, j] = x[rng.integers(0, len(x), size=(k, len(x)))].mean(1)
            task_rep += sign * means.mean(1)
        reps += task_rep
    reps /= len(strata)
    alpha = (1 - ci) / 2
    lo, hi = np.quantile(reps, [alpha, 1 - alpha])

    # permutation: shuffle labels within each (task, seed)
    perm = np.zeros(n_perm)
    for xa, ya in strata:
        seed_diffs = np.zeros(n_perm)
        for x, y in zip(xa, ya):
            pooled = np.concatenate([x, y])
            nx = len(x)
            keys = rng.random((n_perm, len(pooled)))
            order = np.argsort(keys, axis=1)
            shuffled = pooled[order]
            seed_diffs += shuffled[:, :nx].mean(1) - shuffled[:, nx:].mean(1)
        perm += seed_diffs / len(xa)
    perm /= len(strata)
    p = (1 + np.sum(np.abs(perm) >= abs(obs) - 1e-12)) / (n_perm + 1)
    return {
        "diff": obs, "ci_low": float(lo), "ci_high": float(hi), "p_value": float(p),
        "n_pairs": int(sum(len(xa) for xa, _ in strata)),
        "n_rollouts_a": int(sum(len(x) for xa, _ in strata for x in xa)),
        "n_rollouts_b": int(sum(len(y) for _, ya in strata for y in ya)),
    }


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    p = np.asarray(list(pvalues), dtype=float)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p)
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (m - rank) * p[i])
        adj[i] = min(1.0, running)
    return adj


def paired_comparisons(df: pd.DataFrame, reference: str = "uwm", n_boot: int = DEFAULT_N_BOOT,
                       n_perm: int = DEFAULT_N_PERM, ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """``reference`` vs every other method, per condition and task plus "all tasks".

    Columns: condition, baseline, task, diff (reference - baseline), ci_low, ci_high, p_value,
    p_holm (Holm over all rows of a condition), n_pairs (paired seeds), n_rollouts_a/b.
    """
    _check_columns(df, ["method", "task", "seed", "success"], "paired_comparisons")
    cols = ["condition", "baseline", "task", "diff", "ci_low", "ci_high", "p_value", "p_holm",
            "n_pairs", "n_rollouts_a", "n_rollouts_b"]
    if reference not in set(df["method"]):
        return pd.DataFrame(columns=cols)
    conds = sorted(df["condition"].dropna().unique()) if "condition" in df.columns else [None]
    rows = []
    for cond in conds:
        d = df if cond is None else df[df["condition"] == cond]
        ref = d[d["method"] == reference]
        for base in [m for m in order_methods(d["method"].unique()) if m != reference]:
            other = d[d["method"] == base]
            tasks = sorted(set(ref["task"]) & set(other["task"]))
            for t in [*tasks, "all"] if len(tasks) > 1 else tasks:
                ra = ref if t == "all" else ref[ref["task"] == t]
                rb = other if t == "all" else other[other["task"] == t]
                try:
                    r = paired_difference(ra, rb, n_boot=n_boot, n_perm=n_perm, ci=ci, seed=seed)
                except ValueError:
                    continue  # no shared seeds for this task
                rows.append({"condition": cond, "baseline": base, "task": t, **r})
    out = pd.DataFrame(rows, columns=[c for c in cols if c != "p_holm"])
    if len(out):
        out["p_holm"] = np.nan
        for cond, idx in out.groupby("condition", dropna=False).groups.items():
            out.loc[idx, "p_holm"] = holm(out.loc[idx, "p_value"])
    else:
        out["p_holm"] = []
    return out[cols]


METHOD_ORDER = ["uwm", "dp", "pad", "gr1", "bc"]   # the paper's column order; methods added later follow, sorted


def order_methods(methods) -> list[str]:
    """``methods`` (duplicates dropped) in the paper's order, then any others sorted."""
    ms = list(dict.fromkeys(methods))
    known = [m for m in METHOD_ORDER if m in ms]
    return known + sorted(m for m in ms if m not in METHOD_ORDER)

