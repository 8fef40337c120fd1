"""uwmbench uwmbench/benchmarks/libero: the LIBERO benchmark (tasks, environments, scripted expert, collection).

Importing this package quiets one third-party message: robosuite warns on every import (so once in
every simulator worker process) that it has no private macro file. An empty
``robosuite.macros_private`` module is registered when none is installed, which is what robosuite's
own ``setup_macros.py`` provides minus the copy: every macro keeps robosuite's default value. A
user's real private macro file, when installed, is imported as usual and wins.
"""
from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path


def _quiet_robosuite_macros() -> None:
    name = "robosuite.macros_private"
    if name in sys.modules or "robosuite" in sys.modules:
        return
    try:
        spec = importlib.util.find_spec("robosuite")
    except (ImportError, ValueError):
        return
    if spec is None or not spec.submodule_search_locations:
        return
    if any((Path(p) / "macros_private.py").is_file() for p in spec.submodule_search_locations):
        return  # the user's own private macros: robosuite imports them itself
    sys.modules[name] = types.ModuleType(name, "empty private macros registered by uwmbench (robosuite defaults)")


_quiet_robosuite_macros()
