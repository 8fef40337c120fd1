"""The report as a reader sees it: its index page opened in headless Chromium (Debian's chromium and
chromium-driver, installed by `make test`) renders its tables and images, every file it links or
embeds exists, the browser logs no error, and the page shows no machine path and no empty name.

The report is built from a results store made here the way the quickstart makes one: a main sweep
of toy-scale (size tiny) arms with ID and OOD rows, memorisation-check rows, training curves, a
UWM-modes folder (numbers, prediction arrays, a predicted clip) and a rollout video.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from uwmbench.analysis import report

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _need_browser():
    ok = Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()
    try:
        import selenium  # noqa: F401
    except ImportError:
        ok = False
    if not ok:
        if os.environ.get("CI"):
            pytest.fail("Chromium, ChromeDriver or selenium missing: `make test` installs them (UWMBENCH_BROWSER=1 "
                        "bash scripts/setup.sh)")
        pytest.skip("no Chromium/ChromeDriver/selenium here (make test installs them)")


def _store(root: Path) -> Path:
    from uwmbench.store import ResultsStore

    rows = []
    for m, wins in (("uwm", {"id": 2, "ood": 1}), ("dp", {"id": 1, "ood": 0})):
        for cond, k in wins.items():
            for e in range(4):
                rows.append(dict(run_id=f"quickstart/{m}", sweep="main", cell="", method=m, variant="default",
                                 task="book_caddy", condition=cond, seed=0, episode=e, rollout_seed=e,
                                 success=e < k, steps=100, size="tiny", checkpoint="c",
                                 video=str(root / "v.mp4") if e == 0 and cond == "id" else ""))
        for e in range(3):
            rows.append(dict(run_id=f"quickstart/{m}/memorise", sweep="memorise", cell="", method=m,
                             variant="default", task="libero_90:0", condition="id", seed=0, episode=e,
                             rollout_seed=e, success=e < 2, steps=80, size="tiny", checkpoint="c", video=""))
    import imageio.v2 as imageio

    root.mkdir(parents=True)
    imageio.mimsave(root / "v.mp4", [np.full((32, 32, 3), i * 20, np.uint8) for i in range(8)], fps=4)
    store = root / "results"
    ResultsStore(store).add_rollouts(rows)
    st = np.arange(0, 300, 10)
    for m in ("uwm", "dp"):
        (store / "curves" / m).mkdir(parents=True)
        pd.DataFrame({"step": st, "loss": np.exp(-st / 100), "val/open_loop_rel_err_pos": np.exp(-st / 200)}).to_csv(
            store / "curves" / m / "metrics.csv", index=False)
    modes = store / "modes" / "uwm"
    modes.mkdir(parents=True)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (4, 16, 16, 3), dtype=np.uint8)
    np.savez(modes / "forward_dynamics.npz", pred=frames, true=frames[::-1])
    imageio.mimsave(modes / "video_prediction.gif", list(frames), format="GIF", duration=0.4)
    n = {"policy/rel_err_pos": 0.4, "policy/mean_action_rel_err_pos": 0.9, "forward_dynamics/psnr": 20.0,
         "forward_dynamics/copy_last_psnr": 15.0, "forward_dynamics/latent_mse": 0.01,
         "forward_dynamics/copy_last_latent_mse": 0.05, "video_prediction/psnr": 18.0,
         "video_prediction/copy_last_psnr": 15.0, "inverse_dynamics/rel_err_pos": 0.3,
         "inverse_dynamics/mean_action_rel_err_pos": 0.9}
    (modes / "modes.json").write_text(json.dumps({"method": "uwm", "windows": "16 windows of the run's validation "
                                                  "episodes", "numbers": n, "files": {"clip": "video_prediction.gif"}}))
    return store


def test_report_index_renders_in_chromium(tmp_path):
    _need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    store = _store(tmp_path / "work")
    out = tmp_path / "work" / "report"
    assert report.main([str(store), "--out", str(out), "--n-boot", "200", "--n-perm", "200"]) == 0
    index = out / "index.html"

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,2000"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        driver.get(index.as_uri())
        driver.execute_script("return document.readyState")
        tables = driver.execute_script(
            "return Array.from(document.querySelectorAll('table')).map(t => t.querySelectorAll('tr').length)")
        assert len(tables) >= 5 and min(tables) >= 2, tables          # every table has a header and rows
        driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "Promise.all(Array.from(document.images).map(i => i.complete ? 1 : new Promise(r => {"
            "i.onload = i.onerror = r;}))).then(() => done(1));")
        imgs = driver.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
        assert len(imgs) >= 4, imgs                                   # figures, prediction grid, predicted clip
        broken = [src for src, complete, w in imgs if not (complete and w > 0)]
        assert not broken, f"images that did not render: {broken}"
        refs = driver.execute_script(
            "return Array.from(document.querySelectorAll('[src],[href]')).map(e => e.getAttribute('src') || "
            "e.getAttribute('href'))")
        missing = [r for r in refs if not r.startswith(("http", "#")) and not (out / r).is_file()]
        assert not missing, f"the page links files that are not there: {missing}"
        assert any(r.endswith(".mp4") for r in refs) and any(r.endswith(".gif") for r in refs)
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        text = driver.find_element("tag name", "body").text
        headings = driver.execute_script(
            "return Array.from(document.querySelectorAll('h1,h2,h3')).map(h => h.textContent)")
    finally:
        driver.quit()
    assert str(tmp_path) not in text and str(Path.home()) + "/" not in text   # no machine paths
    assert "''" not in text and all(h.strip() for h in headings)              # no empty names
    assert "Memorisation check" in headings and "World-model modes" in headings
    assert not any(h.startswith("Ours vs published") for h in headings)       # toy scale: no comparison ...
    assert "not comparable with the paper" in text                             # ... and the page says why
    assert "Published numbers (UWM paper)" in headings                         # shown for context
