"""Hydra config composition shared by every subcommand that runs a config.

``load_config("train", ["method=dp", "trainer.steps=100"])`` composes ``uwmbench/configs/train.yaml``
with hydra overrides against its typed schema (``uwmbench/schemas.py``, stored in hydra's
ConfigStore): a misspelt key or an ill-typed value fails at composition with its name and the
list of valid keys, the same way in every command, in ``--dry-run`` and under ``hydra -m``.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from . import schemas
from .errors import ConfigError, ConfigPathError

T = TypeVar("T")


_SCHEMAS = {"train": "TrainConfig", "run": "RunConfig", "evaluate": "EvaluateConfig", "tune": "TuneConfig"}


def register_schemas() -> None:
    """Store the command schemas (``<name>_schema``) and one ``method/<name>`` entry per
    registered method (its generated schema, :func:`uwmbench.schemas.method_schema`) in hydra's
    ConfigStore. Idempotent; called by :func:`load_config` and by ``uwmbench/sweeps/hydra_run.py``, so a
    method registered by a plugin is selectable as ``method=<name>`` everywhere."""
    from hydra.core.config_store import ConfigStore

    from uwmbench.methods import registered_methods

    cs = ConfigStore.instance()
    for cfg_name, cls_name in _SCHEMAS.items():
        cs.store(name=f"{cfg_name}_schema", node=getattr(schemas, cls_name))
    for name, cls in registered_methods().items():
        node = OmegaConf.structured(schemas.method_schema(cls.config_class))
        node.name = name
        cs.store(group="method", name=name, node=node)


def _valid_keys(config_name: str, key: str, overrides: list[str]) -> list[str]:
    """The keys a config has next to ``key`` (for an error message)."""
    from hydra import compose
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    groups = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in ("method",)]
    try:
        base = compose(config_name=config_name, overrides=groups)
        node = OmegaConf.select(base, parent) if parent else base
        return sorted(node.keys()) if isinstance(node, DictConfig) else []
    except Exception:
        return []


def load_config(config_name: str, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose ``uwmbench/configs/<config_name>.yaml`` with hydra overrides, strictly: an unknown key, an
    ill-typed value or a value its schema refuses raises :class:`ConfigError` naming the key
    (and the valid keys). The result is checked once more against the typed schemas (method
    configs included), so ``+key=value`` cannot smuggle a key in either."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException, OverrideParseException

    overrides = list(overrides)
    for o in overrides:
        if "=" not in o:
            raise ConfigError(f"override {o!r} is not of the form key=value")
    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="uwmbench.configs", version_base="1.3"):
        try:
            cfg = compose(config_name=config_name, overrides=overrides)
        except OverrideParseException as e:
            raise ConfigError(f"config {config_name!r}: could not parse an override ({e}); quote values with "
                              f"special characters, e.g. data.sources=[{{path:'~/demos.hdf5'}}]") from None
        except ConfigCompositionException as e:
            raise ConfigError(_composition_message(config_name, e, overrides)) from None
        except ConfigError:
            raise
        except Exception as e:  # a schema's own check (__post_init__) or a validation error
            raise ConfigError(f"config {config_name!r}: {_first_line(e)}") from None
    check_config(config_name, cfg)
    return cfg


def _first_line(e: BaseException) -> str:
    cause = e
    while cause.__cause__ is not None and not isinstance(cause, ConfigError):
        cause = cause.__cause__
    msg = error_message(cause).strip().splitlines()
    return msg[0] if msg else type(cause).__name__


def _composition_message(config_name: str, e: BaseException, overrides: list[str]) -> str:
    msg = str(e)
    m = re.search(r"Could not (?:override|append to config)[^']*'([^']+)'", msg) or \
        re.search(r"Key '([^']+)' (?:is )?not in", msg)
    if m and ("append" in msg or "not in struct" in msg or "No match" in msg or "not in" in msg):
        key = m.group(1)
        valid = _valid_keys(config_name, key, overrides)
        where = key.rsplit(".", 1)[0] if "." in key else config_name
        hint = f"; valid keys under {where}: {valid}" if valid else ""
        return f"config {config_name!r}: unknown key {key!r}{hint}"
    m = re.search(r"Error merging override (\S+)", msg)
    if m:
        return f"config {config_name!r}: {m.group(1)}: {_first_line(e)}"
    if "In 'method'" in msg or "Could not find 'method/" in msg:
        from uwmbench.methods import registered_methods
        return f"config {config_name!r}: unknown method ({msg.splitlines()[0]}); registered: {', '.join(registered_methods())}"
    return f"config {config_name!r}: {_first_line(e)}"


def check_config(config_name: str, cfg: Any) -> None:
    """The checks composition cannot do: the whole config as its typed schema (runs the
    schemas' own range checks), a method section as its method's schema (strict: no extra
    keys), data sources entry by entry."""
    schema_name = _SCHEMAS.get(config_name)
    if schema_name is not None:
        from . import schemas
        try:
            typed_cfg = OmegaConf.merge(OmegaConf.structured(getattr(schemas, schema_name)), cfg)
        except Exception as e:
            raise ConfigError(f"config {config_name!r}: {_first_line(e)}") from None
        _check_nodes(config_name, typed_cfg, "")
    if isinstance(cfg, DictConfig) and cfg.get("method") is not None:
        check_method_section(cfg.method, "method")


def _check_nodes(config_name: str, node: Any, path: str) -> None:
    """Build every typed section (innermost first) so that its own checks run; an error names
    the section's full path (``finetune.trainer.steps=-5 ...``, not ``trainer.steps``)."""
    if not isinstance(node, DictConfig):
        return
    for k in list(node.keys()):
        try:
            child = node._get_node(k)
        except Exception:
            continue
        if isinstance(child, DictConfig) and not child._is_none() and not child._is_missing():
            _check_nodes(config_name, child, f"{path}.{k}" if path else str(k))
    typ = OmegaConf.get_type(node)
    if not (isinstance(typ, type) and dataclasses.is_dataclass(typ)) or path == "method":
        return
    try:
        OmegaConf.to_object(node)
    except ConfigError as e:
        msg = str(e)
        last = path.rsplit(".", 1)[-1] if path else ""
        if last and msg.startswith(last + ".") and "." in path:
            msg = path.rsplit(".", 1)[0] + "." + msg
        raise ConfigError(f"config {config_name!r}: {msg}") from None
    except Exception as e:
        raise ConfigError(f"config {config_name!r}: {path or config_name}: {_first_line(e)}") from None


def check_method_section(section: Any, where: str = "method") -> dict[str, Any]:
    """A method section (``name``, ``size``, keys) merged strictly into its method's schema;
    returns the explicitly set keys (``None`` = the size preset's value dropped)."""
    from uwmbench.methods import get_method_class
    from .schemas import method_schema
    d = dict(to_container(section) or {})
    name = d.get("name")
    if not name:
        raise ConfigError(f"{where}.name is missing (e.g. {where}=uwm)")
    try:
        cls = get_method_class(str(name))
    except KeyError as e:
        raise ConfigError(error_message(e)) from None
    schema = method_schema(cls.config_class)
    valid = {f.name for f in dataclasses.fields(schema)}
    # null = not set: keys another method's schema left at null (after `method.name=` was changed) are not an error
    d = {k: v for k, v in d.items() if k in valid or v is not None}
    unknown = sorted(set(d) - valid)
    if unknown:
        raise ConfigError(f"unknown config key(s) {[f'{where}.{k}' for k in unknown]}; valid keys under {where} "
                          f"({name}): {sorted(valid)}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), d)
    except Exception as e:
        raise ConfigError(f"{where}: {_first_line(e)}") from None
    out = OmegaConf.to_container(merged, resolve=True)
    return {k: v for k, v in out.items() if v is not None}


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


def typed_args(argv: list[str], schema: type[T], where: str) -> T:
    """``key=value`` command-line arguments (lists as ``key=[a,b]``) as dataclass ``schema``: a
    command without a hydra config; an unknown key, a wrong type or a malformed argument raises
    :class:`ConfigError` naming it."""
    bad = [a for a in argv if "=" not in a]
    if bad:
        raise ConfigError(f"expected key=value arguments, got {bad}; keys of {where}: "
                          f"{[f.name for f in dataclasses.fields(schema)]}")
    try:
        raw = OmegaConf.to_container(OmegaConf.from_dotlist(list(argv)), resolve=True)
    except Exception as e:
        raise ConfigError(f"arguments of {where}: {_first_line(e)}") from None
    return typed(raw, schema, where)


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
    from uwmbench.methods.base import Method, get_method_class, make_config

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
