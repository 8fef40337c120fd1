"""Figures (seaborn), saved as PNG and PDF. Importing this module leaves matplotlib's backend
alone (figures show inline in a notebook); ``uwmbench report`` selects Agg for itself.

Every figure has a title and every axes a title and axis labels; ``check_labelled`` enforces
it before anything is written. Bars are mean success over seeds; error bars are the 95%
hierarchical bootstrap CI (seeds, then rollouts); dots are the per-seed success rates.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from . import stats
from .tables import arm_label, display_condition, display_task, normalize_rollouts, order_tasks, paper_order, _arms

sns.set_theme(style="whitegrid", context="notebook")


# ---------------------------------------------------------------------------- saving

def check_labelled(fig: plt.Figure) -> None:
    """Raise ValueError unless the figure has a title and every axes has a title and x/y labels
    (image axes: a title; the grid's rows are named by the first column's y label)."""
    problems = []
    if fig._suptitle is None or not fig._suptitle.get_text().strip():
        problems.append("figure has no title (suptitle)")
    for i, ax in enumerate(fig.axes):
        if not ax.get_visible():
            continue
        need = {"title": ax.get_title()}
        if not ax.images:
            need.update(xlabel=ax.get_xlabel(), ylabel=ax.get_ylabel())
        for k, v in need.items():
            if not str(v).strip():
                problems.append(f"axes {i} has no {k}")
    if problems:
        raise ValueError("figure not labelled: " + "; ".join(problems))


def save_figure(fig: plt.Figure, stem: str | Path, formats=("png", "pdf"), dpi: int = 150) -> list[Path]:
    """Check labels, then write ``stem.png`` and ``stem.pdf`` atomically; closes the figure."""
    check_labelled(fig)
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    try:
        for fmt in formats:
            path = stem.with_name(f"{stem.name}.{fmt}")
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.close(fd)
            try:
                fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            out.append(path)
    finally:
        plt.close(fig)
    return out


# ---------------------------------------------------------------------------- bar charts

def _grouped_bars(ax, cats: list[str], groups: list[str], cells: dict, points: dict,
                  palette, cat_labels: list[str] | None = None) -> None:
    """Bars at (category, group) with CI error bars and per-seed dots."""
    k = len(groups)
    width = 0.8 / max(k, 1)
    for gi, g in enumerate(groups):
        xs, ys, lo, hi = [], [], [], []
        for ci, c in enumerate(cats):
            if (c, g) not in cells:
                continue
            m, l, h = cells[(c, g)]
            xs.append(ci - 0.4 + width * (gi + 0.5))
            ys.append(m)
            lo.append(max(0.0, m - l))
            hi.append(max(0.0, h - m))
        if not xs:
            continue
        ax.bar(xs, ys, width=width * 0.92, color=palette[gi], label=g, edgecolor="white", linewidth=0.5)
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="none", ecolor="0.15", elinewidth=1.2, capsize=3)
        for x, c in zip(xs, [c for c in cats if (c, g) in cells]):
            pts = points.get((c, g))
            if pts is not None and len(pts):
                jitter = np.linspace(-width * 0.2, width * 0.2, len(pts)) if len(pts) > 1 else [0.0]
                ax.scatter(np.asarray(x) + jitter, pts, s=12, color="0.1", alpha=0.7, zorder=3, linewidths=0)
    ax.set_xticks(range(len(cats)))
    ax.set_xticklabels(cat_labels or cats, rotation=0 if len(cats) <= 6 else 30,
                       ha="center" if len(cats) <= 6 else "right")
    ax.set_ylim(0, 1.05)
    ax.set_xlim(-0.6, len(cats) - 0.4)


def _n_label(sub: pd.DataFrame) -> str:
    ns = sub[["n_seeds", "n_rollouts"]].drop_duplicates()
    if len(ns) == 1:
        return f"n={int(ns['n_seeds'].iloc[0])}/{int(ns['n_rollouts'].iloc[0])}"
    return f"n={int(sub['n_seeds'].min())}-{int(sub['n_seeds'].max())} seeds/" \
           f"{int(sub['n_rollouts'].min())}-{int(sub['n_rollouts'].max())}"


def _seed_points(rollouts: pd.DataFrame | None, keys: dict) -> np.ndarray | None:
    if rollouts is None:
        return None
    r = rollouts
    for k, v in keys.items():
        if v == "average":
            continue
        r = r[r[k] == v]
    if len(r) == 0:
        return None
    if keys.get("task") == "average":  # per seed: mean over tasks of the seed's task success
        ps = stats.per_seed_success(r, ["task"])
        return ps.groupby("seed")["success"].mean().to_numpy()
    return stats.per_seed_success(r, [])["success"].to_numpy()


def success_by_task(summary: pd.DataFrame, rollouts: pd.DataFrame | None = None,
                    sweep: str = "main", conditions: list[str] | None = None,
                    title: str | None = None) -> plt.Figure:
    """Per-task success (+ Average) of every arm of a sweep, one panel per condition."""
    sub = summary[summary["sweep"] == sweep]
    if len(sub) == 0:
        raise ValueError(f"success_by_task: no summary rows for sweep {sweep!r}")
    rol = normalize_rollouts(rollouts) if rollouts is not None else None
    conds = conditions or sorted(sub["condition"].unique())
    arms = _arms(sub, paper_order(sweep, sub["variant"].unique()))
    show_method = sub["method"].nunique() > 1
    labels = [arm_label(m, v, show_method) for m, v in arms]
    palette = sns.color_palette("colorblind" if len(arms) <= 10 else "husl", len(arms))
    tasks = order_tasks(t for t in sub["task"].unique() if t != "average")
    cats = [*tasks, "average"] if len(tasks) > 1 else tasks
    width = min(16.0, max(7.0, 0.32 * len(cats) * max(2, len(arms)) + 3.0))
    fig, axes = plt.subplots(len(conds), 1, figsize=(width, 3.6 * len(conds) + 0.6), squeeze=False, sharey=True)
    for ax, cond in zip(axes[:, 0], conds):
        sc = sub[sub["condition"] == cond]
        cells, points, legend = {}, {}, []
        for (m, v), lab in zip(arms, labels):
            sa = sc[(sc["method"] == m) & (sc["variant"] == v)]
            if len(sa) == 0:
                continue
            name = f"{lab} ({_n_label(sa[sa['task'] != 'average'] if len(cats) > 1 else sa)})"
            legend.append(name)
            for _, r in sa.iterrows():
                cells[(r["task"], name)] = (r["mean"], r["ci_low"], r["ci_high"])
                points[(r["task"], name)] = _seed_points(
                    rol, {"sweep": sweep, "condition": cond, "method": m, "variant": v, "task": r["task"]})
        pal = [palette[labels.index(n.rsplit(" (n=", 1)[0])] for n in legend]
        _grouped_bars(ax, cats, legend, cells, points, pal, [display_task(t) for t in cats])
        ax.set_title(f"{display_condition(cond)}")
        ax.set_xlabel("task")
        ax.set_ylabel("success rate")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
                  title="arm (n = seeds/rollouts\nper task)", title_fontsize=8)
    fig.suptitle(title or f"Success per task ({sweep} sweep)\nbars = mean over seeds, "
                          "whiskers = 95% bootstrap CI, dots = seeds", fontsize=11)
    fig.tight_layout()
    return fig


def id_vs_ood(summary: pd.DataFrame, rollouts: pd.DataFrame | None = None, sweep: str = "main") -> plt.Figure:
    """ID vs OOD success of each arm, per task and on average (one panel per task)."""
    sub = summary[(summary["sweep"] == sweep) & summary["condition"].isin(["id", "ood"])]
    if sub["condition"].nunique() < 2:
        raise ValueError(f"id_vs_ood: sweep {sweep!r} lacks rows for both 'id' and 'ood'")
    rol = normalize_rollouts(rollouts) if rollouts is not None else None
    arms = _arms(sub)
    labels = [arm_label(m, v) for m, v in arms]
    tasks = order_tasks(t for t in sub["task"].unique() if t != "average")
    panels = [*tasks, "average"] if len(tasks) > 1 else tasks
    palette = sns.color_palette("Set2", 2)
    ncol = min(3, len(panels))
    nrow = int(np.ceil(len(panels) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(max(4.0, 0.9 * len(arms) + 1.5) * ncol, 3.6 * nrow),
                             squeeze=False, sharey=True)
    for ax, t in zip(axes.flat, panels):
        cells, points = {}, {}
        for (m, v), lab in zip(arms, labels):
            for c in ("id", "ood"):
                r = sub[(sub["method"] == m) & (sub["variant"] == v) & (sub["task"] == t) & (sub["condition"] == c)]
                if len(r):
                    r = r.iloc[0]
                    cells[(lab, display_condition(c))] = (r["mean"], r["ci_low"], r["ci_high"])
                    points[(lab, display_condition(c))] = _seed_points(
                        rol, {"sweep": sweep, "condition": c, "method": m, "variant": v, "task": t})
        _grouped_bars(ax, labels, ["ID", "OOD"], cells, points, palette)
        ax.set_title(display_task(t))
        ax.set_xlabel("method")
        ax.set_ylabel("success rate")
        if ax is axes.flat[0]:
            ax.legend(fontsize=8, title="condition", title_fontsize=8, loc="lower left", framealpha=0.9)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"In-distribution vs OOD success ({sweep} sweep; whiskers = 95% bootstrap CI, dots = seeds)",
                 fontsize=11)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------- learning diagnostics

# (panel title, [(column, style)], y label): a solid line per run for the model's number, dashed for
# the same run's reference (EMA weights; the copy-last-frame baseline)
DIAGNOSTIC_PANELS = (
    ("Held-out open-loop action error (policy)", [("val/open_loop_rel_err_pos", "-"), ("val/open_loop_rel_err_pos_ema", "--")],
     "|error| / |action|, position dims (1 = no motion)"),
    ("Inverse dynamics action error", [("val/inverse_rel_err_pos", "-")], "|error| / |action|, position dims"),
    ("Forward dynamics vs copy-last-frame (latent MSE)", [("val/next_obs_latent_mse", "-"), ("val/copy_last_latent_mse", "--")],
     "latent MSE (lower is better)"),
    ("Forward dynamics vs copy-last-frame (decoded PSNR)", [("val/forward_psnr", "-"), ("val/copy_last_psnr", "--")],
     "PSNR dB (higher is better)"),
)


def has_learning_diagnostics(curves: dict[str, pd.DataFrame]) -> bool:
    cols = {c for _, spec, _ in DIAGNOSTIC_PANELS for c, _ in spec}
    return any(c in df.columns and pd.to_numeric(df[c], errors="coerce").notna().any()
               for df in curves.values() for c in cols)


def learning_diagnostics(curves: dict[str, pd.DataFrame], title: str = "Learning diagnostics") -> plt.Figure:
    """The numbers that say whether (and how fast) a run learns, against training step, one colour
    per run: the held-out open-loop action error of the policy (solid: raw weights, dashed: EMA),
    the inverse-dynamics action error, and forward dynamics against the copy-last-frame baseline
    (solid: the model, dashed: the baseline on the same windows) as latent MSE and decoded PSNR.
    Panels without data for any run are left out."""
    panels = [(t, spec, yl) for t, spec, yl in DIAGNOSTIC_PANELS
              if any(c in df.columns and pd.to_numeric(df[c], errors="coerce").notna().any()
                     for df in curves.values() for c, _ in spec)]
    if not panels:
        raise ValueError("learning_diagnostics: no run has val/open_loop_*, val/inverse_* or forward-dynamics columns")
    runs = sorted(curves)
    palette = dict(zip(runs, sns.color_palette(n_colors=len(runs))))
    ncol = min(2, len(panels))
    nrow = int(np.ceil(len(panels) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(6.2 * ncol, 3.8 * nrow), squeeze=False)
    for ax, (t, spec, yl) in zip(axes.flat, panels):
        for run in runs:
            df = curves[run]
            for c, style in spec:
                if c not in df.columns:
                    continue
                v = pd.to_numeric(df[c], errors="coerce")
                d = pd.DataFrame({"step": df["step"], "v": v}).dropna()
                if len(d):
                    what = {"-": "", "--": " (EMA)" if c.endswith("_ema") else " (copy-last baseline)"}[style]
                    ax.plot(d["step"], d["v"], style, color=palette[run], marker="o", markersize=3, linewidth=1.4,
                            label=f"{run}{what}")
        ax.set_title(t, fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylabel(yl, fontsize=8)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------- training curves

def load_metrics_csv(path: str | Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    if "step" not in df.columns:
        raise KeyError(f"{path}: metrics CSV lacks column 'step'; have {list(df.columns)}")
    return df


def training_curves(curves: dict[str, pd.DataFrame], title: str = "Training curves") -> plt.Figure:
    """One panel per metric (train ``loss`` and every ``val/*`` column), one line per run label.

    ``curves``: label -> metrics DataFrame with a ``step`` column.
    """
    if not curves:
        raise ValueError("training_curves: no metrics given")
    metrics: list[str] = []
    for lab, df in curves.items():
        if "step" not in df.columns:
            raise KeyError(f"training_curves: metrics of {lab!r} lack column 'step'; have {list(df.columns)}")
        for c in df.columns:
            if (c == "loss" or c.startswith("val/")) and c not in metrics and pd.to_numeric(df[c], errors="coerce").notna().any():
                metrics.append(c)
    if not metrics:
        raise ValueError("training_curves: no 'loss' or 'val/*' column with numbers")
    metrics.sort(key=lambda c: (c != "loss", c))
    long = []
    for lab, df in curves.items():
        for c in metrics:
            if c in df.columns:
                v = pd.to_numeric(df[c], errors="coerce")
                d = pd.DataFrame({"step": df["step"], "value": v, "metric": c, "run": lab}).dropna()
                long.append(d)
    long = pd.concat(long, ignore_index=True)
    ncol = min(3, len(metrics))
    nrow = int(np.ceil(len(metrics) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.4 * nrow), squeeze=False)
    runs = sorted(long["run"].unique())
    palette = dict(zip(runs, sns.color_palette(n_colors=len(runs))))  # one colour per run in every panel
    for ax, c in zip(axes.flat, metrics):
        d = long[long["metric"] == c]
        sns.lineplot(data=d, x="step", y="value", hue="run", hue_order=runs, palette=palette, ax=ax, marker="o" if d.groupby("run").size().max() < 30 else None,
                     markersize=4, linewidth=1.4, legend=ax is axes.flat[0])
        if (d["value"] > 0).all() and d["value"].max() / max(d["value"].min(), 1e-12) > 30:
            ax.set_yscale("log")
        ax.set_title("train loss" if c == "loss" else c.removeprefix("val/").replace("_", " "))
        ax.set_xlabel("training step")
        ax.set_ylabel(c)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    if axes.flat[0].get_legend() is not None:
        axes.flat[0].legend(fontsize=7, title="run", title_fontsize=7)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------- video prediction

def _to_uint8(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"prediction_grid: {name} must have shape (N, H, W, 3); got {x.shape}")
    if x.dtype != np.uint8:
        x = np.asarray(x, dtype=float)
        if x.max() <= 1.0 + 1e-6:
            x = x * 255.0
        x = np.clip(np.round(x), 0, 255).astype(np.uint8)
    return x


def prediction_grid(pred: np.ndarray, true: np.ndarray, title: str = "Forward dynamics: predicted vs true next frames",
                    max_items: int = 6, labels: list[str] | None = None) -> plt.Figure:
    """Rows = samples; columns = true next frame, predicted next frame, |error| (mean over RGB)."""
    pred, true = _to_uint8(pred, "pred"), _to_uint8(true, "true")
    if pred.shape != true.shape:
        raise ValueError(f"prediction_grid: pred {pred.shape} and true {true.shape} differ in shape")
    n = min(len(pred), max_items)
    if n == 0:
        raise ValueError("prediction_grid: no frames")
    h, w = pred.shape[1:3]
    size = 2.3
    fig, axes = plt.subplots(n, 3, figsize=(3 * size * w / max(h, w) + 0.6, n * size * h / max(h, w) + 0.8), squeeze=False)
    for i in range(n):
        err = np.abs(pred[i].astype(float) - true[i].astype(float)).mean(-1) / 255.0
        mse = float(((pred[i].astype(float) - true[i].astype(float)) / 255.0).__pow__(2).mean())
        row_name = labels[i] if labels and i < len(labels) else f"sample {i}"
        for j, (img, name) in enumerate(((true[i], "true o'"), (pred[i], "predicted o'"),
                                         (err, f"|error|, mse {mse:.4f}"))):
            ax = axes[i, j]
            if img.ndim == 2:
                ax.imshow(img, cmap="magma", vmin=0, vmax=max(0.25, float(img.max())))
            else:
                ax.imshow(img)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            ax.set_title(name, fontsize=8)
            if j == 0:
                ax.set_ylabel(row_name, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def load_prediction_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as z:
        missing = [k for k in ("pred", "true") if k not in z.files]
        if missing:
            raise KeyError(f"{path}: npz lacks key(s) {missing}; has {z.files}")
        return z["pred"], z["true"]
