"""The quickstart's own logic (the whole job is measured, not timed in tests: README): the
memorisation rollouts start from exactly the demos the trainer trained on, and the closing summary
says what was shown per method and mode."""
from __future__ import annotations

import pandas as pd

from test_data import dcfg, write_indexed_hdf5
from uwmbench.benchmarks.data import build_datasets
from uwmbench.methods.base import build_method
from uwmbench.quickstart import closing_summary, training_episodes


def test_memorisation_starts_are_the_training_demos(tmp_path):
    path = write_indexed_hdf5(tmp_path / "d.hdf5", lengths=(20, 20, 20, 20, 20))
    eps = training_episodes(tmp_path / "d.hdf5", 2 / 5)
    assert len(eps) == 3
    m = build_method("uwm", "tiny", vae="random:tiny")
    bundle = build_datasets(dcfg({"path": path}, val_fraction=2 / 5), m)
    demo = lambda ds: {int(ds[i]["obs"][0, 0, 1, 5, 5]) for i in range(len(ds))}   # channel 1 = demo index
    assert demo(bundle.train) == set(eps) and not (demo(bundle.val) & set(eps))


def test_closing_summary_says_what_was_shown(tmp_path):
    cfg = {"task": "libero_90:0", "episodes": 3, "method_size": "small", "train": {"steps": 300},
           "methods": ["uwm", "dp"], "evaluate": {"conditions": ["id", "ood"]}}
    rows = []
    for m, mem, idk in (("uwm", 2, 1), ("dp", 1, 0)):
        rows += [dict(method=m, sweep="memorise", condition="id", success=e < mem) for e in range(3)]
        rows += [dict(method=m, sweep="main", condition="id", success=e < idk) for e in range(4)]
        rows += [dict(method=m, sweep="main", condition="ood", success=False) for e in range(4)]
    modes = {"numbers": {"policy/rel_err_pos": 0.4, "policy/mean_action_rel_err_pos": 0.9,
                         "forward_dynamics/psnr": 20.0, "forward_dynamics/copy_last_psnr": 15.0}}
    text = closing_summary(cfg, pd.DataFrame(rows), modes, tmp_path / "report" / "index.html", "Time per stage: x", 5)
    assert "UWM: memorisation 2/3" in text and "ID 1/4 (new placements)" in text and "OOD 0/4" in text
    assert "DP: memorisation 1/3" in text
    assert "PSNR 20.0 dB (copy-last-frame baseline 15.0 dB)" in text
    assert "uwmbench quickstart task=book_caddy" in text and "Time per stage" in text
