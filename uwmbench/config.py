"""Hydra config composition shared by every subcommand that runs a config.

``load_config("train", ["method=dp", "trainer.steps=100"])`` composes ``configs/train.yaml``
with hydra overrides. An override of a key the yaml does not list is appended (``+key=value``)
and then checked by the section's typed schema, so a misspelt key fails at start-up with its
name and the list of valid keys.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

T = TypeVar("T")


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


def load_config(config_name: str, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException, OverrideParseException

    overrides = list(overrides)
    for o in overrides:
        if "=" not in o:
            raise ConfigError(f"override {o!r} is not of the form key=value")
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="uwmbench.configs", version_base="1.3"):
        for _ in range(len(overrides) + 1):
            try:
                cfg = compose(config_name=config_name, overrides=overrides)
                break
            except OverrideParseException as e:
                raise ConfigError(f"config {config_name!r}: could not parse an override ({e}); quote values with "
                                  f"special characters, e.g. data.sources=[{{path:'~/demos.hdf5'}}]") from None
            except ConfigCompositionException as e:
                msg = str(e)
                m = re.search(r"Could not override '([^']+)'", msg)
                if not m or "use +" not in msg:
                    raise ConfigError(f"config {config_name!r}: {msg}") from None
                key = m.group(1)
                overrides = ["+" + o if o.split("=", 1)[0] == key else o for o in overrides]
        else:  # pragma: no cover
            raise ConfigError(f"config {config_name!r}: could not apply overrides {overrides}")
    return cfg


def to_container(cfg: Any) -> Any:
    if isinstance(cfg, DictConfig) or OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def typed(section: Any, schema: type[T], where: str) -> T:
    """Build dataclass ``schema`` from a config section; unknown keys and wrong types raise
    :class:`ConfigError` naming ``where.key``."""
    values = dict(to_container(section) or {})
    fields = {f.name: f for f in dataclasses.fields(schema)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key(s) {[f'{where}.{k}' for k in unknown]}; valid keys under {where}: {sorted(fields)}")
    try:
        base = OmegaConf.structured(schema)
        merged = OmegaConf.merge(base, values)
        obj = OmegaConf.to_object(merged)
    except Exception as e:
        raise ConfigError(f"invalid value under {where}: {e}") from None
    return obj  # type: ignore[return-value]


def dump_yaml(obj: Any) -> str:
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    return OmegaConf.to_yaml(OmegaConf.create(to_container(obj)))


def error_message(e: BaseException) -> str:
    """An exception's message (a KeyError's without the quotes ``str(KeyError)`` adds)."""
    if isinstance(e, KeyError) and len(e.args) == 1:
        return str(e.args[0])
    return str(e)


def build_method_from_config(section: Any, where: str = "method"):
    """A :class:`~uwmbench.methods.base.Method` from a ``method`` config section (``name``,
    ``size`` and config keys). Bad names, keys and values raise :class:`ConfigError`; a weights
    path that does not exist (``method.vae``, ``method.pretrained_encoder``)
    :class:`ConfigPathError` - the methods package raises plain KeyError / TypeError /
    ValueError / FileNotFoundError and knows nothing of the CLI."""
    from .methods.base import Method, get_method_class, make_config

    if isinstance(section, Method):
        return section
    d = dict(to_container(section) or {})
    name = d.pop("name", None)
    if not name:
        raise ConfigError(f"{where}.name is missing (e.g. {where}=uwm)")
    size = d.pop("size", None)
    try:
        cfg = make_config(str(name), size, d)
        cls = get_method_class(str(name))
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(error_message(e)) from None
    try:
        return cls(cfg)
    except FileNotFoundError as e:
        raise ConfigPathError(f"{where}: {error_message(e)}") from None
    except ValueError as e:  # config combinations a method checks when it is built (e.g. image_size > resize)
        raise ConfigError(f"{where}: {error_message(e)}") from None
