"""The UWM paper's published success rates, shipped as data (``paper_numbers.csv``).

Columns: ``table`` (main | registers | objective | cotraining | dynamics), ``method``,
``variant`` (ablation arm, empty for the main table), ``task`` (short name, or ``average``),
``condition`` (``ood`` for the LIBERO main table, ``real`` for real-robot ablations, empty where
the paper does not say), ``mean``, ``std`` (empty where the paper gives none), ``setting``,
``source``.

The main table's ``Average`` column is the mean of the five task means ± their population
standard deviation across tasks (ddof=0): e.g. UWM (0.91, 0.93, 0.80, 0.68, 0.65) -> 0.79 ± 0.11.
"""
from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

import pandas as pd

PAPER_CSV = "paper_numbers.csv"
PAPER_TABLES = ("main", "registers", "objective", "cotraining", "dynamics")
_COLUMNS = ["table", "method", "variant", "task", "condition", "mean", "std", "setting", "source"]


@lru_cache(maxsize=1)
def _load_cached(path: str | None) -> pd.DataFrame:
    if path is None:
        with resources.files("uwmbench.analysis").joinpath(PAPER_CSV).open("r") as f:
            df = pd.read_csv(f, dtype={"variant": str, "condition": str}, keep_default_na=False,
                             na_values={"mean": [""], "std": [""]})
        where = f"uwmbench.analysis/{PAPER_CSV}"
    else:
        df = pd.read_csv(path, dtype={"variant": str, "condition": str}, keep_default_na=False,
                         na_values={"mean": [""], "std": [""]})
        where = path
    missing = [c for c in _COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{where}: missing columns {missing} (have {list(df.columns)})")
    bad = sorted(set(df["table"]) - set(PAPER_TABLES))
    if bad:
        raise ValueError(f"{where}: unknown table name(s) {bad}; expected one of {PAPER_TABLES}")
    df["mean"] = df["mean"].astype(float)
    df["std"] = df["std"].astype(float)
    return df[_COLUMNS]


def load_paper_numbers(table: str | None = None, path: str | Path | None = None) -> pd.DataFrame:
    """Published numbers as a DataFrame (a copy), optionally one ``table`` only."""
    df = _load_cached(None if path is None else str(path)).copy()
    if table is not None:
        if table not in PAPER_TABLES:
            raise ValueError(f"paper table {table!r} unknown; expected one of {PAPER_TABLES}")
        df = df[df["table"] == table].reset_index(drop=True)
    return df


# sweep name in the results store -> paper table with the same ablation
SWEEP_TO_PAPER_TABLE = {
    "main": "main",
    "registers": "registers", "register": "registers", "conditioning": "registers",
    "objective": "objective", "objectives": "objective",
    "cotrain": "cotraining", "cotraining": "cotraining",
    "dynamics": "dynamics", "inverse_dynamics": "dynamics",
}

# variant labels of uwmbench/configs/sweep/*.yaml -> the paper's variant names, per paper table
VARIANT_ALIASES = {
    "registers": {"reg8": "registers=8", "reg4": "registers=4", "reg0": "registers=0",
                  "xattn": "conditioning=cross_attention"},
    "objective": {"future": "objective=future", "current": "objective=current", "none": "objective=none"},
    "cotraining": {"robotvideo": "cotrain=robot_video", "extvideo": "cotrain=internet_video",
                   "novideo": "cotrain=none"},
    "dynamics": {},
    "main": {},
}


def paper_variant(table: str, variant: str) -> str:
    """Our variant label as the paper's table names it (unchanged when no alias is known)."""
    return VARIANT_ALIASES.get(table, {}).get(variant, variant)
