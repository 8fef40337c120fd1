"""Methods: UWM, the paper's baselines (DP, PAD, GR1), a worked behaviour-cloning example,
and any method a user registers. Importing ``uwmbench.methods`` registers the built-ins;
extra modules are imported from the ``UWMBENCH_PLUGINS`` environment variable
(comma-separated module names) and from the ``uwmbench.methods`` entry-point group."""
from __future__ import annotations

import importlib
import os

from .base import (  # noqa: F401
    ACTION_FREE, ALL_CAPABILITIES, FORWARD_DYNAMICS, INVERSE_DYNAMICS, POLICY, VIDEO_PREDICTION,
    ActionNormalizer, CapabilityError, Method, MethodConfig, build_method, config_to_dict,
    get_method_class, make_config, method_from_config, register_method, registered_methods,
)

BUILTIN_METHODS = ("uwm", "dp", "pad", "gr1", "bc")
_loaded = False


def _load_builtin_methods() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    here = os.path.dirname(__file__)
    for mod in BUILTIN_METHODS:
        if os.path.exists(os.path.join(here, f"{mod}.py")) or os.path.isdir(os.path.join(here, mod)):
            importlib.import_module(f"{__name__}.{mod}")
    for mod in filter(None, (m.strip() for m in os.environ.get("UWMBENCH_PLUGINS", "").split(","))):
        importlib.import_module(mod)
    try:
        from importlib.metadata import entry_points
        for ep in entry_points(group="uwmbench.methods"):
            ep.load()
    except Exception as e:  # a broken plugin must not hide the built-ins, but must be visible
        import warnings
        warnings.warn(f"uwmbench: failed to load a method plugin: {e}")
