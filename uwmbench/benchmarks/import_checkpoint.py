"""``uwmbench import-checkpoint``: convert a checkpoint of the public UWM code
(github.com/WEIRDLabUW/unified-world-model @ 677560e, its ``models.pt``) into our checkpoint
folder, so that ``uwmbench evaluate checkpoint=DIR`` and ``uwmbench run
pretrain.checkpoint=DIR`` use it.

    uwmbench import-checkpoint logdir/uwm/libero_90/pretrain/0/models.pt --method uwm --out ckpt/uwm_libero90
    uwmbench import-checkpoint models.pt --method dp --size tiny --set encoder_width=16 --out ckpt/dp

Input: ``models.pt`` as ``experiments/<method>/train.py`` (``maybe_save_checkpoint``) writes it,
a dict ``{model, optimizer, scheduler, scaler, action_normalizer, lowdim_normalizer, step}``
(the released LIBERO-90 UWM checkpoint has this layout); a bare state dict, a DDP
``module.`` prefix and a folder holding ``models.pt`` are accepted too. The file is read with
``torch.load(weights_only=True)``; the public ``LinearNormalizer`` objects and the numpy
arrays inside them are allow-listed (read into stand-in classes, never imported);
``--trust-pickle`` reads anything else (only for files you trust).

Size: ``--size auto`` (default) infers the architecture from the tensor shapes (width, depth,
timestep / hidden / feature sizes, encoder width, patch, ViT and resampler geometry, VAE
blocks), starts from the preset that matches most of it and overrides the rest; attention
head counts cannot be read off shapes and come from that preset. ``--size paper|tiny|small``
uses the preset as is; ``--set key=value`` (repeatable) overrides method config keys (see
``uwmbench methods``). Every mapped tensor is then checked against our model built from that
config: a mismatch names the key, both shapes and the size the checkpoint looks like.

Mapping (public -> ours, explicit rules in ``RULES``; every public tensor is either mapped or
dropped with a reason, every one of ours is filled, else the import fails):

- UWM: ``noise_pred_net.*`` -> ``denoiser.*`` (``obs_patchifier.patch_encoder/decoder`` ->
  ``obs_in.proj``/``obs_out.linear``, ``action_encoder/decoder`` -> ``action_in/out.net``,
  ``timestep_embedding.proj`` -> ``time_embed.mlp``, ``head`` -> ``final``);
  ``obs_encoder.img_encoder.model`` -> ``obs_encoder.backbone.net``; ``obs_encoder.vae.vae`` ->
  ``latent_encoder.vae``.
- DP: ``obs_encoder.rgb_encoder`` -> ``obs_encoder.backbone.net``; ``noise_pred_net.*`` -> top
  level (``input_encoder/output_decoder`` -> ``action_in/out.net``, ``timestep_encoder.1/.3`` ->
  ``t_embed.mlp.0/.2``, ``head`` -> ``final``). The public DP concatenates image features
  frame-major (``b (t v d)``), ours view-major (``b (v t d)``): the input columns of every AdaLN
  modulation layer are permuted accordingly (exact).
- PAD: ``noise_pred_net.*`` -> ``net.*`` (``obs_patchifier.patch_encoder`` -> ``patchify.proj``,
  ``patch_decoder`` -> ``unpatchify``, ``timestep_embedding.proj`` -> ``t_embed.mlp``);
  ``obs_encoder.vae.vae`` -> ``latent_encoder.vae``.
- GR1: ``obs_encoder.img_encoder.model`` -> ``vit``, ``perceiver_resampler`` -> ``resampler``
  (``media_pos_emb[:1]`` -> ``media_pos``), ``patch_head`` -> ``latent_head``, ``transformer`` ->
  ``blocks``, ``decoder_query_token`` -> ``decoder_query``.
- Action normaliser: the checkpoint's ``action_normalizer`` (scale, offset) -> our
  ``action_normalizer`` buffers with ``action_norm=minmax``; none (the LIBERO scripts) ->
  identity, ``action_norm=none``.

Dropped, with the reason: GR1 ``...model.heads.*`` (the ViT classifier the public code replaces
by an unused ``Linear(768, embed_dim)``; its forward never calls it: 590,592 parameters at paper
size); GR1 ``decoder_pos_embed`` (a fixed 2-D sin-cos table stored as a frozen parameter; ours is
the same table computed at build time - checked equal before it is dropped); UWM/PAD
``obs_encoder.vae.shift``/``scale`` (constant latent normalisation 0 / 3: checked, and carried
by our ``latent_extra_scale``). ``lowdim_normalizer`` is ignored (our methods take no low-dim
inputs; a model that used them fails the shape check). Optimizer, scheduler and scaler states
are not carried over (a fine-tune starts its own).

Not in the file, so set from the preset (check them): the VAE's ``scaling_factor`` (the public
code reads it from the hub VAE's config: SDXL 0.13025 = our ``paper`` preset), head counts,
image resize/crop (public LIBERO configs: 240 -> 224 = ``paper``), ``frame_size`` of the
training frames (``--frame-size``, LIBERO: 128) and the vertical flip of stored frames
(``--flip-vertical``, public LIBERO configs: true).

Output: ``DIR/checkpoints/step_<step>/`` (``model.safetensors``, ``method.json``,
``config.yaml``, ``meta.json`` with the import record, ``vae_config.json``,
``trainer_state.pt``) and ``DIR/checkpoints/latest``, written by
:func:`~uwmbench.benchmarks.checkpoint.save_checkpoint` (temporary folder + rename), read back by
:func:`~uwmbench.benchmarks.checkpoint.load_method`.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import pickle
import re
import types
import zipfile
from pathlib import Path
from typing import Any

import torch
import yaml

from uwmbench.config import ConfigError, ConfigPathError, dump_yaml, error_message
from uwmbench.methods.base import config_to_dict, get_method_class, make_config
from uwmbench.methods.latent_encoder import VAE_PRESETS
from uwmbench.run_dir import CheckpointDir, RunDir
from .checkpoint import save_checkpoint
from .data_sources import DataError

log = logging.getLogger(__name__)

METHODS = ("uwm", "dp", "pad", "gr1")
PUBLIC_COMMIT = "677560e"
PUBLIC_TOP_KEYS = ("model", "optimizer", "scheduler", "scaler", "action_normalizer", "lowdim_normalizer", "step")


# ============================================================================ reading models.pt
class PublicLinearNormalizer:
    """Stand-in for the public ``datasets.utils.normalizer.LinearNormalizer`` (attributes
    ``scale`` and ``offset``, numpy arrays); the public class is never imported."""


class PublicNestedDictLinearNormalizer(dict):
    """Stand-in for the public ``datasets.utils.normalizer.NestedDictLinearNormalizer``."""


def _allowed_globals() -> list:
    import numpy as np
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar  # type: ignore[no-redef]
    items: list = [(PublicLinearNormalizer, "datasets.utils.normalizer.LinearNormalizer"),
                   (PublicNestedDictLinearNormalizer, "datasets.utils.normalizer.NestedDictLinearNormalizer")]
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):  # files pickled by numpy 1 and 2
        items += [(_reconstruct, f"{mod}._reconstruct"), (scalar, f"{mod}.scalar")]
    items += [np.ndarray, np.dtype]
    items += [type(np.dtype(t)) for t in (np.float16, np.float32, np.float64, np.int32, np.int64, np.uint8, np.bool_)]
    return items


def _is_zip(path: Path) -> bool:
    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def _trusting_pickle():
    """A ``pickle`` stand-in for ``--trust-pickle``: full unpickling, except that the public
    normaliser classes become our stand-ins (the public package need not be importable)."""

    stand_ins = {("datasets.utils.normalizer", "LinearNormalizer"): PublicLinearNormalizer,
                 ("datasets.utils.normalizer", "NestedDictLinearNormalizer"): PublicNestedDictLinearNormalizer}

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            return stand_ins.get((module, name)) or super().find_class(module, name)

    return types.SimpleNamespace(Unpickler=Unpickler, load=lambda f, **kw: Unpickler(f, **kw).load(),
                                 __name__="pickle")


def read_public_checkpoint(path: str | Path, trust_pickle: bool = False) -> tuple[Path, dict[str, Any]]:
    """(file, the ``models.pt`` dict). ``path`` may be the file or a folder holding
    ``models.pt``. Missing, truncated or non-torch files raise one-line errors naming the file."""
    p = Path(path).expanduser()
    if p.is_dir():
        if not (p / "models.pt").is_file():
            raise ConfigPathError(f"{p}: a folder without models.pt (pass the checkpoint file the public train "
                                  "script wrote, e.g. logdir/uwm/libero_90/pretrain/0/models.pt)")
        p = p / "models.pt"
    if not p.is_file():
        raise ConfigPathError(f"{p}: no such file")
    size = p.stat().st_size
    try:
        if trust_pickle:
            obj = torch.load(p, map_location="cpu", weights_only=False, pickle_module=_trusting_pickle())
        else:
            with torch.serialization.safe_globals(_allowed_globals()):
                # mmap: the optimizer state (2x the weights in a released models.pt) is never read
                obj = torch.load(p, map_location="cpu", weights_only=True, mmap=_is_zip(p))
    except Exception as e:  # zip/pickle/EOF errors of a damaged file, or a disallowed global
        msg = " ".join(str(e).split())
        m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", msg)
        if m and not trust_pickle:
            raise DataError(f"{p}: the file pickles {m.group(1)}, which a weights-only load does not allow; if you "
                            "trust the file, rerun with --trust-pickle") from None
        why = ("truncated (incomplete zip archive)" if ("central directory" in msg or "zip archive" in msg
                                                        or isinstance(e, EOFError)) else "not a torch checkpoint")
        raise DataError(f"{p}: cannot read it as a torch checkpoint: {why} ({size} bytes; "
                        f"{type(e).__name__}: {msg[:160]})") from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        ckpt = dict(obj)
    elif isinstance(obj, dict) and obj and all(torch.is_tensor(v) for v in obj.values()):
        ckpt = {"model": obj, "step": None}  # a bare state dict
    else:
        keys = sorted(map(str, obj))[:8] if isinstance(obj, dict) else type(obj).__name__
        raise DataError(f"{p}: not a public UWM checkpoint: expected a dict with keys {list(PUBLIC_TOP_KEYS)} "
                        f"(experiments/*/train.py maybe_save_checkpoint), got {keys}")
    state = ckpt["model"]
    if state and all(k.startswith("module.") for k in state):  # saved from the DDP wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    bad = [k for k, v in state.items() if not torch.is_tensor(v)]
    if bad:
        raise DataError(f"{p}: 'model' entry {bad[0]!r} is not a tensor")
    ckpt["model"] = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    return p, ckpt


# ============================================================================ method detection
SIGNATURES = {  # a key only this public model has
    "uwm": "noise_pred_net.registers",
    "pad": "noise_pred_net.pad_tokens",
    "dp": "noise_pred_net.input_encoder.0.weight",
    "gr1": "action_queries",
}


def detect_method(state: dict[str, torch.Tensor]) -> tuple[str | None, str | None]:
    for name, key in SIGNATURES.items():
        if key in state:
            return name, key
    return None, None


# ============================================================================ mapping rules
@dataclasses.dataclass
class Mapping:
    """Result of mapping a public state dict: our tensors, dropped keys (with reasons) and
    config values the file fixes (action normaliser mode, latent extra scale)."""

    state: dict[str, torch.Tensor]
    dropped: dict[str, str]
    source_of: dict[str, str]              # our key -> public key
    config: dict[str, Any]


# (public regex, our template) in order; None template = drop, with the reason in the third slot
RULES: dict[str, list[tuple[str, str | None, str]]] = {
    "uwm": [
        (r"noise_pred_net\.obs_patchifier\.patch_encoder\.(.+)", r"denoiser.obs_in.proj.\1", ""),
        (r"noise_pred_net\.obs_patchifier\.patch_decoder\.(.+)", r"denoiser.obs_out.linear.\1", ""),
        (r"noise_pred_net\.action_encoder\.(.+)", r"denoiser.action_in.net.\1", ""),
        (r"noise_pred_net\.action_decoder\.(.+)", r"denoiser.action_out.net.\1", ""),
        (r"noise_pred_net\.timestep_embedding\.proj\.(.+)", r"denoiser.time_embed.mlp.\1", ""),
        (r"noise_pred_net\.(registers|pos_embed)", r"denoiser.\1", ""),
        (r"noise_pred_net\.blocks\.(.+)", r"denoiser.blocks.\1", ""),
        (r"noise_pred_net\.head\.(.+)", r"denoiser.final.\1", ""),
        (r"obs_encoder\.img_encoder\.model\.(.+)", r"obs_encoder.backbone.net.\1", ""),
        (r"obs_encoder\.vae\.vae\.(.+)", r"latent_encoder.vae.\1", ""),
        (r"obs_encoder\.vae\.(shift|scale)", None, "constant latent normalisation (shift 0, scale 3): checked, "
                                                   "carried by latent_extra_scale"),
    ],
    "dp": [
        (r"obs_encoder\.rgb_encoder\.(.+)", r"obs_encoder.backbone.net.\1", ""),
        (r"noise_pred_net\.input_encoder\.(.+)", r"action_in.net.\1", ""),
        (r"noise_pred_net\.output_decoder\.(.+)", r"action_out.net.\1", ""),
        (r"noise_pred_net\.timestep_encoder\.1\.(.+)", r"t_embed.mlp.0.\1", ""),
        (r"noise_pred_net\.timestep_encoder\.3\.(.+)", r"t_embed.mlp.2.\1", ""),
        (r"noise_pred_net\.pos_embed", r"pos_embed", ""),
        (r"noise_pred_net\.blocks\.(.+)", r"blocks.\1", ""),
        (r"noise_pred_net\.head\.(.+)", r"final.\1", ""),
    ],
    "pad": [
        (r"noise_pred_net\.obs_patchifier\.patch_encoder\.(.+)", r"net.patchify.proj.\1", ""),
        (r"noise_pred_net\.obs_patchifier\.patch_decoder\.(.+)", r"net.unpatchify.\1", ""),
        (r"noise_pred_net\.action_encoder\.(.+)", r"net.action_in.net.\1", ""),
        (r"noise_pred_net\.action_decoder\.(.+)", r"net.action_out.net.\1", ""),
        (r"noise_pred_net\.timestep_embedding\.proj\.(.+)", r"net.t_embed.mlp.\1", ""),
        (r"noise_pred_net\.(pos_embed|pad_tokens)", r"net.\1", ""),
        (r"noise_pred_net\.blocks\.(.+)", r"net.blocks.\1", ""),
        (r"noise_pred_net\.head\.(.+)", r"net.final.\1", ""),
        (r"obs_encoder\.vae\.vae\.(.+)", r"latent_encoder.vae.\1", ""),
        (r"obs_encoder\.vae\.(shift|scale)", None, "constant latent normalisation (shift 0, scale 3): checked, "
                                                   "carried by latent_extra_scale"),
    ],
    "gr1": [
        (r"obs_encoder\.img_encoder\.model\.heads\..+", None,
         "the ViT classifier: the public code replaces it by Linear(768, embed_dim) and never calls it"),
        (r"obs_encoder\.img_encoder\.model\.(.+)", r"vit.\1", ""),
        (r"obs_encoder\.img_encoder\.perceiver_resampler\.media_pos_emb", r"resampler.media_pos",
         "first row only: the public forward reads media_pos_emb[:1] (one media frame per image)"),
        (r"obs_encoder\.img_encoder\.perceiver_resampler\.(.+)", r"resampler.\1", ""),
        (r"obs_encoder\.img_encoder\.patch_head\.(.+)", r"latent_head.\1", ""),
        (r"obs_encoder\.img_encoder\.(feat_head\..+|pos_scale|pos_shift)", r"\1", ""),
        (r"transformer\.(.+)", r"blocks.\1", ""),
        (r"decoder_query_token", r"decoder_query", ""),
        (r"decoder_pos_embed", None, "fixed 2-D sin-cos table (a frozen parameter); ours is the same table "
                                     "computed at build time: checked equal"),
        (r"(action_queries|obs_queries|action_head\..+|decoder_proj\..+|decoder_blocks\..+|decoder_head\..+)",
         r"\1", ""),
    ],
}
# public features the methods here do not implement: a clear error instead of a shape puzzle
UNSUPPORTED = [
    (r"obs_encoder\.text_encoder\.", "language conditioning (use_language=True)"),
    (r"noise_pred_net\.(down_modules|up_modules|mid_modules)\.", "the UNet noise-prediction net (we implement the "
                                                                 "transformer DP of the paper)"),
]


def map_state(method: str, ckpt: dict[str, Any], views: int, obs_frames: int) -> Mapping:
    """Public state dict -> our names (no shape checks here; see :func:`check_shapes`)."""
    state = ckpt["model"]
    out: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}
    dropped: dict[str, str] = {}
    config: dict[str, Any] = {}
    rules = [(re.compile(rx), tpl, why) for rx, tpl, why in RULES[method]]
    for key, value in state.items():
        for rx, why in UNSUPPORTED:
            if re.match(rx, key):
                raise ConfigError(f"public {method} checkpoint uses {why} (key {key!r}), which uwmbench's {method} "
                                  "does not implement")
        for rx, tpl, why in rules:
            m = rx.fullmatch(key)
            if m is None:
                continue
            if tpl is None:
                dropped[key] = why
            else:
                ours = m.expand(tpl)
                if ours in out:
                    raise ConfigError(f"mapping rule clash: {key!r} and {source[ours]!r} both map to {ours!r}")
                out[ours], source[ours] = value, key
            break
        else:
            raise ConfigError(f"public {method} checkpoint key {key!r} matches no mapping rule (is this a public "
                              f"{method} checkpoint of commit {PUBLIC_COMMIT}?)")

    # ---- per-method value rules
    if method in ("uwm", "pad"):
        shift, scale = state.get("obs_encoder.vae.shift"), state.get("obs_encoder.vae.scale")
        if shift is not None and bool(shift.abs().max() > 0):
            raise ConfigError(f"obs_encoder.vae.shift is {shift.flatten().tolist()}: a non-zero latent shift has no "
                              "counterpart here (ours: latent * scaling_factor / latent_extra_scale)")
        if scale is not None:
            s = scale.flatten()
            if bool((s - s[0]).abs().max() > 1e-6 * s[0].abs()):
                raise ConfigError(f"obs_encoder.vae.scale is {s.tolist()}: a per-channel latent scale has no "
                                  "counterpart here (latent_extra_scale is one number)")
            config["latent_extra_scale"] = float(s[0])
    if method == "gr1" and "resampler.media_pos" in out:
        out["resampler.media_pos"] = out["resampler.media_pos"][:1]
    if method == "dp":
        _permute_dp_condition(out, views, obs_frames)

    # ---- action normaliser
    an = ckpt.get("action_normalizer")
    dim = _action_dim(method, out)
    if an is None:
        config["action_norm"] = "none"
        out["action_normalizer.offset"] = torch.zeros(dim)
        out["action_normalizer.scale"] = torch.ones(dim)
        source["action_normalizer.offset"] = source["action_normalizer.scale"] = "(none: identity)"
    else:
        scale_, offset_ = getattr(an, "scale", None), getattr(an, "offset", None)
        if scale_ is None or offset_ is None:
            raise DataError(f"action_normalizer is a {type(an).__name__} without scale/offset")
        config["action_norm"] = "minmax"
        out["action_normalizer.offset"] = torch.as_tensor(offset_, dtype=torch.float32).reshape(-1)
        out["action_normalizer.scale"] = torch.as_tensor(scale_, dtype=torch.float32).reshape(-1)
        source["action_normalizer.offset"] = "action_normalizer.offset"
        source["action_normalizer.scale"] = "action_normalizer.scale"
    if ckpt.get("lowdim_normalizer") is not None:
        dropped["lowdim_normalizer"] = "our methods take no low-dim observations"
    return Mapping(out, dropped, source, config)


def _action_dim(method: str, out: dict[str, torch.Tensor]) -> int:
    key = {"uwm": "denoiser.action_in.net.0.weight", "dp": "action_in.net.0.weight",
           "pad": "net.action_in.net.0.weight", "gr1": "action_head.4.weight"}[method]
    if key not in out:
        raise ConfigError(f"public {method} checkpoint has no action layer ({key!r} after mapping)")
    w = out[key]
    return int(w.shape[0] if method == "gr1" else w.shape[1])


def _permute_dp_condition(out: dict[str, torch.Tensor], views: int, frames: int) -> None:
    """Public DP condition = [features ordered (frame, view, d) | timestep embedding]; ours
    orders the features (view, frame, d). Permute the input columns of the AdaLN layers."""
    for key in [k for k in out if re.fullmatch(r"(blocks\.\d+|final)\.adaLN_modulation\.1\.weight", k)]:
        w = out[key]
        t_dim = out["t_embed.mlp.2.weight"].shape[0] if "t_embed.mlp.2.weight" in out else 0
        feat = w.shape[1] - t_dim
        if feat <= 0 or feat % (views * frames):
            return  # the shape check reports the mismatch
        d = feat // (views * frames)
        f = w[:, :feat].reshape(w.shape[0], frames, views, d).transpose(1, 2).reshape(w.shape[0], feat)
        out[key] = torch.cat([f, w[:, feat:]], dim=1).contiguous()


# ============================================================================ size inference
def _count(state: dict[str, torch.Tensor], prefix: str) -> int:
    rx = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in state for m in [rx.match(k)] if m})


def _vae_source(state: dict[str, torch.Tensor], prefix: str) -> str | None:
    """``random:<preset>`` whose architecture has these VAE tensors' shapes, else None."""
    n = _count(state, prefix + "encoder.down_blocks.")
    if n == 0:
        return None
    blocks = tuple(int(state[f"{prefix}encoder.down_blocks.{i}.resnets.0.conv2.weight"].shape[0]) for i in range(n))
    layers = _count(state, prefix + "encoder.down_blocks.0.resnets.")
    latent = int(state[prefix + "encoder.conv_out.weight"].shape[0]) // 2
    for name, kw in VAE_PRESETS.items():
        if (tuple(kw["block_out_channels"]), kw["layers_per_block"], kw["latent_channels"]) == (blocks, layers, latent):
            return f"random:{name}"
    return None


def _resnet(state: dict[str, torch.Tensor], prefix: str) -> dict[str, Any]:
    return {"encoder_width": int(state[prefix + "conv1.weight"].shape[0])}


def infer_config(method: str, state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Method config values read off the public tensors' shapes (what ``--size auto`` uses)."""
    s = state
    try:
        if method == "uwm":
            n = "noise_pred_net."
            width = int(s[n + "pos_embed"].shape[2])
            out = dict(width=width, depth=_count(s, n + "blocks."), num_registers=int(s[n + "registers"].shape[1]),
                       action_dim=int(s[n + "action_encoder.0.weight"].shape[1]),
                       action_hidden=int(s[n + "action_encoder.0.weight"].shape[0]),
                       time_freq_dim=int(s[n + "timestep_embedding.proj.0.weight"].shape[1]) // 2,
                       time_hidden=int(s[n + "timestep_embedding.proj.0.weight"].shape[0]),
                       time_out=int(s[n + "timestep_embedding.proj.2.weight"].shape[0]),
                       obs_feature_dim=int(s["obs_encoder.img_encoder.model.fc.weight"].shape[0]),
                       patch=tuple(int(x) for x in s[n + "obs_patchifier.patch_encoder.weight"].shape[2:]),
                       mlp_ratio=s[n + "blocks.0.mlp.fc1.weight"].shape[0] / width,
                       **_resnet(s, "obs_encoder.img_encoder.model."))
            vae = _vae_source(s, "obs_encoder.vae.vae.")
        elif method == "dp":
            n = "noise_pred_net."
            width = int(s[n + "pos_embed"].shape[2])
            out = dict(width=width, depth=_count(s, n + "blocks."), action_horizon=int(s[n + "pos_embed"].shape[1]),
                       action_dim=int(s[n + "input_encoder.0.weight"].shape[1]),
                       timestep_dim=int(s[n + "timestep_encoder.1.weight"].shape[1]),
                       mlp_ratio=s[n + "blocks.0.mlp.fc1.weight"].shape[0] / width,
                       **_resnet(s, "obs_encoder.rgb_encoder."))
            vae = None
        elif method == "pad":
            n = "noise_pred_net."
            width = int(s[n + "pos_embed"].shape[2])
            out = dict(width=width, depth=_count(s, n + "blocks."), action_horizon=int(s[n + "pad_tokens"].shape[1]),
                       action_dim=int(s[n + "action_encoder.0.weight"].shape[1]),
                       timestep_dim=int(s[n + "timestep_embedding.proj.0.weight"].shape[1]),
                       latent_patch=tuple(int(x) for x in s[n + "obs_patchifier.patch_encoder.weight"].shape[2:]),
                       mlp_ratio=s[n + "blocks.0.mlp.fc1.weight"].shape[0] / width)
            vae = _vae_source(s, "obs_encoder.vae.vae.")
        else:  # gr1
            e = "obs_encoder.img_encoder."
            width = int(s["action_queries"].shape[2])
            patch = int(s[e + "model.conv_proj.weight"].shape[2])
            grid = math.isqrt(int(s[e + "model.encoder.pos_embedding"].shape[1]) - 1)
            dec_patch = math.isqrt(int(s["decoder_head.1.weight"].shape[0]) // 3)
            out = dict(width=width, depth=_count(s, "transformer."), action_horizon=int(s["action_queries"].shape[1]),
                       action_dim=int(s["action_head.4.weight"].shape[0]),
                       mlp_ratio=s["transformer.0.mlp.fc1.weight"].shape[0] / width,
                       vit_patch=patch, vit_dim=int(s[e + "model.conv_proj.weight"].shape[0]),
                       vit_layers=_count(s, e + "model.encoder.layers.encoder_layer_"),
                       vit_mlp_dim=int(s[e + "model.encoder.layers.encoder_layer_0.mlp.0.weight"].shape[0]),
                       image_size=grid * patch, resampler_depth=_count(s, e + "perceiver_resampler.layers."),
                       resampler_latents=int(s[e + "perceiver_resampler.latents"].shape[0]),
                       decoder_depth=_count(s, "decoder_blocks."), decoder_patch=dec_patch)
            vae = None
    except KeyError as e:
        raise ConfigError(f"public {method} checkpoint lacks {e.args[0]!r}, which every public {method} model has") from None
    if vae is not None:
        out["vae"] = vae
    if "mlp_ratio" in out and float(out["mlp_ratio"]).is_integer():
        out["mlp_ratio"] = float(out["mlp_ratio"])
    return out


def _preset_values(method: str, size: str) -> dict[str, Any]:
    cls = get_method_class(method)
    ccls = cls.config_class
    values = {f.name: f.default for f in dataclasses.fields(ccls) if f.default is not dataclasses.MISSING}
    values.update(ccls.PRESETS.get(size, {}))
    values.update(cls.offline_overrides(size))
    return values


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and list(a) == list(b)
    return a == b


def suggest_size(method: str, inferred: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(closest preset, overrides the checkpoint needs on top of it)."""
    presets = list(get_method_class(method).config_class.PRESETS) or ["paper"]
    best, best_over = presets[0], None
    for size in presets:
        values = _preset_values(method, size)
        over = {k: v for k, v in inferred.items() if not _same(values.get(k), v)}
        if best_over is None or len(over) < len(best_over):
            best, best_over = size, over
    return best, best_over or {}


def _format_overrides(size: str, over: dict[str, Any], prefix: str = "--set ") -> str:
    def fmt(v):
        if isinstance(v, (list, tuple)):
            return "[" + ",".join(fmt(x) for x in v) + "]"
        return str(v)
    return " ".join([f"--size {size}" if prefix == "--set " else f"method.size={size}"]
                    + [f"{prefix}{k}={fmt(v)}" for k, v in over.items()])


# ============================================================================ build + check
def _make_cfg(method: str, size: str, overrides: dict[str, Any]):
    try:
        return make_config(method, size, overrides)
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(error_message(e)) from None


def _build(method: str, cfg, meta: bool):
    cls = get_method_class(method)
    try:
        if meta:
            with torch.device("meta"):
                return cls(cfg)
        return cls(cfg)
    except FileNotFoundError as e:
        raise ConfigPathError(error_message(e)) from None
    except ValueError as e:
        raise ConfigError(f"{method}: {error_message(e)}") from None


def check_shapes(file: Path, method: str, size_label: str, mapping: Mapping, ours: dict[str, torch.Tensor],
                 inferred: dict[str, Any]) -> None:
    """Every mapped tensor has our shape, every one of ours is filled; else one line naming the
    key, both shapes and the size the checkpoint looks like."""
    hint = _format_overrides(*suggest_size(method, inferred))
    bad = [(k, tuple(v.shape), tuple(ours[k].shape)) for k, v in mapping.state.items()
           if k in ours and tuple(v.shape) != tuple(ours[k].shape)]
    if bad:
        k, theirs, mine = bad[0]
        more = f" (+{len(bad) - 1} more tensors differ)" if len(bad) > 1 else ""
        raise ConfigError(f"{file}: key {mapping.source_of.get(k, k)!r} (ours {k!r}) has shape {theirs} in the checkpoint "
                          f"but {mine} in {method} {size_label}{more}: a checkpoint of another size; it looks like "
                          f"`{hint}`")
    extra = sorted(set(mapping.state) - set(ours))
    if extra:
        raise ConfigError(f"{file}: {len(extra)} tensor(s) have no place in {method} {size_label}, e.g. "
                          f"{mapping.source_of.get(extra[0], extra[0])!r} -> {extra[0]!r}; it looks like `{hint}`")
    missing = sorted(set(ours) - set(mapping.state))
    if missing:
        raise ConfigError(f"{file}: {len(missing)} tensor(s) of {method} {size_label} are not in the checkpoint, "
                          f"e.g. {missing[0]!r}; it looks like `{hint}`")


def _check_fixed_tables(method: str, ckpt: dict[str, Any], model) -> None:
    if method == "gr1" and "decoder_pos_embed" in ckpt["model"]:
        theirs = ckpt["model"]["decoder_pos_embed"].float()
        mine = model.decoder_pos.float()
        if theirs.shape != mine.shape or not torch.allclose(theirs, mine, atol=1e-5):
            raise ConfigError("decoder_pos_embed differs from our GR1 decoder position table (gr1.sincos_2d): "
                              "the public decoder queries would not be reproduced")


# ============================================================================ import
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def import_checkpoint(file: str | Path, method: str, out: str | Path, size: str = "auto",
                      overrides: dict[str, Any] | None = None, frame_size: int | None = None,
                      flip_vertical: bool = True, trust_pickle: bool = False, force: bool = False) -> Path:
    """Convert a public ``models.pt``; returns our checkpoint folder (``out/checkpoints/step_*``)."""


    if method not in METHODS:
        raise ConfigError(f"--method {method!r} is not one of {', '.join(METHODS)}")
    out = Path(out).expanduser()
    record = RunDir(out).checkpoints
    if record.exists() and any(record.iterdir()):
        if not force:
            raise ConfigPathError(f"--out {out}: already holds checkpoints; choose a new folder or pass --force "
                                  "(replaces an earlier import there)")
    p, ckpt = read_public_checkpoint(file, trust_pickle)
    state = ckpt["model"]
    found, key = detect_method(state)
    if found is None:
        raise DataError(f"{p}: no public UWM/DP/PAD/GR1 model in it (none of the keys "
                        f"{sorted(SIGNATURES.values())}; first keys: {list(state)[:3]})")
    if found != method:
        raise ConfigError(f"{p}: a public {found} checkpoint (it has {key!r}), not {method}: pass --method {found}")

    # ---- config: preset (+ inferred) + file-fixed values + user overrides
    inferred = infer_config(method, state)
    overrides = dict(overrides or {})
    if size == "auto":
        size, auto_over = suggest_size(method, inferred)
        log.info("import: %s checkpoint looks like %s", method, _format_overrides(size, auto_over) or size)
    else:
        auto_over = {}
    presets = get_method_class(method).config_class.PRESETS
    if presets and size not in presets:
        raise ConfigError(f"--size {size!r} is not one of auto, {', '.join(presets)}")
    cfg_over: dict[str, Any] = dict(get_method_class(method).offline_overrides(size))
    cfg_over.update(auto_over)
    cfg_over["pretrained_encoder"] = "none"  # the weights come from the checkpoint
    probe = _make_cfg(method, size, {**cfg_over, **overrides})
    mapping = map_state(method, ckpt, len(probe.views), probe.obs_frames)
    cfg_over.update(mapping.config)
    cfg_over.update(overrides)
    cfg = _make_cfg(method, size, cfg_over)
    label = f"size={size}" + (f" with {overrides}" if overrides else "") + (f" + inferred {auto_over}" if auto_over else "")

    # ---- shapes on the meta device, then the real model
    meta_model = _build(method, cfg, meta=True)
    check_shapes(p, method, label, mapping, meta_model.state_dict(), inferred)
    method_obj = _build(method, cfg, meta=False)
    _check_fixed_tables(method, ckpt, method_obj)
    missing, unexpected = method_obj.load_state_dict(mapping.state, strict=False)
    if missing or unexpected:  # check_shapes covers this; kept as a guard
        raise ConfigError(f"{p}: state dict mismatch after mapping: missing={missing[:3]} unexpected={unexpected[:3]}")
    method_obj.eval()

    # ---- write our checkpoint folder (atomically, by the trainer's writer)
    step = int(ckpt.get("step") or 0)
    sha = _sha256(p)
    imported = {"file": str(p.resolve()), "sha256": sha, "public_code": f"WEIRDLabUW/unified-world-model@{PUBLIC_COMMIT}",
                "method": method, "public_step": ckpt.get("step"), "size": size, "inferred_overrides": auto_over,
                "user_overrides": overrides, "dropped": mapping.dropped,
                "top_level_keys_ignored": sorted(k for k in ckpt if k not in ("model", "action_normalizer", "step"))}
    meta = {"frame_size": [int(frame_size), int(frame_size)] if frame_size else None, "imported_from": imported}
    if not frame_size:
        meta.pop("frame_size")
    config_yaml = dump_yaml({"method": config_to_dict(cfg), "data": {"flip_vertical": bool(flip_vertical)},
                             "imported_from": imported})
    if record.exists() and force:
        import shutil
        for q in RunDir(out).step_checkpoints():
            shutil.rmtree(q)
    ckpt_dir = save_checkpoint(out, step, method_obj, {"step": step, "imported_from": imported}, config_yaml,
                               keep=0, meta=meta)
    assert ckpt_dir.parent == record
    n_pub = sum(v.numel() for v in state.values())
    n_drop = sum(state[k].numel() for k in mapping.dropped if k in state)
    log.info("import: %d public tensors (%d values) -> %s; dropped %d tensors (%d values): %s", len(state), n_pub,
             ckpt_dir, len(mapping.dropped), n_drop, "; ".join(f"{k}: {v}" for k, v in mapping.dropped.items()) or "none")
    return ckpt_dir


# ============================================================================ CLI
def _parse_set(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} is not of the form key=value")
        k, v = item.split("=", 1)
        k = k.strip()
        if k.startswith("method."):
            k = k[len("method."):]
        try:
            out[k] = yaml.safe_load(v)
        except yaml.YAMLError:
            out[k] = v
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="uwmbench import-checkpoint", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", help="models.pt written by the public train script (or its folder)")
    ap.add_argument("--method", required=True, help="uwm | dp | pad | gr1")
    ap.add_argument("--out", required=True, help="output folder; `checkpoint=OUT` then points at the import")
    ap.add_argument("--size", default="auto", help="auto (infer from shapes, default) | paper | tiny | small")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="method config override (repeatable), e.g. --set num_registers=8")
    ap.add_argument("--frame-size", type=int, default=None,
                    help="side of the frames the model was trained on (LIBERO: 128); recorded for `evaluate`")
    ap.add_argument("--flip-vertical", default="true", choices=["true", "false"],
                    help="stored frames were flipped upside down in training (public LIBERO configs: true)")
    ap.add_argument("--trust-pickle", action="store_true", help="read the file with full unpickling (trusted files only)")
    ap.add_argument("--force", action="store_true", help="replace an earlier import in --out")
    a = ap.parse_args(argv)
    if a.method not in METHODS:
        raise ConfigError(f"--method {a.method!r} is not one of {', '.join(METHODS)}")
    ckpt = import_checkpoint(a.file, a.method, a.out, a.size, _parse_set(a.sets), a.frame_size,
                             a.flip_vertical == "true", a.trust_pickle, a.force)

    files = CheckpointDir(ckpt)
    cfg = json.loads(files.method.read_text())
    imported = json.loads(files.meta.read_text())["imported_from"]
    over = {**imported["inferred_overrides"], **imported["user_overrides"]}
    print(f"imported {a.file} -> {ckpt}")
    print(f"  evaluate: uwmbench evaluate checkpoint={a.out} ...")
    print(f"  protocol: uwmbench run method={a.method} {_format_overrides(cfg['size'], over, 'method.')} "
          f"pretrain.checkpoint={a.out} ...")
    for k, why in imported["dropped"].items():
        print(f"  dropped {k}: {why}")
    return 0


__all__ = ["import_checkpoint", "read_public_checkpoint", "map_state", "infer_config", "suggest_size", "RULES", "main"]
