"""The method contract shared by UWM, the baselines and any method a user adds.

A *method* is a ``torch.nn.Module`` subclass of :class:`Method`, registered by name with
:func:`register_method`, with a typed config dataclass (subclass of :class:`MethodConfig`).
The trainer, evaluator, sweeps and analysis only use what is defined here.

Batch format (produced by ``uwmbench.benchmarks.data``, consumed by ``compute_loss``)
------------------------------------------------------------------------------------
``obs``             uint8  (B, V, To, 3, H, W)  current frames, views in ``cfg.views`` order
``action``          float  (B, Ha, A)           raw (env-unit) actions; zeros where absent
``action_mask``     bool   (B,)                 True where the sample has real actions
``next_obs``        uint8  (B, V, Tn, 3, H, W)  future frames (optional if latents given)
``next_obs_latent`` float  (B, V, Tn, C, h, w)  cached VAE latents of ``next_obs`` (optional)
``obs_latent``      float  (B, V, To, C, h, w)  cached VAE latents of ``obs`` (optional)
``crop_offset``     int64  (B, 2)               with cached latents: the ``(oy, ox)`` crop (in the
                                                resized image) they were encoded from; methods crop
                                                their image inputs there (optional)

Observation format for inference (``predict_action`` etc.): a dict with at least ``obs``
(uint8, (B, V, To, 3, H, W)); images are as stored in the dataset (LIBERO orientation after
the loader's optional flip).
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import pkgutil
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, List, Optional

from omegaconf import OmegaConf

import torch
from torch import nn

# ----------------------------------------------------------------------------- capabilities
POLICY = "policy"                      # predict_action(obs)
FORWARD_DYNAMICS = "forward_dynamics"  # predict_next_obs(obs, action)
VIDEO_PREDICTION = "video_prediction"  # predict_next_obs(obs, action=None)
INVERSE_DYNAMICS = "inverse_dynamics"  # infer_action(obs, next_obs)
ACTION_FREE = "action_free_data"       # compute_loss accepts samples with action_mask False
ALL_CAPABILITIES = (POLICY, FORWARD_DYNAMICS, VIDEO_PREDICTION, INVERSE_DYNAMICS, ACTION_FREE)

_CAPABILITY_METHODS = {
    FORWARD_DYNAMICS: "predict_next_obs",
    VIDEO_PREDICTION: "predict_next_obs",
    INVERSE_DYNAMICS: "infer_action",
}


class CapabilityError(NotImplementedError):
    """Raised when a method is asked for something it does not declare."""


# ----------------------------------------------------------------------------- config
@dataclass
class MethodConfig:
    """Fields every method shares. Subclasses add their own; ``size`` picks a preset."""

    name: str = "???"
    size: str = "paper"  # a key of the class' PRESETS ("paper", "tiny", ...)
    views: tuple[str, ...] = ("agentview_rgb", "eye_in_hand_rgb")
    obs_frames: int = 2
    next_frames: int = 2
    action_horizon: int = 16
    action_dim: int = 7
    # image pipeline: stored frames -> resize -> crop (random in training, center at eval)
    resize: int = 240
    image_size: int = 224
    color_jitter: float = 0.2  # brightness/contrast/saturation; hue uses the same value
    # action normalisation: none | minmax | gaussian (statistics come from the dataset)
    action_norm: str = "none"
    # image encoder init (ResNet-18 / ViT-B/32): "imagenet" (torchvision IMAGENET1K_V1 weights,
    # downloaded once into the torch hub cache; the paper presets), "none" (random), or a local
    # weights file (.pth/.pt/.safetensors)
    pretrained_encoder: str | None = "none"

    # size presets: {"paper": {...}, "tiny": {...}} of field overrides
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}


# model-hub VAEs -> a randomly initialised copy of the same architecture (no download)
OFFLINE_VAE_ARCH = {"stabilityai/sdxl-vae": "random:sdxl"}


# ----------------------------------------------------------------------------- normaliser
class ActionNormalizer(nn.Module):
    """Maps env-unit actions to the network's range and back; statistics live in buffers so
    that they travel with every checkpoint."""

    MODES = ("none", "minmax", "gaussian")

    def __init__(self, action_dim: int, mode: str = "none"):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"action_norm={mode!r} is not one of {self.MODES}")
        self.mode = mode
        self.register_buffer("offset", torch.zeros(action_dim))
        self.register_buffer("scale", torch.ones(action_dim))

    @torch.no_grad()
    def set_stats(self, stats: dict[str, Any]) -> None:
        """``stats`` holds numpy/tensor arrays ``min``, ``max``, ``mean``, ``std``."""
        def t(k):
            return torch.as_tensor(stats[k], dtype=torch.float32).reshape(-1).to(self.offset.device)
        if self.mode == "minmax":
            lo, hi = t("min"), t("max")
            self.offset.copy_((hi + lo) / 2)
            self.scale.copy_(((hi - lo) / 2).clamp_min(1e-6))
        elif self.mode == "gaussian":
            self.offset.copy_(t("mean"))
            self.scale.copy_(t("std").clamp_min(1e-6))

    def normalize(self, a: torch.Tensor) -> torch.Tensor:
        return (a - self.offset) / self.scale

    def unnormalize(self, a: torch.Tensor) -> torch.Tensor:
        return a * self.scale + self.offset


# ----------------------------------------------------------------------------- method
class Method(nn.Module):
    """Base class of every method. Subclasses set ``name``, ``config_class`` and
    ``capabilities`` and implement ``compute_loss`` and ``predict_action``; optional
    capabilities are implemented only if declared."""

    name: ClassVar[str] = "?"
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    capabilities: ClassVar[frozenset[str]] = frozenset({POLICY})

    def __init__(self, cfg: MethodConfig):
        super().__init__()
        self.cfg = cfg
        self.action_normalizer = ActionNormalizer(cfg.action_dim, cfg.action_norm)

    # --- required -------------------------------------------------------------------
    def compute_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    @torch.no_grad()
    def predict_action(self, obs: dict[str, torch.Tensor], generator: Generators = None) -> torch.Tensor:
        """(B, action_horizon, action_dim) actions in env units.

        ``generator`` (optional in a subclass's signature): where a sampling method draws its
        noise, through :func:`sample_noise`: a ``torch.Generator``, or a list of them, one per batch
        element. The evaluator passes one per rollout, seeded from the rollout's seed and env step,
        so a rollout's actions do not depend on which other rollouts share its batch, nor on the
        number of workers. A deterministic method ignores it."""
        raise NotImplementedError

    def batch_keys(self, cached_latents: bool = True) -> set[str] | tuple[str, ...]:
        """Batch keys this method reads in training (the data pipeline loads only these).
        ``*_latent`` keys (``obs_latent``, ``next_obs_latent``) are served from the latent cache
        of :attr:`latent_encoder`; with ``cached_latents=False`` the pipeline serves the image
        keys (``obs``/``next_obs``) instead and the method encodes them on the fly."""
        return {"obs", "action", "action_mask"}

    @property
    def latent_encoder(self):
        """The frozen image -> latent encoder (``methods.latent_encoder.LatentEncoder``) whose
        latents this method reads (``*_latent`` batch keys, cached by the data pipeline) and whose
        ``decode`` turns its predictions into frames; ``None`` for pixel-only methods. Subclasses
        set it with ``self.latent_encoder = LatentEncoder(...)``."""
        return self._modules.get("latent_encoder")

    @latent_encoder.setter
    def latent_encoder(self, value) -> None:  # None (a Module is registered by nn.Module.__setattr__)
        self._modules["latent_encoder"] = value

    @classmethod
    def capabilities_for(cls, cfg: MethodConfig) -> frozenset[str]:
        """What an instance built from ``cfg`` can do (``self.capabilities`` after ``__init__``):
        the class' declared set unless a config switch narrows it (UWM without a latent
        objective has no dynamics modes). Callers check this before training, not after."""
        return frozenset(cls.capabilities)

    # --- optional (declare in ``capabilities``) ----------------------------------------
    def predict_next_obs(self, obs: dict[str, torch.Tensor], action: torch.Tensor | None = None) -> torch.Tensor:
        """Forward dynamics (action given) or video prediction (action None). Returns the
        prediction in the method's own space: latents (B, V, Tn, C, h, w) when it has a
        :attr:`latent_encoder` (UWM, PAD), else frames (B, V, Tn, 3, H, W) (GR1: float in [0, 1]);
        :meth:`predict_next_frames` gives uint8 frames for every method."""
        raise CapabilityError(f"{self.name} does not declare {FORWARD_DYNAMICS}/{VIDEO_PREDICTION}")

    @torch.no_grad()
    def predict_next_frames(self, obs: dict[str, torch.Tensor], action: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`predict_next_obs` as uint8 frames (B, V, Tn, 3, H, W) for every method (latents
        are decoded with :attr:`latent_encoder`): the one unit to compare methods in."""
        pred = self.predict_next_obs(obs, action)
        enc = self.latent_encoder
        if enc is not None:
            return enc.decode(pred)
        if pred.dtype.is_floating_point:  # pixels in [0, 1]
            return (pred.float() * 255.0).round().clamp(0, 255).to(torch.uint8)
        return pred

    def infer_action(self, obs: dict[str, torch.Tensor], next_obs: torch.Tensor) -> torch.Tensor:
        """Inverse dynamics: actions (env units) that lead from ``obs`` to ``next_obs``
        (uint8 frames (B, V, Tn, 3, H, W) or latents (B, V, Tn, C, h, w))."""
        raise CapabilityError(f"{self.name} does not declare {INVERSE_DYNAMICS}")

    def validation_metrics(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """Per-mode validation numbers (lower is better). Default: the training loss terms."""
        with torch.no_grad():
            _, metrics = self.compute_loss(batch)
        return {f"val/{k}": v for k, v in metrics.items()}

    # --- helpers ------------------------------------------------------------------------
    @classmethod
    def offline_overrides(cls, size: str = "paper") -> dict[str, Any]:
        """Config overrides that build ``size`` without any download: a model-hub VAE becomes a
        randomly initialised copy of its architecture (``random:sdxl``) and an ImageNet encoder
        starts from random weights (``pretrained_encoder="none"``). For parameter counts and
        speed measurements only."""
        ccls = cls.config_class
        fields = {f.name: f for f in dataclasses.fields(ccls)}
        values = {k: f.default for k, f in fields.items() if f.default is not dataclasses.MISSING}
        values.update(ccls.PRESETS.get(size, {}))
        out: dict[str, Any] = {}
        if values.get("vae") in OFFLINE_VAE_ARCH:
            out["vae"] = OFFLINE_VAE_ARCH[values["vae"]]
        if str(values.get("pretrained_encoder") or "").strip().lower() == "imagenet":
            out["pretrained_encoder"] = "none"
        return out

    @classmethod
    def supports(cls, capability: str) -> bool:
        return capability in cls.capabilities

    def parameter_counts(self) -> tuple[int, int]:
        """(trainable, frozen) parameter counts."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in self.parameters() if not p.requires_grad)
        return trainable, frozen

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    def check_action_free(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Returns the action mask; refuses action-free samples unless declared."""
        mask = batch.get("action_mask")
        if mask is None:
            mask = torch.ones(batch["obs"].shape[0], dtype=torch.bool, device=batch["obs"].device)
        mask = mask.bool()
        if not bool(mask.all()) and ACTION_FREE not in self.capabilities:
            raise CapabilityError(
                f"method {self.name!r} cannot train on action-free samples "
                f"({int((~mask).sum())} of {mask.numel()} in this batch have action_mask=False)")
        return mask

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")


# ----------------------------------------------------------------------------- registry
_REGISTRY: dict[str, type[Method]] = {}


Generators = Optional["torch.Generator | list[torch.Generator] | tuple[torch.Generator, ...]"]


def sample_noise(shape: tuple[int, ...], generator: Generators = None,
                 device: "torch.device | str | None" = None) -> torch.Tensor:
    """Standard normal noise of ``shape`` on ``device``. ``generator``: None (torch's global RNG,
    drawn on ``device``), one ``torch.Generator`` (drawn on its device), or a sequence of
    ``shape[0]`` generators: element i is drawn from generator i alone, so it is the same
    whatever else is in the batch (a list of CPU generators gives the same numbers on every device)."""
    if generator is None:
        return torch.randn(shape, device=device)
    if isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, device=generator.device).to(device)
    gens = list(generator)
    if len(gens) != shape[0]:
        raise ValueError(f"sample_noise: {len(gens)} generators for a batch of {shape[0]}")
    return torch.stack([torch.randn(tuple(shape[1:]), generator=g, device=g.device) for g in gens]).to(device)


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: ``@register_method`` on a Method subclass with a unique ``name``."""
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"{cls!r} is not a Method subclass")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"method name {cls.name!r} is already registered by {_REGISTRY[cls.name].__module__}")
    bad = set(cls.capabilities) - set(ALL_CAPABILITIES)
    if bad:
        raise ValueError(f"{cls.__name__} declares unknown capabilities {sorted(bad)}; known: {ALL_CAPABILITIES}")
    _REGISTRY[cls.name] = cls
    return cls


_loaded = False


def load_methods() -> None:
    """Import every module of this package (a new ``uwmbench/methods/<name>.py`` that calls
    ``@register_method`` is registered without being listed anywhere), then the plugins named in
    ``UWMBENCH_PLUGINS`` (comma-separated module names) and the ``uwmbench.methods`` entry points.
    The imports are by name (importlib): the registry loads the package's modules, which import
    this one, so no module imports the package at import time."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    package = importlib.import_module(__name__.rpartition(".")[0])   # its folders: __path__
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")
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
            warnings.warn(f"uwmbench: failed to load the method plugin {ep.name!r} ({ep.value}): {e}")


def registered_methods() -> dict[str, type[Method]]:
    load_methods()
    return dict(sorted(_REGISTRY.items()))


def get_method_class(name: str) -> type[Method]:
    methods = registered_methods()
    if name not in methods:
        raise KeyError(f"unknown method {name!r}; registered: {', '.join(methods)}")
    return methods[name]


def _optional_type(default: Any) -> Any:
    if isinstance(default, bool):
        return Optional[bool]
    if isinstance(default, int):
        return Optional[int]
    if isinstance(default, float):
        return Optional[float]
    if isinstance(default, str):
        return Optional[str]
    if isinstance(default, (tuple, list)) and default and all(isinstance(v, (int, float, str, bool)) for v in default):
        t = type(default[0])
        return Optional[List[t]] if all(type(v) is t for v in default) else Optional[List[Any]]  # type: ignore[valid-type]
    return Any


_METHOD_SCHEMAS: dict[type, type] = {}


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def method_schema(config_class: type[MethodConfig]) -> type:
    """The config schema of a method (an OmegaConf structured-config dataclass): ``name``,
    ``size`` and every field of its config dataclass, optional (``None`` = the size preset's
    value, else the class default) and typed after the field's default. The harness stores it
    in hydra's ConfigStore as ``method/<name>``; :func:`make_config` merges into it strictly."""
    if config_class in _METHOD_SCHEMAS:
        return _METHOD_SCHEMAS[config_class]
    specs: list[tuple[str, Any, Any]] = []
    for f in dataclasses.fields(config_class):
        if f.name in ("name", "size"):
            continue
        specs.append((f.name, _optional_type(_field_default(f)), dataclasses.field(default=None)))
    schema = dataclasses.make_dataclass(
        f"{config_class.__name__}Schema",
        [("name", Optional[str], dataclasses.field(default=None)),
         ("size", Optional[str], dataclasses.field(default=None))] + specs)
    _METHOD_SCHEMAS[config_class] = schema
    return schema


def method_preset_values(config_class: type[MethodConfig], size: str) -> dict[str, Any]:
    """Every field's value for ``size``: class defaults < the size preset."""
    values = {f.name: _field_default(f) for f in dataclasses.fields(config_class) if f.name not in ("name", "size")}
    values.update(config_class.PRESETS.get(size, {}))
    return values


def make_config(name: str, size: str | None = None, overrides: dict[str, Any] | None = None) -> MethodConfig:
    """Typed config for method ``name``: class defaults < size preset < overrides (``None``
    values are "not set"). The overrides are merged strictly into the method's schema
    (:func:`method_schema`): unknown keys or ill-typed values raise with the key named."""
    cls = get_method_class(name)
    ccls = cls.config_class
    overrides = {k: v for k, v in dict(overrides or {}).items() if v is not None}
    overrides.pop("name", None)
    size = size or overrides.pop("size", None) or ccls.size
    overrides.pop("size", None)
    if ccls.PRESETS and size not in ccls.PRESETS:
        raise ValueError(f"method {name!r}: size={size!r} is not one of {sorted(ccls.PRESETS)}")
    schema = method_schema(ccls)
    known = {f.name for f in dataclasses.fields(schema)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise KeyError(f"method {name!r}: unknown config key(s) {unknown}; valid keys: {sorted(known - {'name', 'size'})}")
    for k, v in overrides.items():
        if isinstance(v, tuple):
            overrides[k] = list(v)
    try:
        merged = OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(schema), overrides))
    except Exception as e:  # omegaconf's ValidationError names the value and the type
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        key = getattr(e, "key", None) or getattr(e, "full_key", None)
        raise TypeError(f"method {name!r}: {key}={overrides.get(key)!r}: {msg}" if key in overrides
                        else f"method {name!r}: {msg}") from None
    values = method_preset_values(ccls, size)
    for k, v in merged.items():
        if k in ("name", "size") or v is None:
            continue
        values[k] = tuple(v) if isinstance(values.get(k), tuple) and isinstance(v, list) else v
    return ccls(name=name, size=size, **values)


def build_method(name: str, size: str | None = None, **overrides: Any) -> Method:
    cfg = make_config(name, size, overrides)
    return get_method_class(name)(cfg)


def method_from_config(cfg: MethodConfig | dict[str, Any]) -> Method:
    if isinstance(cfg, MethodConfig):
        return get_method_class(cfg.name)(cfg)
    d = dict(cfg)
    name = d.pop("name")
    size = d.pop("size", None)
    return build_method(name, size, **d)


def config_to_dict(cfg: MethodConfig) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def human_count(n: int) -> str:
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}K"
    return str(n)


__all__ = [
    "Method", "MethodConfig", "ActionNormalizer", "register_method", "registered_methods",
    "get_method_class", "make_config", "build_method", "method_from_config", "config_to_dict",
    "CapabilityError", "POLICY", "FORWARD_DYNAMICS", "VIDEO_PREDICTION", "INVERSE_DYNAMICS",
    "ACTION_FREE", "ALL_CAPABILITIES", "human_count", "sample_noise", "Generators", "OFFLINE_VAE_ARCH", "method_schema", "method_preset_values",
]
