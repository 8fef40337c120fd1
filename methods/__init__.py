"""Methods: UWM, the paper's baselines (DP, PAD, GR1), a worked behaviour-cloning example,
and any method a user registers. The registry (``registered_methods()``) imports every module
of this package, then the modules named in the ``UWMBENCH_PLUGINS`` environment variable
(comma-separated) and the ``uwmbench.methods`` entry-point group. A registered method's config
dataclass is its config: ``method=<name>`` works in train, run, sweep, tune and ``hydra -m``."""
from __future__ import annotations
import pkgutil

if __name__ != "uwmbench.methods":  # e.g. `import methods` with the repository root on sys.path
    raise ImportError("the folder `methods` is the package `uwmbench.methods`: import it as "
                      f"`import uwmbench.methods` (it was imported as {__name__!r}, which would load a second "
                      "copy of its modules; install the repository with `pip install -e .`)")

import importlib
import os

from .base import (  # noqa: F401
    ACTION_FREE, ALL_CAPABILITIES, FORWARD_DYNAMICS, INVERSE_DYNAMICS, POLICY, VIDEO_PREDICTION,
    ActionNormalizer, CapabilityError, Method, MethodConfig, build_method, config_to_dict,
    get_method_class, make_config, method_from_config, register_method, registered_methods,
)

_loaded = False


def _load_builtin_methods() -> None:
    """Import every module of this package (a new ``methods/<name>.py`` that calls
    ``@register_method`` is registered without being listed anywhere), then the plugins named in
    ``UWMBENCH_PLUGINS`` (comma-separated module names) and the ``uwmbench.methods`` entry points."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    for mod in filter(None, (m.strip() for m in os.environ.get("UWMBENCH_PLUGINS", "").split(","))):
        try:
            importlib.import_module(mod)
        except ImportError as e:
            raise ImportError(f"UWMBENCH_PLUGINS names {mod!r}, which cannot be imported: {e}") from e
    try:
        from importlib.metadata import entry_points
        eps = list(entry_points(group="uwmbench.methods"))
    except Exception:  # pragma: no cover
        eps = []
    for ep in eps:
        try:
            ep.load()
        except Exception as e:  # a broken plugin must not hide the built-ins, but must be visible
            import warnings
            warnings.warn(f"uwmbench: failed to load the method plugin {ep.name!r} ({ep.value}): {e}")
