"""Analysis: tables against hand-computed values and the published numbers, statistics,
labelled figures, and a report whose index links every table and figure."""
from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from uwmbench.analysis import figures as F  # noqa: E402
from uwmbench.analysis import report, stats, tables  # noqa: E402
from uwmbench.analysis.paper import load_paper_numbers  # noqa: E402

# per (method, task): successes out of 5 rollouts for seed 0 and seed 1
HAND = {("uwm", "book_caddy"): (4, 3), ("uwm", "soup_cheese"): (2, 3),
        ("dp", "book_caddy"): (1, 2), ("dp", "soup_cheese"): (0, 1),
        ("mymethod", "book_caddy"): (5, 5), ("mymethod", "soup_cheese"): (5, 4)}


def _rows(spec=HAND, sweep="main", variant="", condition="ood", n=5):
    rows = []
    for (m, t), wins in spec.items():
        for seed, k in enumerate(wins):
            for e in range(n):
                rows.append(dict(run_id=f"{sweep}-{m}-{variant}-{t}-{seed}", sweep=sweep, cell=f"{m}-{t}",
                                 method=m, variant=variant, task=t, condition=condition, seed=seed,
                                 episode=e, rollout_seed=1000 + e, success=e < k, steps=100,
                                 wall_time_s=0.5, checkpoint="ckpt.pt"))
    return rows


@pytest.fixture
def rollouts():
    return pd.DataFrame(_rows())


def test_paper_table_equals_hand_computed(rollouts):
    summary = tables.summarize_arms(rollouts, n_boot=200)
    t = tables.paper_table(summary, "ood")
    d = t.display
    assert list(d.index) == ["UWM", "DP", "mymethod"]          # user-added method gets its own row
    assert list(d.columns) == ["Book-Caddy", "Soup-Cheese", "Average"]
    # UWM Book-Caddy: seeds 0.8, 0.6 -> 0.70 ± 0.10; Soup-Cheese 0.4, 0.6 -> 0.50 ± 0.10
    # Average = mean of task means ± std across tasks: 0.60 ± 0.10
    assert d.loc["UWM", "Book-Caddy"] == "0.70 ± 0.10 (n=2/10)"
    assert d.loc["UWM", "Soup-Cheese"] == "0.50 ± 0.10 (n=2/10)"
    assert d.loc["UWM", "Average"] == "0.60 ± 0.10 (n=2/20)"
    assert d.loc["DP", "Book-Caddy"] == "0.30 ± 0.10 (n=2/10)"
    assert d.loc["DP", "Average"] == "0.20 ± 0.10 (n=2/20)"
    assert d.loc["mymethod", "Soup-Cheese"] == "0.90 ± 0.10 (n=2/10)"
    num = t.data.set_index(["method", "task"])
    assert num.loc[("uwm", "book_caddy"), "mean"] == pytest.approx(0.7)
    assert num.loc[("uwm", "book_caddy"), "std"] == pytest.approx(0.1)
    assert num.loc[("dp", "average"), "mean"] == pytest.approx(0.2)
    assert num.loc[("uwm", "book_caddy"), "n_rollouts"] == 10
    lo, hi = num.loc[("uwm", "book_caddy"), ["ci_low", "ci_high"]]
    assert 0.0 <= lo <= 0.7 <= hi <= 1.0
    md, tex, csv = t.to_markdown(), t.to_latex(), t.to_csv()
    assert "| UWM | 0.70 ± 0.10 (n=2/10) |" in md
    assert r"0.70 $\pm$ 0.10 (n=2/10)" in tex and r"\begin{tabular}" in tex
    assert "n_seeds" in csv.splitlines()[0]


def test_published_numbers_render_exactly():
    t = tables.published_table("main")
    d = t.display
    assert d.loc["UWM", "Book-Caddy"] == "0.91 ± 0.07"
    expected = {  # the UWM paper's main table (OOD success)
        "UWM": "0.91 ± 0.07 | 0.93 ± 0.01 | 0.80 ± 0.02 | 0.68 ± 0.02 | 0.65 ± 0.01 | 0.79 ± 0.11",
        "DP": "0.73 ± 0.10 | 0.88 ± 0.02 | 0.77 ± 0.02 | 0.65 ± 0.03 | 0.53 ± 0.05 | 0.71 ± 0.12",
        "PAD": "0.78 ± 0.04 | 0.47 ± 0.04 | 0.74 ± 0.05 | 0.59 ± 0.08 | 0.25 ± 0.04 | 0.57 ± 0.19",
        "GR1": "0.77 ± 0.03 | 0.65 ± 0.05 | 0.62 ± 0.03 | 0.46 ± 0.04 | 0.38 ± 0.05 | 0.58 ± 0.14",
    }
    assert list(d.columns) == ["Book-Caddy", "Soup-Cheese", "Bowl-Drawer", "Moka-Moka", "Mug-Mug", "Average"]
    for m, row in expected.items():
        assert " | ".join(d.loc[m]) == row
        # the Average column is the mean ± population std of the task means (as the paper's)
        p = load_paper_numbers("main")
        v = p[(p["method"] == m.lower()) & (p["task"] != "average")]["mean"].to_numpy()
        avg = p[(p["method"] == m.lower()) & (p["task"] == "average")].iloc[0]
        assert round(v.mean(), 2) == pytest.approx(avg["mean"], abs=0.011)
        assert round(v.std(ddof=0), 2) == pytest.approx(avg["std"], abs=0.011)
    assert tables.published_table("registers").display.loc["conditioning=cross_attention", "Soup-Cheese"] == "0.86"
    assert tables.published_table("objective").display.loc["objective=none", "Stack-Bowls"] == "0.48"
    assert tables.published_table("cotraining").display.loc["cotrain=internet_video", "Block-Cabinet"] == "0.80"
    assert tables.published_table("dynamics").display.loc["mode=policy", "Soup-Cheese"] == "0.26"
    assert len(load_paper_numbers()) == 24 + 8 + 6 + 6 + 4


def test_paper_comparison_and_ablation_and_id_ood():
    rows = _rows()
    rows += _rows({("uwm", "book_caddy"): (5, 4)}, sweep="registers", variant="registers=8")
    rows += _rows({("uwm", "book_caddy"): (3, 3)}, sweep="registers", variant="registers=0")
    rows += _rows(condition="id")
    summary = tables.summarize_arms(pd.DataFrame(rows), n_boot=200)
    cmp = tables.paper_comparison(summary, "main")
    r = cmp.data.set_index(["method", "task"]).loc[("uwm", "book_caddy")]
    assert r["paper_mean"] == 0.91 and r["diff"] == pytest.approx(0.70 - 0.91)
    assert cmp.display.iloc[0]["paper"] == "0.91 ± 0.07"
    assert not (cmp.data["task"] == "average").any()      # 2 of 5 tasks: no Average comparison
    assert any("Average not compared" in n for n in cmp.notes)
    reg = tables.paper_comparison(summary, "registers")
    assert set(reg.data["variant"]) == {"registers=8", "registers=0"}
    ab = tables.ablation_table(summary, "registers")
    assert list(ab.display.index) == ["registers=8", "registers=0"]   # the paper's order
    assert ab.display.loc["registers=8", "Book-Caddy"] == "0.90 ± 0.10 (n=2/10)"
    io = tables.id_vs_ood_table(summary)
    assert io.display.loc["UWM", "Book-Caddy Δ"] == "+0.00"
    assert tables.id_vs_ood_table(tables.summarize_arms(pd.DataFrame(_rows()), n_boot=100)) is None


def test_ablation_verdicts_beside_the_paper():
    """Each arm minus the reference arm, paired by (task, seed), beside the paper's difference:
    reproduced / refuted where our CI excludes 0 on the paper's side / the other side, not
    resolved where it includes 0 (never reproduced), and the same for mode arms (dynamics)."""
    n = 20
    reg = {"reg8": (16, 17, 15, 16), "reg0": (4, 5, 3, 4), "xattn": (20, 20, 20, 20), "reg4": (16, 16, 15, 17)}
    rows = []
    for label, wins in reg.items():   # 2 tasks x 2 seeds: (book s0, book s1, soup s0, soup s1)
        rows += _rows({("uwm", "book_caddy"): wins[:2], ("uwm", "soup_cheese"): wins[2:]},
                      sweep="registers", variant=label, condition="id", n=n)
    df = tables.normalize_rollouts(pd.DataFrame(rows))
    v = tables.verdict_rows(df, "registers", n_boot=300, n_perm=300).set_index("arm")
    assert set(v.index) == {"registers=0", "registers=4", "conditioning=cross_attention"}
    assert (v["reference"] == "reg8").all()
    # paper: reg0 0.81/0.85 vs reg8 0.88/0.90 -> -0.06; cross-attention 0.78/0.86 -> -0.07; reg4 -0.045
    assert v.loc["registers=0", "paper_diff"] == pytest.approx(-0.06)
    assert v.loc["registers=0", "diff"] == pytest.approx((4 + 5 + 3 + 4 - 64) / 4 / n)
    assert v.loc["registers=0", "ci_high"] < 0 and v.loc["registers=0", "verdict"] == "reproduced"
    assert v.loc["conditioning=cross_attention", "ci_low"] > 0
    assert v.loc["conditioning=cross_attention", "verdict"] == "refuted"
    assert v.loc["registers=4", "ci_low"] < 0 < v.loc["registers=4", "ci_high"]
    assert v.loc["registers=4", "verdict"] == "not resolved"
    ph = stats.holm(v.loc[["registers=0", "registers=4", "conditioning=cross_attention"], "p_value"])
    assert list(v.loc[["registers=0", "registers=4", "conditioning=cross_attention"], "p_holm"]) == pytest.approx(ph)
    assert tables.verdict(-0.3, -0.1, 0.0) == "no published direction"
    # dynamics: the arms are evaluation modes (rows with a mode column)
    dyn = _rows({("uwm", "book_caddy"): (6, 7)}, sweep="dynamics", condition="id", n=n)
    for r in dyn:
        r["mode"] = "policy"
    inv = _rows({("uwm", "book_caddy"): (15, 14)}, sweep="dynamics", condition="id", n=n)
    for r in inv:
        r["mode"] = "inverse_dynamics"
    t = tables.verdict_table(tables.normalize_rollouts(pd.DataFrame(dyn + inv)), "dynamics", n_boot=300, n_perm=300)
    assert list(t.data["arm"]) == ["mode=inverse_dynamics"] and list(t.data["verdict"]) == ["reproduced"]
    assert t.data["paper_diff"].iloc[0] == pytest.approx(0.65 - 0.47)   # book_caddy, the task we share
    assert "**reproduced**" in t.notes[0] and "Book-Caddy" in t.notes[0]
    # the report's tables: one verdict table per ablation sweep, in the Ablations section
    built, _ = tables.build_tables(pd.DataFrame(rows + dyn + inv), n_boot=100, n_perm=100)
    assert {"ablation_verdict_registers", "ablation_verdict_dynamics"} <= set(built)


def test_hierarchical_bootstrap():
    perfect = pd.DataFrame({"task": "t", "seed": [0] * 10 + [1] * 10, "success": True})
    e = stats.estimate(perfect, n_boot=300)
    assert (e.mean, e.ci_low, e.ci_high, e.n_seeds, e.n_rollouts) == (1.0, 1.0, 1.0, 2, 20)
    # same pooled rate, but seeds disagree: the seed level must widen the interval
    rng = np.random.default_rng(1)
    agree = pd.DataFrame({"task": "t", "seed": np.repeat(range(4), 50),
                          "success": rng.random(200) < 0.5})
    disagree = pd.DataFrame({"task": "t", "seed": np.repeat(range(4), 50),
                             "success": np.concatenate([np.ones(50), np.zeros(50), np.ones(50), np.zeros(50)]) > 0})
    ea, ed = stats.estimate(agree, n_boot=2000), stats.estimate(disagree, n_boot=2000)
    assert ed.ci_high - ed.ci_low > 2 * (ea.ci_high - ea.ci_low)
    assert ea.ci_low < ea.mean < ea.ci_high
    with pytest.raises(KeyError, match="success"):
        stats.estimate(pd.DataFrame({"task": ["t"], "seed": [0]}))


def test_paired_comparison():
    strong = pd.DataFrame(_rows({("uwm", "book_caddy"): (10, 10, 9), ("dp", "book_caddy"): (1, 0, 2)}, n=10))
    r = stats.paired_difference(strong[strong.method == "uwm"], strong[strong.method == "dp"], n_boot=500, n_perm=500)
    assert r["diff"] == pytest.approx((1.0 + 1.0 + 0.9 - 0.1 - 0.0 - 0.2) / 3)
    assert r["ci_low"] > 0.5 and r["p_value"] < 0.01 and r["n_pairs"] == 3
    same = pd.DataFrame(_rows({("uwm", "book_caddy"): (5, 5), ("dp", "book_caddy"): (5, 5)}, n=10))
    r = stats.paired_difference(same[same.method == "uwm"], same[same.method == "dp"], n_boot=300, n_perm=300)
    assert r["diff"] == 0 and r["p_value"] > 0.5 and r["ci_low"] <= 0 <= r["ci_high"]
    comps = stats.paired_comparisons(pd.DataFrame(_rows()), n_boot=200, n_perm=200)
    assert set(comps["baseline"]) == {"dp", "mymethod"}
    assert set(comps["task"]) == {"book_caddy", "soup_cheese", "all"}
    assert (comps["p_holm"] >= comps["p_value"]).all()
    assert list(stats.holm([0.01, 0.04, 0.03])) == pytest.approx([0.03, 0.06, 0.06])


def test_paired_comparison_within_each_variant():
    """Arms evaluated another way (a variant) are compared with each other, never across variants:
    UWM default vs DP default, UWM [replan4] vs DP [replan4]; a baseline without UWM's variant is
    left out of that variant's rows."""
    spec_default = {("uwm", "book_caddy"): (1, 1), ("dp", "book_caddy"): (1, 1)}
    spec_replan = {("uwm", "book_caddy"): (5, 5), ("dp", "book_caddy"): (0, 0)}
    df = pd.DataFrame(_rows(spec_default) + _rows(spec_replan, variant="replan4")
                      + _rows({("bc", "book_caddy"): (5, 5)}, variant="16k"))
    comps = tables.paired_by_variant(df, n_boot=200, n_perm=200, seed=0)
    assert comps["variant"].tolist() == ["", "replan4"] and set(comps["baseline"]) == {"dp"}
    assert comps.set_index("variant")["diff"].to_dict() == pytest.approx({"": 0.0, "replan4": 1.0})
    t = tables.paired_table(comps)
    assert t.display["variant"].tolist() == ["default", "replan4"]
    built, _ = tables.build_tables(df, n_boot=100, n_perm=100)
    assert built["paired_comparison"].data["variant"].tolist() == ["", "replan4"]
    # only the default variant: no variant column in the display (the table looks as before)
    only = tables.paired_by_variant(pd.DataFrame(_rows()), n_boot=100, n_perm=100, seed=0)
    assert "variant" not in tables.paired_table(only).display.columns


def _assert_labelled(fig):
    assert fig._suptitle is not None and fig._suptitle.get_text()
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        assert ax.get_title()
        if not ax.images:
            assert ax.get_xlabel() and ax.get_ylabel()


def _metrics(seed=0):
    st = np.arange(0, 500, 25)
    df = pd.DataFrame({"step": st, "loss": 1.5 * np.exp(-st / 200) + 0.01 * seed})
    df["val/marginal_action_mse"] = np.where(st % 100 == 0, np.exp(-st / 300), np.nan)
    df["val/inverse_action_mse"] = np.where(st % 100 == 0, 0.5 * np.exp(-st / 300), np.nan)
    df["val/next_obs_latent_mse"] = np.where(st % 100 == 0, 0.2 + 0.1 * np.exp(-st / 300), np.nan)
    return df


def _diag_metrics(seed=0, uwm=True):
    df = _metrics(seed)
    st = df["step"]
    at = st % 100 == 0
    df["val/open_loop_rel_err_pos"] = np.where(at, 0.3 + np.exp(-st / 300), np.nan)
    df["val/open_loop_rel_err_pos_ema"] = np.where(at, 0.3 + 1.2 * np.exp(-st / 300), np.nan)
    if uwm:
        df["val/inverse_rel_err_pos"] = np.where(at, 0.2 + np.exp(-st / 300), np.nan)
        df["val/copy_last_latent_mse"] = np.where(at, 0.25, np.nan)
        df["val/forward_psnr"] = np.where(at, 20 - 5 * np.exp(-st / 300), np.nan)
        df["val/copy_last_psnr"] = np.where(at, 17.0, np.nan)
    else:
        df = df.drop(columns=["val/inverse_action_mse", "val/next_obs_latent_mse"])
    return df


def test_learning_diagnostics_figure_draws_what_the_runs_have():
    """One panel per diagnostic some run has (a DP run has no dynamics panels of its own); the
    copy-last baseline and the EMA weights are their own (dashed) lines; without any diagnostic
    column the figure is refused and the report does not ask for it."""
    fig = F.learning_diagnostics({"uwm": _diag_metrics(0), "dp": _diag_metrics(1, uwm=False)})
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert len(titles) == 4 and "open-loop" in titles[0]
    first = fig.axes[0]
    assert sorted(l.get_label() for l in first.get_lines()) == ["dp", "dp (EMA)", "uwm", "uwm (EMA)"]
    assert {l.get_label() for l in fig.axes[2].get_lines()} == {"uwm", "uwm (copy-last baseline)"}
    only_dp = F.learning_diagnostics({"dp": _diag_metrics(1, uwm=False)})
    assert len([ax for ax in only_dp.axes if ax.get_visible()]) == 1
    bare = _metrics(0)[["step", "loss", "val/marginal_action_mse"]]
    assert F.has_learning_diagnostics({"x": bare}) is False
    with pytest.raises(ValueError, match="no run has"):
        F.learning_diagnostics({"x": bare})


def _frames(n=3, h=32, seed=0):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 256, (n, h, h, 3), dtype=np.uint8)
    pred = np.clip(true.astype(int) + rng.integers(-20, 20, true.shape), 0, 255).astype(np.uint8)
    return pred, true


def test_every_figure_labelled_and_saved(tmp_path, rollouts):
    rows = _rows() + _rows(condition="id") + _rows({("uwm", "book_caddy"): (5, 4)}, sweep="registers",
                                                   variant="registers=8")
    df = tables.normalize_rollouts(pd.DataFrame(rows))
    summary = tables.summarize_arms(df, n_boot=100)
    pred, true = _frames()
    figs = {"success": F.success_by_task(summary, df), "ablation": F.success_by_task(summary, df, sweep="registers"),
            "idood": F.id_vs_ood(summary, df),
            "curves": F.training_curves({"uwm/s0": _metrics(0), "dp/s0": _metrics(1)}),
            "diagnostics": F.learning_diagnostics({"uwm/s0": _diag_metrics(0), "dp/s0": _diag_metrics(1, uwm=False)}),
            "grid": F.prediction_grid(pred.astype(float) / 255, true)}
    assert len(figs["grid"].axes) == 9 and all(ax.images for ax in figs["grid"].axes)
    for name, fig in figs.items():
        _assert_labelled(fig)
        paths = F.save_figure(fig, tmp_path / name)
        assert [p.suffix for p in paths] == [".png", ".pdf"]
        assert all(p.stat().st_size > 1000 for p in paths)
    bad = plt.figure()
    bad.add_subplot().plot([0, 1])
    with pytest.raises(ValueError, match="no title"):
        F.save_figure(bad, tmp_path / "bad")
    assert not (tmp_path / "bad.png").exists()
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        F.prediction_grid(np.zeros((2, 8, 8)), np.zeros((2, 8, 8)))


def _links(index: Path) -> list[str]:
    text = index.read_text(encoding="utf-8")
    if index.suffix == ".md":
        return re.findall(r"\]\(([^)\s]+)\)", text)
    return re.findall(r"(?:href|src)=['\"]([^'\"]+)['\"]", text)


def test_report_links_every_table_and_figure(tmp_path):
    res = tmp_path / "results"
    (res / "runs" / "uwm_s0").mkdir(parents=True)
    rows = _rows() + _rows(condition="id") + _rows({("uwm", "book_caddy"): (5, 4), ("uwm", "soup_cheese"): (3, 4)},
                                                   sweep="registers", variant="registers=4")
    with open(res / "rollouts_part1.jsonl", "w") as f:
        for r in rows[: len(rows) // 2]:
            f.write(json.dumps(r) + "\n")
        f.write('{"truncated": ')                          # a line still being written
    pd.DataFrame(rows[len(rows) // 2:]).to_csv(res / "rollouts_part2.csv", index=False)
    _metrics().to_csv(res / "runs" / "uwm_s0" / "metrics.csv", index=False)
    pred, true = _frames()
    np.savez(res / "runs" / "uwm_s0" / "predictions.npz", pred=pred, true=true)
    out = res / "report"                                   # the default: inside the results folder
    assert report.main([str(res), "--n-boot", "200", "--n-perm", "200"]) == 0
    md, html = out / "index.md", out / "index.html"
    produced = {p.relative_to(out).as_posix() for p in out.rglob("*")
                if p.is_file() and p.suffix in (".md", ".tex", ".csv", ".png", ".pdf") and p.name != "index.md"}
    for index in (md, html):
        links = _links(index)
        assert links, index
        for link in links:
            assert (out / link).is_file(), f"{index.name} links missing {link}"
        assert produced <= set(links), f"{index.name} does not link {sorted(produced - set(links))}"
    names = {Path(p).name for p in produced}
    for expect in ("main_ood.md", "main_id.tex", "id_vs_ood.csv", "ablation_registers.md", "paired_comparison.md",
                   "compare_paper_main.md", "paper_main.md", "success_per_task.png", "id_vs_ood.pdf",
                   "ablation_registers.png", "training_curves.png", "prediction_uwm_s0_predictions.png"):
        assert expect in names
    text = md.read_text()
    assert "0.91 ± 0.07" in text and "0.70 ± 0.10 (n=2/10)" in text
    assert "ablation 'objective': skipped" in text and "not JSON" in text
    assert f"{len(rows)} rollouts" in text                # rows of both files, the truncated line skipped
    # a rerun does not read the report folder's own files back as results
    again = report.load_results(res, exclude=out.resolve())
    assert len(again.rollouts) == len(rows) and not any("ignored" in s for s in again.sources)


def test_report_without_data_skips_not_crashes(tmp_path):
    res = tmp_path / "empty"
    res.mkdir()
    (res / "notes.csv").write_text("a,b\n1,2\n")
    assert report.main([str(res), "--n-boot", "100", "--n-perm", "100"]) == 0
    text = (res / "report" / "index.md").read_text()
    assert "no rollout rows" in text and "training curves: skipped" in text and "video prediction grid: skipped" in text
    assert "0.91 ± 0.07" in text                          # the published numbers are still shown
    for link in _links(res / "report" / "index.html"):
        assert (res / "report" / link).is_file()
    assert report.main([str(tmp_path / "nope")]) == 2


def test_results_store_sweep_labels_and_modes(tmp_path):
    from uwmbench.store import ResultsStore

    root = tmp_path / "store"
    st = ResultsStore(root)
    rows = _rows({("uwm", "book_caddy"): (5, 4)}, sweep="main", variant="default")
    rows += _rows({("uwm", "book_caddy"): (4, 4)}, sweep="registers", variant="reg8")
    rows += _rows({("uwm", "book_caddy"): (3, 3)}, sweep="registers", variant="xattn")
    for mode, wins in (("policy", (2, 3)), ("inverse_dynamics", (4, 3))):
        for r in _rows({("uwm", "soup_cheese"): wins}, sweep="dynamics", variant="default"):
            rows.append({**r, "mode": mode})               # one run evaluates both modes
    st.add_rollouts(rows)
    res = report.load_results(root)
    assert len(res.rollouts) == len(rows)
    files = report.load_results(root / "rollouts")                # the same rows read as plain files
    assert len(files.rollouts) == len(rows)
    summary = tables.summarize_arms(res.rollouts, n_boot=100)
    reg = tables.paper_comparison(summary, "registers").data.set_index("variant")
    assert reg.loc["reg8", "paper_mean"] == 0.88 and reg.loc["xattn", "paper_mean"] == 0.78
    assert list(tables.ablation_table(summary, "registers").display.index) == ["reg8", "xattn"]
    dyn = tables.paper_comparison(summary, "dynamics").data.set_index("variant")
    assert dyn.loc["mode=inverse_dynamics", "ours_mean"] == pytest.approx(0.7)
    assert dyn.loc["mode=policy", "paper_mean"] == 0.26
    main = tables.paper_table(summary, "ood")
    assert main.display.loc["UWM", "Book-Caddy"] == "0.90 ± 0.10 (n=2/10)"


def test_single_seed_cells_use_a_wilson_interval_that_does_not_collapse():
    import pandas as pd

    from uwmbench.analysis.stats import estimate, wilson_interval
    from uwmbench.analysis.tables import fmt_cell

    lo, hi = wilson_interval(0, 20)
    assert abs(lo) < 1e-12 and abs(hi - 0.1611) < 1e-3    # 0/20 is not "certainly 0"
    lo, hi = wilson_interval(3, 20)
    assert abs(lo - 0.0524) < 1e-3 and abs(hi - 0.3604) < 1e-3
    df = pd.DataFrame({"task": "t", "seed": 0, "success": [True] * 3 + [False] * 17})
    e = estimate(df, n_boot=200)
    assert (e.ci_low, e.ci_high) == wilson_interval(3, 20) and e.n_seeds == 1
    assert fmt_cell(e.mean, e.std, e.n_seeds, e.n_rollouts, ci=(e.ci_low, e.ci_high)) == "0.15 [0.05, 0.36] (n=1/20)"
    assert fmt_cell(0.5, 0.1, 3, 60, ci=(0.4, 0.6)) == "0.50 ± 0.10 (n=3/60)"   # several seeds: the spread


def test_toy_scale_rows_are_not_compared_with_the_paper_and_checks_get_their_own_section(tmp_path):
    spec = {("uwm", "book_caddy"): (2, 3), ("dp", "book_caddy"): (1, 2)}
    toy = [{**r, "size": "tiny"} for r in _rows(spec, condition="ood")]
    mem = [{**r, "size": "tiny", "run_id": r["run_id"] + "/memorise"} for r in _rows(spec, sweep="memorise",
                                                                                     condition="id")]
    loose = [{**r, "sweep": "", "run_id": "eval-" + r["run_id"]} for r in _rows({("pad", "book_caddy"): (1, 1)},
                                                                                condition="ood")]
    tabs, skipped = tables.build_tables(pd.DataFrame(toy + mem + loose), n_boot=100, n_perm=100)
    assert "check_memorise" in tabs and not any(n.startswith("ablation_") for n in tabs)
    assert "Memorisation check" in tabs["check_memorise"].title
    assert "PAD" in tabs["main_ood"].display.index                  # rows outside any sweep: the main table's
    # the PAD rows (no size column value: comparable) are compared; the tiny arms are left out, and said so
    comp = tabs["compare_paper_main"].data
    assert set(comp["method"]) == {"pad"} and any("toy scale" in s and "UWM" in s for s in skipped)
    tabs, skipped = tables.build_tables(pd.DataFrame(toy + mem), n_boot=100, n_perm=100)
    assert not any(n.startswith("compare_paper_") for n in tabs) and "paper_main" in tabs
    assert any("not comparable with the paper" in s for s in skipped)
    small = [{**r, "size": "small"} for r in _rows(spec, condition="ood")]
    tabs, _ = tables.build_tables(pd.DataFrame(small), n_boot=100, n_perm=100)
    assert set(tabs["compare_paper_main"].data["method"]) == {"uwm", "dp"}
    # the report names its results folder relative to itself, never by a machine path
    res = tmp_path / "deep" / "results"
    res.mkdir(parents=True)
    pd.DataFrame(toy + mem).to_csv(res / "rows.csv", index=False)
    index = report.make_report(res, tmp_path / "rep", n_boot=100, n_perm=100)
    text = index.read_text() + (tmp_path / "rep" / "index.md").read_text()
    assert str(tmp_path) not in text and "../deep/results" in text
    assert "<h2>Memorisation check</h2>" in index.read_text() and "Ablation sweep ''" not in text
