"""The harness's error types for bad input: each message names the key, value or file; the
``uwmbench`` command prints one line and exits 2 (``UWMBENCH_DEBUG=1`` for the traceback). At the
bottom of the core layer: every module may raise them."""
from __future__ import annotations


class ConfigError(ValueError):
    """A bad config key or value (the message names it); ``uwmbench`` prints it on one line."""


class ConfigKeyError(ConfigError, KeyError):
    """A name given in the config (a task, a suite, ...) is unknown. Also a :class:`KeyError`, for
    callers that catch that; ``str()`` is the plain message (no KeyError quotes)."""

    __str__ = BaseException.__str__


class ConfigPathError(ConfigError, FileNotFoundError):
    """A path given in the config (``checkpoint=``, ``trainer.init_from=``, ``method.vae=``, ...)
    does not exist or is not what the key expects. Also a :class:`FileNotFoundError`, for callers
    that catch that."""


__all__ = ["ConfigError", "ConfigKeyError", "ConfigPathError"]
