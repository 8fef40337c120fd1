"""Tables from rollout rows: the paper's LIBERO table, ablation tables, ID vs OOD, and the
published numbers beside ours. Each table exports to Markdown, LaTeX and CSV.

Cell = mean ± std over training seeds of the per-seed success rate (mean over that seed's
rollouts), followed by ``(n=S/R)``: S seeds, R rollouts behind the number. The Average column
is, as in the paper, the mean of the task means ± the std across tasks (ddof=0).
The CSV export is the numeric long form (one row per table row x column) with the
hierarchical-bootstrap CI and the n's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import stats
from .stats import order_methods  # the tables show methods in the statistics' order
from .paper import SWEEP_TO_PAPER_TABLE, load_paper_numbers, paper_variant
from uwmbench.fileio import atomic_write_text

# ---------------------------------------------------------------------------- naming

TASK_ORDER = ["book_caddy", "soup_cheese", "bowl_drawer", "moka_moka", "mug_mug",
              "stack_bowls", "block_cabinet"]
TASK_DISPLAY = {"book_caddy": "Book-Caddy", "soup_cheese": "Soup-Cheese", "bowl_drawer": "Bowl-Drawer",
                "moka_moka": "Moka-Moka", "mug_mug": "Mug-Mug", "stack_bowls": "Stack-Bowls",
                "block_cabinet": "Block-Cabinet", "average": "Average", "all": "All tasks"}
METHOD_DISPLAY = {"uwm": "UWM", "dp": "DP", "pad": "PAD", "gr1": "GR1", "bc": "BC"}
CONDITION_DISPLAY = {"id": "ID", "ood": "OOD", "real": "real robot", "all": "all"}
_EMPTY_VARIANTS = {"", "default", "nan", "none_", "None"}

REQUIRED_ROLLOUT_COLUMNS = ["method", "task", "seed", "success"]


def display_task(t: str) -> str:
    return TASK_DISPLAY.get(t, "-".join(p.capitalize() for p in str(t).split("_")))


def display_method(m: str) -> str:
    return METHOD_DISPLAY.get(m, str(m))


def display_condition(c: str) -> str:
    return CONDITION_DISPLAY.get(c, str(c))


def order_tasks(tasks) -> list[str]:
    ts = list(dict.fromkeys(tasks))
    known = [t for t in TASK_ORDER if t in ts]
    return known + sorted(t for t in ts if t not in TASK_ORDER)


def arm_label(method: str, variant: str, show_method: bool = True) -> str:
    if not variant:
        return display_method(method)
    return f"{display_method(method)} [{variant}]" if show_method else variant


# ---------------------------------------------------------------------------- input rows

def normalize_rollouts(df: pd.DataFrame, where: str = "rollouts") -> pd.DataFrame:
    """Validate and fill rollout rows: required columns, success as bool, variant '' for the
    default arm, sweep 'main' and condition 'all' when those columns are absent."""
    missing = [c for c in REQUIRED_ROLLOUT_COLUMNS if c not in df.columns]
    if missing:
        raise KeyError(f"{where}: rollout rows lack column(s) {missing}; have {list(df.columns)}")
    df = df.copy()
    for col, default in (("sweep", "main"), ("variant", ""), ("condition", "all")):
        if col not in df.columns:
            df[col] = default
        df[col] = df[col].where(df[col].notna(), default).astype(str)
    # rows written outside any sweep (`uwmbench evaluate`, an empty sweep column) are the main table's
    df["sweep"] = df["sweep"].map(lambda v: v.strip() or "main")
    df["variant"] = df["variant"].map(lambda v: "" if v.strip() in _EMPTY_VARIANTS else v.strip())
    if "mode" in df.columns:  # evaluation mode (policy / inverse_dynamics ...) becomes part of the arm
        mode = df["mode"].where(df["mode"].notna(), "").astype(str).str.strip()
        for sw in df["sweep"].unique():
            sel = (df["sweep"] == sw) & (mode != "")
            if (mode[sel] != "policy").any():
                df.loc[sel, "variant"] = [f"{v}+mode={m}" if v else f"mode={m}"
                                          for v, m in zip(df.loc[sel, "variant"], mode[sel])]
    df["condition"] = df["condition"].str.lower()
    s = df["success"]
    if s.dtype == object:
        mapped = s.map(lambda v: {"true": True, "false": False, "1": True, "0": False}.get(str(v).strip().lower()))
        bad = s[mapped.isna()]
        if len(bad):
            raise ValueError(f"{where}: column 'success' has non-boolean value {bad.iloc[0]!r}")
        s = mapped
    df["success"] = s.astype(bool)
    df["method"] = df["method"].astype(str)
    df["task"] = df["task"].astype(str)
    return df


# ---------------------------------------------------------------------------- formatting

def fmt_cell(mean: float, std: float | None = None, n_seeds: int | None = None,
             n_rollouts: int | None = None, digits: int = 2, ci: tuple[float, float] | None = None) -> str:
    """``mean ± std (n=S/R)``; with a single training seed (no spread over seeds to show) and
    ``ci`` given: ``mean [ci_low, ci_high] (n=1/R)``, the bootstrap CI over rollouts."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    s = f"{mean:.{digits}f}"
    if (ci is not None and n_seeds is not None and int(n_seeds) == 1
            and not any(isinstance(c, float) and math.isnan(c) for c in ci)):
        s += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    elif std is not None and not (isinstance(std, float) and math.isnan(std)):
        s += f" ± {std:.{digits}f}"
    if n_seeds is not None and n_rollouts is not None:
        s += f" (n={int(n_seeds)}/{int(n_rollouts)})"
    return s


def _md_escape(x: str) -> str:
    return str(x).replace("|", "\\|")


def df_to_markdown(df: pd.DataFrame, index_name: str | None = None) -> str:
    cols = [index_name or df.index.name or ""] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(_md_escape(c) for c in cols) + " |",
             "|" + "|".join("---" for _ in cols) + "|"]
    for idx, row in df.iterrows():
        lines.append("| " + " | ".join(_md_escape(v) for v in [idx, *row.tolist()]) + " |")
    return "\n".join(lines) + "\n"


def _tex_escape(x) -> str:
    s = str(x)
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("#", r"\#"),
                 ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("$", r"\$")):
        s = s.replace(a, b)
    return s.replace("±", r"$\pm$").replace("–", "--").replace("Δ", r"$\Delta$")


def df_to_latex(df: pd.DataFrame, caption: str, label: str, index_name: str | None = None) -> str:
    cols = [index_name or df.index.name or ""] + [str(c) for c in df.columns]
    out = [r"\begin{table}[t]", r"\centering", r"\small",
           r"\begin{tabular}{l" + "c" * len(df.columns) + "}", r"\toprule",
           " & ".join(_tex_escape(c) for c in cols) + r" \\", r"\midrule"]
    for idx, row in df.iterrows():
        out.append(" & ".join(_tex_escape(v) for v in [idx, *row.tolist()]) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{_tex_escape(caption)}}}",
            rf"\label{{tab:{label}}}", r"\end{table}"]
    return "\n".join(out) + "\n"


@dataclass
class Table:
    """A rendered table: ``display`` (strings, rows x columns) and ``data`` (numeric long form)."""
    name: str
    title: str
    caption: str
    display: pd.DataFrame
    data: pd.DataFrame
    index_name: str = "method"
    notes: list[str] = field(default_factory=list)

    def to_markdown(self) -> str:
        return df_to_markdown(self.display, self.index_name)

    def to_latex(self) -> str:
        return df_to_latex(self.display, self.caption, self.name, self.index_name)

    def to_csv(self) -> str:
        return self.data.to_csv(index=False)

    def save(self, folder: str | Path) -> dict[str, Path]:
        folder = Path(folder)
        paths = {"md": folder / f"{self.name}.md", "tex": folder / f"{self.name}.tex",
                 "csv": folder / f"{self.name}.csv"}
        md = f"## {self.title}\n\n{self.caption}\n\n{self.to_markdown()}"
        if self.notes:
            md += "\n" + "\n".join(f"- {n}" for n in self.notes) + "\n"
        atomic_write_text(paths["md"], md)
        atomic_write_text(paths["tex"], self.to_latex())
        atomic_write_text(paths["csv"], self.to_csv())
        return paths


N_NOTE = ("n=S/R: S training seeds, R rollouts behind the number; with one seed the cell shows the 95% "
          "CI over rollouts [low, high] (Wilson; bootstrap across tasks) instead of a spread over seeds.")


# ---------------------------------------------------------------------------- summaries

def summarize_arms(df: pd.DataFrame, n_boot: int = stats.DEFAULT_N_BOOT, seed: int = 0,
                   ddof: int = 0) -> pd.DataFrame:
    """Per (sweep, condition, method, variant, task) and per task 'average': mean, std, CI, n."""
    df = normalize_rollouts(df)
    keys = ["sweep", "condition", "method", "variant"]
    per_task = stats.summarize(df, [*keys, "task"], n_boot=n_boot, seed=seed, ddof=ddof)
    avg = stats.summarize(df, keys, n_boot=n_boot, seed=seed, ddof=ddof)
    avg.insert(len(keys), "task", "average")
    ntasks = df.groupby(keys)["task"].nunique().rename("n_tasks").reset_index()
    avg = avg.merge(ntasks, on=keys)
    per_task["n_tasks"] = 1
    return pd.concat([per_task, avg], ignore_index=True)


def _grid(summary: pd.DataFrame, row_keys: list[tuple[str, str]], tasks: list[str],
          show_method: bool, with_average: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    cols = [*tasks, "average"] if with_average and len(tasks) > 1 else list(tasks)
    disp, data = {}, []
    for (m, v) in row_keys:
        label = arm_label(m, v, show_method)
        cells = {}
        for t in cols:
            r = summary[(summary["method"] == m) & (summary["variant"] == v) & (summary["task"] == t)]
            if len(r) == 0:
                cells[display_task(t)] = "–"
                continue
            r = r.iloc[0]
            cells[display_task(t)] = fmt_cell(r["mean"], r["std"], r["n_seeds"], r["n_rollouts"], ci=(r["ci_low"], r["ci_high"]))
            data.append({"row": label, "method": m, "variant": v, "task": t,
                         **{k: r[k] for k in ("mean", "std", "ci_low", "ci_high", "n_seeds", "n_rollouts")}})
        disp[label] = cells
    display = pd.DataFrame.from_dict(disp, orient="index", columns=[display_task(t) for t in cols])
    return display, pd.DataFrame(data)


def paper_order(sweep: str, variants) -> list[str]:
    """Our variants of ``sweep`` in the order of the paper's table (via variant aliases)."""
    table = SWEEP_TO_PAPER_TABLE.get(sweep)
    if table is None:
        return []
    porder = list(dict.fromkeys(load_paper_numbers(table)["variant"]))
    known = [v for v in variants if paper_variant(table, v) in porder]
    return sorted(known, key=lambda v: porder.index(paper_variant(table, v)))


def _arms(sub: pd.DataFrame, paper_order: list[str] | None = None) -> list[tuple[str, str]]:
    out = []
    for m in order_methods(sub["method"].unique()):
        vs = list(sub.loc[sub["method"] == m, "variant"].unique())
        po = paper_order or []
        first = sorted((v for v in vs if v in po), key=po.index)
        rest = sorted(v for v in vs if v not in first)
        out += [(m, v) for v in ([""] if "" in rest else []) + first + [v for v in rest if v]]
    return out


def paper_table(summary: pd.DataFrame, condition: str, sweep: str = "main") -> Table | None:
    """The paper's LIBERO table: methods as rows, tasks + Average as columns."""
    sub = summary[(summary["sweep"] == sweep) & (summary["condition"] == condition)]
    if len(sub) == 0:
        return None
    tasks = order_tasks(t for t in sub["task"].unique() if t != "average")
    display, data = _grid(sub, _arms(sub), tasks, show_method=True, with_average=True)
    data.insert(0, "condition", condition)
    cond = display_condition(condition)
    return Table(name=f"main_{condition}", title=f"Success rate, {cond} ({sweep} sweep)",
                 caption=(f"LIBERO success rate ({cond}), mean ± std over training seeds of the "
                          f"per-seed success rate; Average = mean ± std across tasks. {N_NOTE}"),
                 display=display, data=data)


def ablation_table(summary: pd.DataFrame, sweep: str) -> Table | None:
    """Rows = ablation arms (variant), columns = tasks (+ Average), one block per condition."""
    sub = summary[summary["sweep"] == sweep]
    if len(sub) == 0:
        return None
    porder = paper_order(sweep, sub["variant"].unique())
    show_method = sub["method"].nunique() > 1
    conds = sorted(sub["condition"].unique())
    displays, datas = [], []
    for c in conds:
        sc = sub[sub["condition"] == c]
        tasks = order_tasks(t for t in sc["task"].unique() if t != "average")
        d, x = _grid(sc, _arms(sc, porder), tasks, show_method, with_average=True)
        if len(conds) > 1:
            d.index = [f"{i} ({display_condition(c)})" for i in d.index]
        x.insert(0, "condition", c)
        displays.append(d)
        datas.append(x)
    display = pd.concat(displays)
    display = display.fillna("–")
    if sweep in CHECK_SWEEPS:
        title, caption = CHECK_SWEEPS[sweep]
        return Table(name=f"check_{sweep}", title=title, caption=f"{caption} {N_NOTE}", display=display,
                     data=pd.concat(datas, ignore_index=True), index_name="arm")
    return Table(name=f"ablation_{sweep}", title=f"Ablation: {sweep}",
                 caption=f"Ablation sweep '{sweep}': success rate per arm, mean ± std over seeds. {N_NOTE}",
                 display=display, data=pd.concat(datas, ignore_index=True), index_name="arm")


# sweeps that are checks of the harness, not experiments: their rows get their own section
# (sweep name -> (section/table title, caption)); never tabulated as an ablation
CHECK_SWEEPS = {
    "memorise": ("Memorisation check (rolled out from the training demos' own start states)",
                 "Each policy rolled out from the exact start states of the demonstrations it was trained on "
                 "(evaluate init_from): evidence that training, checkpoints and rollouts work end to end, not a "
                 "benchmark number. Generalisation to new placements is in the main table."),
}


def id_vs_ood_table(summary: pd.DataFrame, sweep: str = "main") -> Table | None:
    """Rows = arms, columns = ID and OOD per task and on average, plus the drop OOD − ID."""
    sub = summary[(summary["sweep"] == sweep) & summary["condition"].isin(["id", "ood"])]
    if sub["condition"].nunique() < 2:
        return None
    tasks = order_tasks(t for t in sub["task"].unique() if t != "average")
    cols_t = [*tasks, "average"] if len(tasks) > 1 else tasks
    disp, data = {}, []
    for (m, v) in _arms(sub):
        label = arm_label(m, v)
        cells = {}
        for t in cols_t:
            vals = {}
            for c in ("id", "ood"):
                r = sub[(sub["method"] == m) & (sub["variant"] == v) & (sub["task"] == t) & (sub["condition"] == c)]
                key = f"{display_task(t)} {display_condition(c)}"
                if len(r):
                    r = r.iloc[0]
                    vals[c] = r["mean"]
                    cells[key] = fmt_cell(r["mean"], r["std"], r["n_seeds"], r["n_rollouts"], ci=(r["ci_low"], r["ci_high"]))
                    data.append({"row": label, "method": m, "variant": v, "task": t, "condition": c,
                                 **{k: r[k] for k in ("mean", "std", "ci_low", "ci_high", "n_seeds", "n_rollouts")}})
                else:
                    cells[key] = "–"
            cells[f"{display_task(t)} Δ"] = (f"{vals['ood'] - vals['id']:+.2f}" if len(vals) == 2 else "–")
        disp[label] = cells
    display = pd.DataFrame.from_dict(disp, orient="index")
    return Table(name="id_vs_ood", title="In-distribution vs out-of-distribution",
                 caption=f"Success rate ID and OOD, mean ± std over seeds; Δ = OOD − ID. {N_NOTE}",
                 display=display, data=pd.DataFrame(data))


# ---------------------------------------------------------------------------- paper numbers

def published_table(table: str) -> Table:
    """One of the paper's tables exactly as published (no n: the paper gives none)."""
    p = load_paper_numbers(table)
    tasks = order_tasks(t for t in p["task"].unique() if t != "average")
    cols = tasks + (["average"] if "average" in set(p["task"]) else [])
    arms = list(dict.fromkeys(zip(p["method"], p["variant"])))
    show_method = table == "main"
    disp = {}
    for m, v in arms:
        cells = {}
        for t in cols:
            r = p[(p["method"] == m) & (p["variant"] == v) & (p["task"] == t)]
            cells[display_task(t)] = fmt_cell(r["mean"].iloc[0], r["std"].iloc[0]) if len(r) else "–"
        disp[arm_label(m, v, show_method)] = cells
    display = pd.DataFrame.from_dict(disp, orient="index", columns=[display_task(t) for t in cols])
    setting = ", ".join(sorted(set(p["setting"])))
    return Table(name=f"paper_{table}", title=f"Published: {table} ({setting})",
                 caption=f"{p['source'].iloc[0]} ({setting}); numbers as published.",
                 display=display, data=p, index_name="method" if show_method else "arm")


def paper_comparison(summary: pd.DataFrame, table: str, sweep: str | None = None) -> Table | None:
    """Our numbers beside the published ones for one paper table, with the difference.

    A paper row matches our rows of the same method, variant and task (main table: our
    default-variant rows of the 'main' sweep); a paper condition ('ood', 'real') must match
    ours, an empty paper condition matches any of ours.
    """
    p = load_paper_numbers(table)
    sweeps = [sweep] if sweep else [s for s, t in SWEEP_TO_PAPER_TABLE.items() if t == table]
    ours = summary[summary["sweep"].isin(sweeps)]
    if len(ours) == 0:
        return None
    rows = []
    notes = []
    n_paper_tasks = p.loc[p["task"] != "average", "task"].nunique()
    for _, pr in p.iterrows():
        pv = ours["variant"].map(lambda v: paper_variant(table, v))
        o = ours[(ours["method"] == pr["method"]) & (pv == pr["variant"]) & (ours["task"] == pr["task"])]
        if pr["condition"]:
            o = o[o["condition"] == pr["condition"]]
        if pr["task"] == "average" and len(o):
            partial = o[o["n_tasks"] != n_paper_tasks]
            if len(partial):
                notes.append(f"{arm_label(pr['method'], pr['variant'])}: Average not compared, ours covers "
                             f"{int(partial['n_tasks'].iloc[0])} of the paper's {n_paper_tasks} tasks")
            o = o[o["n_tasks"] == n_paper_tasks]
        for _, r in o.iterrows():
            rows.append({"method": pr["method"], "variant": r["variant"], "task": pr["task"],
                         "condition": r["condition"], "ours_mean": r["mean"], "ours_std": r["std"],
                         "ours_ci_low": r["ci_low"], "ours_ci_high": r["ci_high"],
                         "n_seeds": r["n_seeds"], "n_rollouts": r["n_rollouts"],
                         "paper_mean": pr["mean"], "paper_std": pr["std"],
                         "diff": r["mean"] - pr["mean"],
                         "paper_in_ci": bool(r["ci_low"] <= pr["mean"] <= r["ci_high"])})
    if not rows:
        return None
    data = pd.DataFrame(rows)
    disp = pd.DataFrame({
        "task": [display_task(t) for t in data["task"]],
        "condition": [display_condition(c) for c in data["condition"]],
        "ours": [fmt_cell(a, b, c, d) for a, b, c, d in
                 zip(data["ours_mean"], data["ours_std"], data["n_seeds"], data["n_rollouts"])],
        "ours 95% CI": [f"[{a:.2f}, {b:.2f}]" for a, b in zip(data["ours_ci_low"], data["ours_ci_high"])],
        "paper": [fmt_cell(a, b) for a, b in zip(data["paper_mean"], data["paper_std"])],
        "Δ (ours − paper)": [f"{d:+.2f}" for d in data["diff"]],
        "paper in CI": ["yes" if x else "no" for x in data["paper_in_ci"]],
    }, index=[arm_label(m, v) for m, v in zip(data["method"], data["variant"])])
    return Table(name=f"compare_paper_{table}", title=f"Ours vs published: {table}",
                 caption=(f"Our success rate beside the UWM paper's ({table} table); "
                          f"Δ = ours − paper; CI = hierarchical bootstrap 95%. {N_NOTE}"),
                 display=disp, data=data, notes=notes)


def paired_by_variant(rows: pd.DataFrame, n_boot: int, n_perm: int, seed: int,
                      reference: str = "uwm") -> pd.DataFrame | None:
    """:func:`stats.paired_comparisons` within each variant that ``reference`` has (the default
    arm first): arms are compared only with arms evaluated the same way (a variant such as
    ``replan4`` changes the evaluation, so comparing across variants would mix protocols).
    A ``variant`` column ('' for the default) leads; Holm runs per (variant, condition)."""
    if not len(rows):
        return None
    variants = sorted(set(rows.loc[rows["method"] == reference, "variant"]), key=lambda v: (v != "", v))
    parts = []
    for v in variants:
        c = stats.paired_comparisons(rows[rows["variant"] == v], reference=reference,
                                     n_boot=n_boot, n_perm=n_perm, seed=seed)
        if len(c):
            parts.append(c.assign(variant=v)[["variant", *c.columns]])
    return pd.concat(parts, ignore_index=True) if parts else None


def paired_table(comparisons: pd.DataFrame, reference: str = "uwm") -> Table | None:
    if comparisons is None or len(comparisons) == 0:
        return None
    c = comparisons
    variant_col = {}
    if "variant" in c.columns and (c["variant"] != "").any():
        variant_col = {"variant": [v or "default" for v in c["variant"]]}
    disp = pd.DataFrame({
        **variant_col,
        "condition": [display_condition(x) for x in c["condition"]],
        "task": [display_task(t) for t in c["task"]],
        f"Δ ({display_method(reference)} − baseline)": [f"{d:+.3f}" for d in c["diff"]],
        "95% CI": [f"[{a:+.3f}, {b:+.3f}]" for a, b in zip(c["ci_low"], c["ci_high"])],
        "p (perm.)": [f"{p:.4f}" for p in c["p_value"]],
        "p (Holm)": [f"{p:.4f}" for p in c["p_holm"]],
        "n": [f"{a} (task, seed) pairs, {b}/{d} rollouts" for a, b, d in
              zip(c["n_pairs"], c["n_rollouts_a"], c["n_rollouts_b"])],
    }, index=[display_method(b) for b in c["baseline"]])
    return Table(name="paired_comparison", title=f"Paired comparison: {display_method(reference)} vs baselines",
                 caption=(f"{display_method(reference)} minus each baseline, paired by (task, training seed) "
                          "within one variant (arms evaluated the same way); "
                          "CI: hierarchical bootstrap; p: two-sided stratified permutation test "
                          "(labels shuffled within each task and seed); Holm-adjusted per condition. "
                          "n: paired (task, seed) pairs and rollouts of each side."),
                 display=disp, data=c, index_name="baseline")


# ---------------------------------------------------------------------------- ablations beside the paper
# Each ablation beside the paper, with a verdict.
#
# For an ablation sweep (registers, objective, cotrain, dynamics) every arm is compared with the
# sweep's reference arm (``REFERENCE``: UWM as published, or the arm without the ablated
# ingredient), per method and condition, paired by (task, training seed):
# :func:`uwmbench.analysis.stats.paired_difference` gives the difference (arm − reference), its 95%
# hierarchical-bootstrap CI and a stratified permutation p, Holm-adjusted over the arms of a
# (method, condition). The paper's difference for the same two arms is the mean over the tasks both
# cover (the paper's own tasks where ours differ, e.g. its real-robot objective ablation).
#
# Verdict, per row: **reproduced** (our CI excludes 0 on the paper's side), **refuted** (our CI
# excludes 0 on the other side), **not resolved** (our CI includes 0: never called reproduced),
# or no published direction (the paper has no number for the arm, or shows no difference).

# paper table -> the arm every other arm is compared with (the paper's variant names)
REFERENCE = {"registers": "registers=8", "objective": "objective=future", "cotraining": "cotrain=none",
             "dynamics": "mode=policy"}

VERDICTS = ("reproduced", "refuted", "not resolved", "no published direction")


def verdict(ci_low: float, ci_high: float, paper_diff: float | None) -> str:
    """The paper's direction against our CI of the same difference (see the module docstring)."""
    if paper_diff is None or not np.isfinite(paper_diff) or abs(paper_diff) < 1e-9:
        return "no published direction"
    if ci_low <= 0.0 <= ci_high:
        return "not resolved"
    return "reproduced" if (ci_low > 0) == (paper_diff > 0) else "refuted"


def paper_difference(table: str, method: str, arm: str, tasks: list[str]) -> tuple[float | None, list[str]]:
    """(the paper's mean over tasks of arm − reference, the tasks it used): the tasks we share with
    the paper's table, else all of the paper's tasks; None where the paper lacks either arm."""
    p = load_paper_numbers(table)
    p = p[(p["method"] == method) & (p["task"] != "average")]
    ref, alt = p[p["variant"] == REFERENCE[table]], p[p["variant"] == arm]
    both = sorted(set(ref["task"]) & set(alt["task"]))
    use = [t for t in both if t in set(tasks)] or both
    if not use:
        return None, []
    d = [float(alt.loc[alt["task"] == t, "mean"].iloc[0]) - float(ref.loc[ref["task"] == t, "mean"].iloc[0])
         for t in use]
    return float(np.mean(d)), use


def _arm_order(table: str, arms) -> list[str]:
    porder = list(dict.fromkeys(load_paper_numbers(table)["variant"]))
    return sorted(arms, key=lambda a: (porder.index(a) if a in porder else len(porder), a))


def verdict_rows(rollouts: pd.DataFrame, sweep: str, n_boot: int = stats.DEFAULT_N_BOOT,
                 n_perm: int = stats.DEFAULT_N_PERM, seed: int = 0) -> pd.DataFrame:
    """One row per (method, condition, arm ≠ reference) of ``sweep`` (normalized rollout rows):
    ours (diff, CI, p, Holm p, pairs), the paper's difference and tasks, the verdict."""
    table = SWEEP_TO_PAPER_TABLE.get(sweep)
    cols = ["sweep", "method", "condition", "arm", "variant", "reference", "diff", "ci_low", "ci_high", "p_value",
            "p_holm", "n_pairs", "n_rollouts_a", "n_rollouts_b", "tasks", "paper_diff", "paper_tasks", "verdict"]
    if table not in REFERENCE:
        return pd.DataFrame(columns=cols)
    df = rollouts[rollouts["sweep"] == sweep].copy()
    df["arm"] = [paper_variant(table, v) for v in df["variant"]]
    rows = []
    for method in order_methods(df["method"].unique()):
        dm = df[df["method"] == method]
        for cond in sorted(dm["condition"].unique()):
            dc = dm[dm["condition"] == cond]
            ref = dc[dc["arm"] == REFERENCE[table]]
            if not len(ref):
                continue
            part = []
            for arm in _arm_order(table, set(dc["arm"]) - {REFERENCE[table]}):
                a = dc[dc["arm"] == arm]
                try:
                    r = stats.paired_difference(a, ref, n_boot=n_boot, n_perm=n_perm, seed=seed)
                except ValueError:  # no (task, seed) evaluated for both arms
                    continue
                tasks = sorted(set(a["task"]) & set(ref["task"]))
                pdiff, ptasks = paper_difference(table, method, arm, tasks)
                part.append({"sweep": sweep, "method": method, "condition": cond, "arm": arm,
                             "variant": a["variant"].iloc[0], "reference": ref["variant"].iloc[0], **r,
                             "tasks": ",".join(tasks), "paper_diff": pdiff, "paper_tasks": ",".join(ptasks),
                             "verdict": verdict(r["ci_low"], r["ci_high"], pdiff)})
            if part:
                for row, ph in zip(part, stats.holm([x["p_value"] for x in part])):
                    row["p_holm"] = float(ph)
                rows += part
    return pd.DataFrame(rows, columns=cols)


def _sentence(r: pd.Series, table: str) -> str:
    ours = f"{r['diff']:+.2f} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"
    paper = ("the paper has no number for it" if r["paper_diff"] is None or not np.isfinite(r["paper_diff"])
             else f"the paper {r['paper_diff']:+.2f} on {', '.join(display_task(t) for t in r['paper_tasks'].split(','))}")
    return (f"{display_method(r['method'])}, {r['arm']} vs {REFERENCE[table]} ({display_condition(r['condition'])}): "
            f"ours {ours} on {', '.join(display_task(t) for t in r['tasks'].split(','))} "
            f"(Holm p {r['p_holm']:.3f}), {paper}: **{r['verdict']}**.")


def verdict_table(rollouts: pd.DataFrame, sweep: str, n_boot: int = stats.DEFAULT_N_BOOT,
                  n_perm: int = stats.DEFAULT_N_PERM, seed: int = 0) -> Table | None:
    """:func:`verdict_rows` as a report table, with one sentence per row in its notes."""
    v = verdict_rows(rollouts, sweep, n_boot=n_boot, n_perm=n_perm, seed=seed)
    if not len(v):
        return None
    table = SWEEP_TO_PAPER_TABLE[sweep]
    show_method = v["method"].nunique() > 1
    disp = pd.DataFrame({
        "condition": [display_condition(c) for c in v["condition"]],
        f"Δ ours (arm − {REFERENCE[table]})": [f"{d:+.3f}" for d in v["diff"]],
        "95% CI": [f"[{a:+.3f}, {b:+.3f}]" for a, b in zip(v["ci_low"], v["ci_high"])],
        "p (Holm)": [f"{p:.4f}" for p in v["p_holm"]],
        "Δ paper": ["–" if p is None or not np.isfinite(p) else f"{p:+.3f}" for p in v["paper_diff"]],
        "verdict": list(v["verdict"]),
        "n": [f"{a} (task, seed) pairs, {b}/{c} rollouts" for a, b, c in
              zip(v["n_pairs"], v["n_rollouts_a"], v["n_rollouts_b"])],
    }, index=[f"{display_method(m)} {a}" if show_method else a for m, a in zip(v["method"], v["arm"])])
    return Table(name=f"ablation_verdict_{sweep}", title=f"Ablation '{sweep}' beside the paper",
                 caption=(f"Each arm minus {REFERENCE[table]}, paired by (task, training seed); CI: hierarchical "
                          "bootstrap 95%; p: stratified permutation test, Holm-adjusted over the arms of a method "
                          "and condition. Δ paper: the same difference in the UWM paper (mean over the tasks both "
                          "cover, else the paper's own). Verdict: reproduced / refuted where our CI excludes 0 on "
                          "the paper's side / the other side; not resolved where it includes 0."),
                 display=disp, data=v, index_name="arm",
                 notes=[_sentence(r, table) for _, r in v.iterrows()])


def build_tables(rollouts: pd.DataFrame, n_boot: int = stats.DEFAULT_N_BOOT,
                 n_perm: int = stats.DEFAULT_N_PERM, seed: int = 0,
                 summary: pd.DataFrame | None = None) -> tuple[dict[str, Table], list[str]]:
    """Every table computable from ``rollouts``; returns (name -> Table, skipped messages)."""
    df = normalize_rollouts(rollouts)
    summary = summarize_arms(df, n_boot=n_boot, seed=seed) if summary is None else summary
    tables: dict[str, Table] = {}
    skipped: list[str] = []

    def add(name: str, t: Table | None, why: str) -> None:
        if t is None:
            skipped.append(f"{name}: skipped, {why}")
        else:
            tables[t.name] = t

    main = summary[summary["sweep"] == "main"]
    if len(main) == 0:
        skipped.append("main table: skipped, no rollouts with sweep='main'")
    for cond in sorted(main["condition"].unique()):
        add(f"main table ({cond})", paper_table(summary, cond), "no rows")
    add("ID vs OOD table", id_vs_ood_table(summary), "the main sweep lacks rows for both condition 'id' and 'ood'")
    for sw in sorted(s for s in summary["sweep"].unique() if s != "main"):
        add(f"ablation '{sw}'", ablation_table(summary, sw), "no rows")
    for ab in ("registers", "objective", "cotraining", "dynamics"):
        if not any(SWEEP_TO_PAPER_TABLE.get(s) == ab for s in summary["sweep"].unique()):
            skipped.append(f"ablation '{ab}': skipped, no rollouts with a sweep named "
                           f"{sorted(s for s, t in SWEEP_TO_PAPER_TABLE.items() if t == ab)}")
    comparable, not_comparable = split_by_scale(df, summary)
    for pt in ("main", "registers", "objective", "cotraining", "dynamics"):
        if len(not_comparable) and not len(comparable):
            skipped.append(f"paper comparison '{pt}': not made, every arm was trained at a toy scale "
                           f"({scale_note(not_comparable)}): its numbers are not comparable with the paper's; "
                           "the published numbers are shown for context only")
        else:
            add(f"paper comparison '{pt}'", paper_comparison(comparable, pt),
                "none of our rows matches the published rows (method, variant, task, condition)")
        tables[f"paper_{pt}"] = published_table(pt)
    if len(not_comparable) and len(comparable):
        skipped.append(f"paper comparisons: arms trained at a toy scale left out ({scale_note(not_comparable)})")
    size = df["size"].where(df["size"].notna(), "").astype(str) if "size" in df.columns else None
    full = df if size is None else df[~size.isin(TOY_SIZES)]   # rollouts of arms not trained at a toy scale
    for sw in sorted(s for s in df["sweep"].unique() if SWEEP_TO_PAPER_TABLE.get(s) in REFERENCE):
        if not len(full[full["sweep"] == sw]):
            skipped.append(f"ablation '{sw}' beside the paper: no verdict, every arm was trained at a toy scale")
            continue
        add(f"ablation '{sw}' beside the paper", verdict_table(full, sw, n_boot=n_boot, n_perm=n_perm, seed=seed),
            f"needs the reference arm {REFERENCE[SWEEP_TO_PAPER_TABLE[sw]]} and another arm evaluated on a shared "
            "(task, seed)")
    add("paired comparison", paired_table(paired_by_variant(df[df["sweep"] == "main"], n_boot, n_perm, seed)),
        "needs rollouts of 'uwm' and at least one other method sharing variant, task and seed in the main sweep")
    return tables, skipped


# model sizes whose success rates say nothing about the paper's: minutes of training on a CPU
TOY_SIZES = ("tiny",)


def split_by_scale(rollouts: pd.DataFrame, summary: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``summary`` rows of arms trained at a scale comparable with the paper (any size but
    :data:`TOY_SIZES`; rows without a ``size`` column count as comparable) and of toy-scale arms."""
    if "size" not in rollouts.columns:
        return summary, summary.iloc[0:0]
    size = rollouts["size"].where(rollouts["size"].notna(), "").astype(str)
    toy = rollouts.loc[size.isin(TOY_SIZES), ["sweep", "method", "variant"]].drop_duplicates()
    if not len(toy):
        return summary, summary.iloc[0:0]
    key = list(zip(summary["sweep"], summary["method"], summary["variant"]))
    is_toy = pd.Series([k in set(map(tuple, toy.to_numpy())) for k in key], index=summary.index)
    return summary[~is_toy], summary[is_toy]


def scale_note(toy_summary: pd.DataFrame) -> str:
    arms = sorted({arm_label(m, v) for m, v in zip(toy_summary["method"], toy_summary["variant"])})
    return f"size {'/'.join(TOY_SIZES)}: {', '.join(arms)}"
