"""``uwmbench report <results> [--out DIR]``: every table and figure in one folder, with an index
page in Markdown (index.md) and static HTML (index.html).

<results> is a results-store root (``uwmbench.store.ResultsStore``, when that module
exists), or a folder / file of result rows: every ``*.jsonl`` / ``*.csv`` under the folder is
read and classified by its columns (rollout rows: method, task, seed, success; run rows:
run_id, status; training metrics: step + loss or val/* columns); every ``*.npz`` with keys
``pred`` and ``true`` (frames (N, H, W, 3)) becomes a video-prediction grid.
Tables or figures without data are skipped with a line saying why.
"""
from __future__ import annotations

import argparse
import html
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from uwmbench.fileio import markdown_table
from uwmbench.rows import ROLLOUT_IDENTITY, ROLLOUT_KEY, latest_frame, read_jsonl
from uwmbench.run_dir import RunDir
from . import figures as F, stats
from .tables import (CHECK_SWEEPS, REQUIRED_ROLLOUT_COLUMNS, TOY_SIZES, Table, arm_label, atomic_write_text, build_tables, display_condition,
                     normalize_rollouts, order_methods, summarize_arms)

log = logging.getLogger("uwmbench.analysis.report")


@dataclass
class Results:
    rollouts: pd.DataFrame
    runs: pd.DataFrame
    metrics: dict[str, pd.DataFrame] = field(default_factory=dict)
    predictions: dict[str, Path] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)   # what was read / ignored, for the index


def _read_jsonl(path: Path, notes: list[str]) -> pd.DataFrame:
    skipped: list[str] = []
    rows = read_jsonl(path, skipped)
    if skipped:
        notes.append(f"{path}: {len(skipped)} line(s) that are not JSON skipped (a file being written?)")
    return pd.DataFrame(rows)


def _read_table(path: Path, notes: list[str]) -> pd.DataFrame:
    if path.suffix == ".jsonl":
        return _read_jsonl(path, notes)
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def _classify(df: pd.DataFrame) -> str | None:
    cols = set(df.columns)
    if set(REQUIRED_ROLLOUT_COLUMNS) <= cols:
        return "rollouts"
    if "step" in cols and ("loss" in cols or any(str(c).startswith("val/") for c in cols)):
        return "metrics"
    if {"run_id", "status"} <= cols:
        return "runs"
    return None


def _metrics_label(path: Path, root: Path, depth: int = 2) -> str:
    rel = path.relative_to(root) if root in path.parents else Path(path.name)
    parts = list(rel.parts[:-1])
    stem = path.stem
    if stem not in ("metrics", "train_metrics", "log"):
        parts.append(stem)
    return "/".join(parts[-depth:]) or stem


def _from_store(root: Path, notes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    try:
        from uwmbench.store import ResultsStore  # another module of this package
    except ImportError:
        return None
    try:
        st = ResultsStore(root)
        rol, runs = st.rollouts(), st.runs()
    except Exception as e:  # not a store root, or a store error: fall back to reading files
        log.info("%s: not read as a results store (%s: %s); reading result files", root, type(e).__name__, e)
        return None
    if rol is None or len(rol) == 0:
        return None
    notes.append(f"results store {root}: {len(rol)} rollout rows, {0 if runs is None else len(runs)} run rows")
    return rol, (runs if runs is not None else pd.DataFrame())


def load_results(path: str | Path, exclude: Path | None = None) -> Results:
    """Read rollouts, runs, training metrics and prediction arrays from a store root, folder or file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"results path {path} does not exist")
    notes: list[str] = []
    rollouts, runs, metrics, preds = [], [], {}, {}
    store = _from_store(path, notes) if path.is_dir() else None
    if store is not None:
        rollouts.append(store[0])
        if len(store[1]):
            runs.append(store[1])
    root = path if path.is_dir() else path.parent
    files = [path] if path.is_file() else sorted(
        p for ext in ("*.jsonl", "*.csv", "*.npz") for p in path.rglob(ext)
        if not any(part.startswith(".") for part in p.relative_to(path).parts)
        and not (exclude is not None and (exclude == p.resolve() or exclude in p.resolve().parents)))
    for f in files:
        if f.suffix == ".npz":
            try:
                with np.load(f) as z:
                    ok = {"pred", "true"} <= set(z.files)
            except Exception as e:  # not a readable npz
                notes.append(f"{f}: ignored (unreadable npz: {e})")
                continue
            if ok:
                preds[_metrics_label(f, root)] = f
            else:
                notes.append(f"{f}: ignored (npz without keys pred and true)")
            continue
        df = _read_table(f, notes)
        kind = _classify(df) if len(df) else None
        if kind == "rollouts":
            if store is None:
                df["_source"] = str(f)
                rollouts.append(df)
        elif kind == "runs":
            if store is None:
                runs.append(df)
        elif kind == "metrics":
            label = _metrics_label(f, root, depth=3)  # <run>/finetune/<task>: one line per run
            metrics[label] = df
        elif len(df):
            notes.append(f"{f}: ignored (columns {list(df.columns)[:8]} are neither rollout rows, run rows "
                         "nor training metrics)")
    rol = pd.concat(rollouts, ignore_index=True) if rollouts else pd.DataFrame(columns=REQUIRED_ROLLOUT_COLUMNS)
    if len(rol):
        # one rule with the store (which dedupes itself) and the evaluator: the row written last wins
        if store is None and all(k in rol.columns for k in ROLLOUT_IDENTITY):
            before = len(rol)
            rol = latest_frame(rol)
            if len(rol) < before:
                notes.append(f"{before - len(rol)} duplicate rollout row(s) (same {', '.join(ROLLOUT_KEY)}) "
                             "dropped; the row written last is kept")
        nfiles = rol["_source"].nunique() if "_source" in rol.columns else 0
        if nfiles:
            notes.append(f"{len(rol)} rollout rows from {nfiles} file(s)")
    runs_df = pd.concat(runs, ignore_index=True) if runs else pd.DataFrame()
    if len(metrics):
        notes.append(f"{len(metrics)} training-metrics file(s)")
    if len(preds):
        notes.append(f"{len(preds)} prediction array file(s)")
    return Results(rol, runs_df, metrics, preds, notes)


# ---------------------------------------------------------------------------- report

def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_") or "x"


@dataclass
class FigureEntry:
    name: str
    title: str
    caption: str
    files: list[Path]


def _make_figures(res: Results, rollouts: pd.DataFrame, summary: pd.DataFrame | None, out: Path,
                  skipped: list[str]) -> list[FigureEntry]:
    jobs = []  # (name, title, caption, callable)
    if summary is not None and len(summary):
        for sw in ["main", *sorted(s for s in summary["sweep"].unique() if s != "main")]:
            if sw not in set(summary["sweep"]):
                skipped.append("per-task success figure (main sweep): skipped, no rollouts with sweep='main'")
                continue
            kind = ("success_per_task" if sw == "main" else f"check_{sw}" if sw in CHECK_SWEEPS
                    else f"ablation_{sw}")
            ttl = ("Success per task, every method" if sw == "main" else
                   f"{CHECK_SWEEPS[sw][0]}: success per method" if sw in CHECK_SWEEPS else
                   f"Ablation '{sw}': success per arm")
            jobs.append((kind, ttl, "Bars: mean over training seeds; whiskers: 95% hierarchical bootstrap CI; "
                         "dots: per-seed success; legend: n = seeds/rollouts per task.",
                         lambda sw=sw: F.success_by_task(summary, rollouts, sweep=sw)))
        main = summary[summary["sweep"] == "main"]
        if set(main["condition"]) >= {"id", "ood"}:
            jobs.append(("id_vs_ood", "ID vs OOD", "Success in distribution vs out of distribution per task; "
                         "whiskers: 95% hierarchical bootstrap CI; dots: per-seed success.",
                         lambda: F.id_vs_ood(summary, rollouts)))
        else:
            skipped.append("ID vs OOD figure: skipped, the main sweep lacks rows for both condition 'id' and 'ood'")
    else:
        skipped.append("success figures: skipped, no rollout rows")
    if res.metrics and F.has_learning_diagnostics(res.metrics):
        jobs.append(("learning_diagnostics", "Learning diagnostics",
                     "Held-out windows, every validation step: the policy's open-loop action error relative to the "
                     "action magnitude (solid raw weights, dashed EMA), inverse-dynamics action error, and forward "
                     "dynamics against the copy-last-frame baseline (dashed) in latent MSE and decoded PSNR; one "
                     "colour per run.",
                     lambda: F.learning_diagnostics(dict(res.metrics))))
    if res.metrics:
        labels = sorted(res.metrics)
        chunks = [labels[i:i + 8] for i in range(0, len(labels), 8)]
        for k, ch in enumerate(chunks):
            suffix = f"_{k + 1}" if len(chunks) > 1 else ""
            jobs.append((f"training_curves{suffix}", f"Training curves{suffix.replace('_', ' ')}",
                         "Train loss and every validation metric (val/*: one per inference mode) against "
                         "training step; one line per run.",
                         lambda ch=ch, suffix=suffix: F.training_curves(
                             {c: res.metrics[c] for c in ch}, title=f"Training curves{suffix.replace('_', ' part ')}")))
    else:
        skipped.append("training curves: skipped, no metrics CSV (columns step, loss, val/*) found")
    if res.predictions:
        for lab, p in sorted(res.predictions.items()):
            def make(p=p, lab=lab):
                pred, true = F.load_prediction_npz(p)
                return F.prediction_grid(pred, true, title=f"Forward dynamics / video prediction: {lab}")
            jobs.append((f"prediction_{_slug(lab)}", f"Predicted vs true next frames: {lab}",
                         f"From {p.name}: true next frame, decoded prediction, absolute error.", make))
    else:
        skipped.append("video prediction grid: skipped, no .npz with keys pred and true found")

    entries = []
    for name, title, caption, fn in tqdm(jobs, desc="figures", unit="fig"):
        try:
            fig = fn()
        except (ValueError, KeyError) as e:
            skipped.append(f"figure {name}: skipped ({e})")
            continue
        files = F.save_figure(fig, out / "figures" / name)
        entries.append(FigureEntry(name, title, caption, files))
    return entries


def _rel(p: Path, out: Path) -> str:
    return p.relative_to(out).as_posix()


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 0.3em;font-size:0.85em}th,td{border:1px solid #ccc;padding:3px 7px;text-align:center}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #ddd}
.cap{color:#555;font-size:0.9em}.skip{color:#8a5a00}code{background:#f4f4f4;padding:0 3px}"""


def diagnostics_section(res: Results, results: Path, out: Path) -> tuple[str, str, str] | None:
    """Open-loop action error and first-observation check of every run (``uwmbench diagnose``,
    written by ``uwmbench run`` to ``<run>/diagnostics/<task>/summary.json``)."""
    roots = {Path(results)} if Path(results).is_dir() else set()
    if len(res.runs) and "run_dir" in res.runs.columns:
        roots |= {Path(p) for p in res.runs["run_dir"].dropna().astype(str).unique() if p}
    files = sorted({(f, run, task) for r in roots for run, task, f in RunDir.find_diagnostics(r)})
    rows, first = [], []
    for f, run, task in files:
        try:
            s = json.loads(f.read_text())
        except (OSError, ValueError) as e:
            log.warning("%s: unreadable diagnostics (%s)", f, e)
            continue
        for o in s.get("open_loop", []):
            if o.get("windows"):
                rows.append({"run": run, "method": s.get("method", ""), "task": task, "split": o["split"],
                             "windows": o["windows"], "|err| pos": o["err_pos"], "|a| pos": o["abs_pos"],
                             "rel err pos": o["err_pos"] / max(o["abs_pos"], 1e-9), "|err| rot": o["err_rot"],
                             "|a| rot": o["abs_rot"], "gripper sign agree": o["grip_sign_agree"]})
        for r in s.get("first_obs", []):
            if "identical_pixels" in r:
                first.append({"run": run, "task": task, "demo": r["demo"], "identical pixels": r["identical_pixels"],
                              "mean |diff|": r["mean_abs_diff"], "next action equal": r["next_action_equal"]})
    if not rows and not first:
        return None
    intro = ("Open-loop action error (`uwmbench diagnose`): each policy's predicted action chunk vs what the demo "
             "did next, mean over chunk steps, in env units; rel err pos = |err| / |a| (1.0 = no better than "
             "predicting no motion). Held-out = the run's validation episodes.")
    md = [intro, ""]
    h = [f"<p class='cap'>{html.escape(intro)}</p>"]
    if rows:
        df = pd.DataFrame(rows)
        md += [markdown_table(df), ""]
        h.append(df.to_html(index=False, border=0, float_format=lambda v: f"{v:.3g}"))
    if first:
        df = pd.DataFrame(first)
        cap = "Evaluator's observation vs the training window of the same state (frame 0 of a demo, from its stored scene)."
        md += [cap, "", markdown_table(df), ""]
        h.append(f"<p class='cap'>{html.escape(cap)}</p>" + df.to_html(index=False, border=0))
    return "Diagnostics", "\n".join(md), "\n".join(h)


def modes_section(results: Path, out: Path) -> tuple[str, str, str] | None:
    """Every inference mode of a world-model run beside its baseline (``uwmbench modes``:
    ``modes.json`` files under the results folder), with its predicted clip."""
    if not Path(results).is_dir():
        return None
    files = sorted(p for p in Path(results).rglob("modes.json") if ".tmp" not in p.name)
    rows, clips = [], []
    labels = {"policy": ("open-loop action error (relative)", "rel_err_pos", [("mean action", "mean_action_rel_err_pos"),
                                                                              ("no motion", None)]),
              "inverse_dynamics": ("action error (relative)", "rel_err_pos", [("mean action", "mean_action_rel_err_pos"),
                                                                              ("no motion", None)]),
              "forward_dynamics": ("next-frame PSNR (dB, higher is better)", "psnr", [("copy last frame", "copy_last_psnr")]),
              "video_prediction": ("next-frame PSNR (dB, higher is better)", "psnr", [("copy last frame", "copy_last_psnr")])}
    for f in files:
        try:
            r = json.loads(f.read_text())
            n = r["numbers"]
        except (OSError, ValueError, KeyError) as e:
            log.warning("%s: unreadable modes file (%s)", f, e)
            continue
        for mode, (what, key, bases) in labels.items():
            if f"{mode}/{key}" not in n:
                continue
            base = "; ".join(f"{b} {1.0 if k is None else n[f'{mode}/{k}']:.3g}" for b, k in bases)
            rows.append({"method": r.get("method", ""), "mode": mode.replace("_", " "), "measure": what,
                         "model": f"{n[f'{mode}/{key}']:.3g}", "baseline": base,
                         "latent MSE (model / copy last)": (f"{n[f'{mode}/latent_mse']:.4f} / "
                                                            f"{n[f'{mode}/copy_last_latent_mse']:.4f}")
                         if f"{mode}/latent_mse" in n else "–",
                         "windows": r.get("windows", "")})
        clip = (r.get("files") or {}).get("clip")
        if clip and (f.parent / clip).is_file():
            dst = out / "figures" / f"modes_{_slug(r.get('method', 'method'))}_{_slug(f.parent.name)}.gif"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f.parent / clip, dst)
            clips.append((r.get("method", ""), _rel(dst, out)))
    if not rows:
        return None
    df = pd.DataFrame(rows)
    intro = ("Each inference mode of one network on held-out windows (demos the run never trained on), beside a "
             "baseline that needs no learning: a number better than its baseline is something the model learned. "
             "Action errors: |error| / |action| on the position dims (no motion = 1.0); frames: the first predicted "
             "next frame (action_horizon steps ahead) against the VAE round trip of the true one.")
    md = [intro, "", markdown_table(df), ""]
    h = [f"<p class='cap'>{html.escape(intro)}</p>", df.to_html(index=False, border=0)]
    for m, p in clips:
        cap = (f"{m}: video prediction (no actions given). Left: the true frame one action chunk ahead; "
               "right: the model's prediction from the frames before it; one held-out window per frame.")
        md += [f"![{m} video prediction]({p})", "", cap, ""]
        h.append(f"<figure><img src='{html.escape(p)}' alt='{html.escape(m)} video prediction' style='width:256px'>"
                 f"<figcaption class='cap'>{html.escape(cap)}</figcaption></figure>")
    return "World-model modes", "\n".join(md), "\n".join(h)


def videos_section(rollouts: pd.DataFrame | None, out: Path, per_outcome: int = 2) -> tuple[str, str, str] | None:
    """A sample of recorded rollouts (up to ``per_outcome`` successes and failures per method,
    variant, task and condition), copied into ``<out>/videos/``. Runs write videos under the same
    file names (``<task>_<cond>_ep000_fail.mp4``), so each copy is named after its run as well:
    two variants of one method never share a link or overwrite each other's file."""

    if rollouts is None or "video" not in rollouts.columns:
        return None
    vids = rollouts[rollouts["video"].fillna("").astype(str).str.len() > 0]
    vids = vids[[Path(v).is_file() for v in vids["video"]]].copy()
    if not len(vids):
        return None
    if "variant" not in vids.columns:
        vids["variant"] = ""
    vids["variant"] = vids["variant"].fillna("").astype(str)
    md, h = [], []
    keys = [k for k in ("method", "variant", "task", "condition") if k in vids.columns]
    for key, g in vids.groupby(keys, sort=True):
        kv = dict(zip(keys, key))
        label = " / ".join([arm_label(str(kv["method"]), kv["variant"])]
                           + [display_condition(str(kv[k])) if k == "condition" else str(kv[k])
                              for k in ("task", "condition") if k in kv])
        links, seen = [], set()
        for ok in (True, False):
            sub = g[g["success"].astype(bool) == ok].drop_duplicates("video")
            sort_by = [c for c in ("episode", "run_id", "seed") if c in sub.columns]
            for _, r in sub.sort_values(sort_by).head(per_outcome).iterrows():
                src = Path(r["video"])
                run = _slug(str(r["run_id"])) if "run_id" in r and pd.notna(r["run_id"]) else ""
                dst = out / "videos" / _slug(label) / (f"{run}__{src.name}" if run else src.name)
                if dst in seen:
                    continue
                seen.add(dst)
                dst.parent.mkdir(parents=True, exist_ok=True)
                if not dst.is_file() or dst.stat().st_size != src.stat().st_size:
                    shutil.copyfile(src, dst)
                who = f"{r['run_id']}, " if run and g["run_id"].nunique() > 1 else ""
                links.append((f"{who}episode {int(r['episode'])} ({'success' if ok else 'failure'})", _rel(dst, out)))
        md.append(f"- {label}: " + " · ".join(f"[{t}]({p})" for t, p in links))
        h.append(f"<h3>{html.escape(label)}</h3>" + "".join(
            f"<figure style='display:inline-block;margin:4px'><video src='{html.escape(p)}' controls muted loop "
            f"width='256'></video><figcaption class='cap'>{html.escape(t)}</figcaption></figure>" for t, p in links))
    return "Rollout videos", "\n".join(md), "\n".join(h)


def _code(text: str) -> str:
    """Markdown inline code (`x`) as HTML <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def write_index(out: Path, title: str, overview: list[str], sections: list[tuple[str, list[Table]]],
                table_files: dict[str, dict[str, Path]], figs: list[FigureEntry], skipped: list[str],
                sources: list[str], extras: list[tuple[str, str, str]] = ()) -> tuple[Path, Path]:
    md = [f"# {title}", ""]
    h = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
         f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    md += [f"- {o}" for o in overview] + [""]
    h.append("<ul>" + "".join("<li>" + _code(html.escape(o)) + "</li>" for o in overview) + "</ul>")
    for sec, tabs in sections:
        if not tabs:
            continue
        md += [f"## {sec}", ""]
        h.append(f"<h2>{html.escape(sec)}</h2>")
        for t in tabs:
            links = table_files[t.name]
            md += [f"### {t.title}", "", t.caption, "", t.to_markdown(),
                   " · ".join(f"[{k.upper()}]({_rel(p, out)})" for k, p in links.items()), ""]
            md += [f"- {n}" for n in t.notes] + ([""] if t.notes else [])
            h.append(f"<h3>{html.escape(t.title)}</h3><p class='cap'>{html.escape(t.caption)}</p>")
            disp = t.display.copy()
            disp.index.name = t.index_name
            h.append(disp.to_html(escape=True, border=0))
            h.append("<p>" + " · ".join(f"<a href='{html.escape(_rel(p, out))}'>{k.upper()}</a>"
                                        for k, p in links.items()) + "</p>")
            if t.notes:
                h.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in t.notes) + "</ul>")
    if figs:
        md += ["## Figures", ""]
        h.append("<h2>Figures</h2>")
        for f in figs:
            png = next(p for p in f.files if p.suffix == ".png")
            others = [p for p in f.files if p.suffix != ".png"]
            md += [f"### {f.title}", "", f.caption, "", f"![{f.title}]({_rel(png, out)})", "",
                   " · ".join(f"[{p.suffix[1:].upper()}]({_rel(p, out)})" for p in f.files), ""]
            h.append(f"<h3>{html.escape(f.title)}</h3><p class='cap'>{html.escape(f.caption)}</p>"
                     f"<a href='{html.escape(_rel(png, out))}'><img src='{html.escape(_rel(png, out))}' "
                     f"alt='{html.escape(f.title)}'></a><p>"
                     + " · ".join(f"<a href='{html.escape(_rel(p, out))}'>{p.suffix[1:].upper()}</a>"
                                  for p in [png, *others]) + "</p>")
    for title_, md_, html_ in extras:
        md += [f"## {title_}", "", md_, ""]
        h.append(f"<h2>{html.escape(title_)}</h2>{html_}")
    md += ["## Skipped", ""] + ([f"- {s}" for s in skipped] or ["- nothing"]) + [""]
    h.append("<h2>Skipped</h2><ul>" + ("".join(f"<li class='skip'>{html.escape(s)}</li>" for s in skipped)
                                       or "<li>nothing</li>") + "</ul>")
    if sources:
        md += ["## Inputs", ""] + [f"- {s}" for s in sources] + [""]
        h.append("<h2>Inputs</h2><ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in sources) + "</ul>")
    h.append("</body></html>")
    md_path, html_path = out / "index.md", out / "index.html"
    atomic_write_text(md_path, "\n".join(md))
    atomic_write_text(html_path, "\n".join(h))
    return md_path, html_path


def _shown_path(results: Path, out: Path) -> str:
    """``results`` as the report names it: relative to the report folder (no machine paths)."""
    try:
        return Path(os.path.relpath(Path(results).resolve(), Path(out).resolve())).as_posix()
    except ValueError:  # another drive
        return Path(results).name


def make_report(results: str | Path, out: str | Path | None = None, n_boot: int = stats.DEFAULT_N_BOOT,
                n_perm: int = stats.DEFAULT_N_PERM, seed: int = 0, as_main: str | None = None) -> Path:
    """Build the report folder; returns the path of index.html. ``as_main``: tabulate the rows
    of that sweep as the main table (paper format, ID vs OOD, paired comparisons), e.g. a
    reduced-scale sweep."""
    results = Path(results)
    out = Path(out) if out is not None else (results if results.is_dir() else results.parent) / "report"
    out.mkdir(parents=True, exist_ok=True)
    res = load_results(results, exclude=out.resolve() if out.exists() else None)
    skipped: list[str] = []
    tables: dict[str, Table] = {}
    summary = None
    rollouts = None
    if len(res.rollouts):
        rollouts = normalize_rollouts(res.rollouts, where=str(results))
        if as_main:
            present = set(rollouts["sweep"].unique())
            if as_main not in present:
                raise ValueError(f"--as-main {as_main!r}: no rollouts of that sweep in {results} (sweeps: {sorted(present)})")
            if "main" in present and as_main != "main":
                raise ValueError(f"--as-main {as_main!r}: {results} already has a 'main' sweep; report them separately")
            rollouts.loc[rollouts["sweep"] == as_main, "sweep"] = "main"
        log.info("summarising %d rollouts (bootstrap %d)", len(rollouts), n_boot)
        summary = summarize_arms(rollouts, n_boot=n_boot, seed=seed)
        tables, sk = build_tables(rollouts, n_boot=n_boot, n_perm=n_perm, seed=seed, summary=summary)
        skipped += sk
        atomic_write_text(out / "data" / "summary.csv", summary.to_csv(index=False))
    else:
        skipped.append("all result tables: skipped, no rollout rows (columns method, task, seed, success) found")
        from .tables import published_table
        for pt in ("main", "registers", "objective", "cotraining", "dynamics"):
            t = published_table(pt)
            tables[t.name] = t
    table_files = {name: t.save(out / "tables") for name, t in tables.items()}
    figs = _make_figures(res, rollouts, summary, out, skipped)

    def pick(prefix: str) -> list[Table]:
        return [t for n, t in tables.items() if n.startswith(prefix)]

    sections = [("Main table (paper format)", pick("main_")), ("ID vs OOD", pick("id_vs_ood")),
                *[(t.title.split(" (")[0], [t]) for t in pick("check_")], ("Ablations", pick("ablation_")),
                ("Statistics: paired comparisons", pick("paired_")),
                ("Ours vs published", pick("compare_paper_")), ("Published numbers (UWM paper)", pick("paper_"))]
    shown = _shown_path(results, out)
    overview = [f"results: `{shown}`"] + ([f"sweep `{as_main}` tabulated as the main table (--as-main)"] if as_main else [])
    if rollouts is not None:
        overview += [f"{len(rollouts)} rollouts; methods: {', '.join(order_methods(rollouts['method'].unique()))}; "
                     f"tasks: {', '.join(sorted(rollouts['task'].unique()))}; sweeps: "
                     f"{', '.join(sorted(rollouts['sweep'].unique()))}; conditions: "
                     f"{', '.join(display_condition(c) for c in sorted(rollouts['condition'].unique()))}",
                     f"cells: mean ± std over training seeds of the per-seed success rate; n=S/R = seeds/rollouts; "
                     f"CIs: hierarchical bootstrap ({n_boot} resamples: seeds, then rollouts within seed)",
                     "summary numbers: [data/summary.csv](data/summary.csv)"]
    if rollouts is not None and "size" in rollouts.columns:
        sizes = sorted({str(x) for x in rollouts["size"].dropna() if str(x)})
        if sizes:
            toy = [x for x in sizes if x in TOY_SIZES]
            overview.append(f"model sizes: {', '.join(sizes)}" + (
                " (toy scale: minutes of CPU training; the published numbers below are context, not a comparison)"
                if toy and len(toy) == len(sizes) else ""))
    if len(res.runs):
        st = res.runs["status"].value_counts().to_dict() if "status" in res.runs.columns else {}
        overview.append(f"{len(res.runs)} runs: " + ", ".join(f"{k} {v}" for k, v in st.items()))
    extras = [e for e in (modes_section(results, out), diagnostics_section(res, results, out),
                          videos_section(rollouts, out)) if e]
    # no machine paths in the page: the results folder is named relative to the report
    sources = [x.replace(str(results.resolve()), shown).replace(str(results), shown) for x in res.sources]
    md_path, html_path = write_index(out, "uwmbench report", overview, sections, table_files, figs,
                                     skipped, sources, extras)
    # the html overview line with a markdown link: make it a real link
    text = html_path.read_text(encoding="utf-8").replace(
        "summary numbers: [data/summary.csv](data/summary.csv)",
        "summary numbers: <a href='data/summary.csv'>data/summary.csv</a>")
    atomic_write_text(html_path, text)
    log.info("report: %s (%d tables, %d figures, %d skipped)", html_path, len(tables), len(figs), len(skipped))
    return html_path


def main(argv: list[str] | None = None) -> int:
    import matplotlib
    matplotlib.use("Agg")  # the command writes files; importing the analysis modules does not pick a backend
    ap = argparse.ArgumentParser(prog="uwmbench report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="results-store root, or a folder/file of JSONL/CSV result rows")
    ap.add_argument("--out", default=None, help="output folder (default: <results>/report)")
    ap.add_argument("--n-boot", type=int, default=stats.DEFAULT_N_BOOT, help="bootstrap resamples (default 2000)")
    ap.add_argument("--n-perm", type=int, default=stats.DEFAULT_N_PERM, help="permutations (default 2000)")
    ap.add_argument("--seed", type=int, default=0, help="seed of bootstrap and permutations")
    ap.add_argument("--as-main", default=None, metavar="SWEEP",
                    help="tabulate this sweep as the main table (e.g. a reduced-scale sweep)")
    a = ap.parse_args(argv)
    if a.n_boot < 100 or a.n_perm < 100:
        ap.error(f"--n-boot/--n-perm must be >= 100 (got {a.n_boot}/{a.n_perm})")
    try:
        index = make_report(a.results, a.out, n_boot=a.n_boot, n_perm=a.n_perm, seed=a.seed, as_main=a.as_main)
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"uwmbench report: {e}")
        return 2
    print(f"report written: {index}  (and {index.with_name('index.md')})")
    return 0
