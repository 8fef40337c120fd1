"""Methods: UWM, the paper's baselines (DP, PAD, GR1), a worked behaviour-cloning example,
and any method a user registers. The registry (``registered_methods()``) imports every module
of this package, then the modules named in the ``UWMBENCH_PLUGINS`` environment variable
(comma-separated) and the ``uwmbench.methods`` entry-point group. A registered method's config
dataclass is its config: ``method=<name>`` works in train, run, sweep, tune and ``hydra -m``."""
from __future__ import annotations

from .base import (  # noqa: F401
    ACTION_FREE, ALL_CAPABILITIES, FORWARD_DYNAMICS, INVERSE_DYNAMICS, POLICY, VIDEO_PREDICTION,
    ActionNormalizer, CapabilityError, Method, MethodConfig, build_method, config_to_dict,
    get_method_class, load_methods, make_config, method_from_config, register_method, registered_methods,
)
