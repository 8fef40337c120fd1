"""Network building blocks shared by the methods (one place, so capacity matches by design).

- :class:`ImagePreprocessor`  uint8 frames -> resized, cropped, colour-jittered float images
- :class:`ResNet18GN` / :class:`MultiViewEncoder`  the paper's ResNet-18 with GroupNorm
- :func:`load_pretrained_encoder` (``pretrained_encoder``: imagenet | none | a local file)
- :func:`sinusoidal_embedding`, :class:`TimestepEmbedder`
- :class:`DiTBlock` (AdaLN-Zero, optional cross-attention), :class:`FinalLayer`
- :class:`ActionMLP`, :class:`LatentPatchify` / :class:`LatentUnpatchify`

Attention uses ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels on GPU).
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)
_SAID_RANDOM_INIT: set[str] = set()   # architectures whose random init was logged in this process

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------- images
def crop_offsets(resize: int, image_size: int, k: int) -> list[tuple[int, int]]:
    """A fixed, deterministic set of ``k`` crop offsets ``(oy, ox)`` (in the resized image) of an
    ``image_size`` crop of a ``resize`` image: the centre first (the eval-time crop), then the
    positions farthest from those already chosen (farthest-point sampling over the grid of all
    ``(resize - image_size + 1)**2`` positions, Euclidean, ties to the smallest ``(oy, ox)``):
    ``k=5`` is the centre and the four corners, ``k=9`` the 3x3 grid. Fewer than ``k`` come back
    when there are fewer positions (``resize == image_size``: only ``(0, 0)``). Used by the latent
    cache (one cached latent per offset) and by the data pipeline that picks one per sample."""
    if k < 1:
        raise ValueError(f"crop_offsets: k={k} must be >= 1")
    if image_size > resize:
        raise ValueError(f"crop_offsets: image_size={image_size} must be <= resize={resize}")
    n = resize - image_size + 1
    c = (resize - image_size) // 2
    grid = torch.stack(torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij"), -1).reshape(-1, 2)
    chosen = [(c, c)]
    d = ((grid - torch.tensor([c, c])) ** 2).sum(-1)
    while len(chosen) < min(k, n * n):
        i = int(torch.argmax(d))  # first maximum: the smallest (oy, ox) among ties
        p = (int(grid[i, 0]), int(grid[i, 1]))
        chosen.append(p)
        d = torch.minimum(d, ((grid - torch.tensor(p)) ** 2).sum(-1))
    return chosen


class ImagePreprocessor(nn.Module):
    """uint8 (N, ..., 3, H, W) -> float (N, ..., 3, S, S).

    Resize to ``resize`` then crop ``image_size``: a random crop per sample in training (one
    draw shared by all the views and frames of a sample, so motion is not faked), the center
    crop in eval, or the given ``offsets`` (``(N, 2)`` integer ``(oy, ox)`` in the resized
    image, one per sample, train or eval: the crops of cached latents, see
    ``uwmbench/benchmarks/latent_cache.py``). Colour jitter (brightness, contrast, saturation, hue; per
    sample, vectorised) in training only. Output range [0, 1] unless ``normalize`` is
    ``"imagenet"`` or ``"sym"`` ([-1, 1], the VAE's range).

    :meth:`augment` (resize, crop, jitter; [0, 1]) and :meth:`normalize_images` are the two
    halves of ``forward``: a caller that feeds one augmented image to two networks (UWM's
    encoder and its VAE) augments once and normalises twice.
    """

    def __init__(self, resize: int, image_size: int, jitter: float = 0.0, normalize: str = "imagenet"):
        super().__init__()
        if image_size > resize:
            raise ValueError(f"image_size={image_size} must be <= resize={resize}")
        self.resize, self.image_size, self.jitter, self.normalize = resize, image_size, jitter, normalize
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor, train: bool | None = None, generator: torch.Generator | None = None,
                offsets: torch.Tensor | None = None) -> torch.Tensor:
        return self.normalize_images(self.augment(images, train, generator, offsets))

    def augment(self, images: torch.Tensor, train: bool | None = None, generator: torch.Generator | None = None,
                offsets: torch.Tensor | None = None) -> torch.Tensor:
        """Resize, crop (random / center / ``offsets``) and, in training, jitter; range [0, 1]."""
        train = self.training if train is None else train
        lead = images.shape[:-3]
        b = lead[0]
        x = images.reshape(-1, *images.shape[-3:])
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if x.shape[-1] != self.resize or x.shape[-2] != self.resize:
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", antialias=True, align_corners=False)
        x = x.reshape(b, -1, *x.shape[-3:])  # (B, n, 3, R, R)
        s, r = self.image_size, self.resize
        if offsets is not None:
            off = torch.as_tensor(offsets).to("cpu", torch.long).reshape(-1, 2)
            if off.shape[0] == 1 and b > 1:
                off = off.expand(b, 2)
            if off.shape[0] != b:
                raise ValueError(f"crop offsets: got {off.shape[0]} for a batch of {b}")
            if bool((off < 0).any()) or bool((off > r - s).any()):
                raise ValueError(f"crop offsets must be in [0, {r - s}] for a {s} crop of {r} px images, got "
                                 f"{off.unique(dim=0).tolist()}")
            if bool((off == off[0]).all()):
                oy, ox = off[0].tolist()
                x = x[..., oy:oy + s, ox:ox + s]
            else:
                oy, ox = off[:, 0].tolist(), off[:, 1].tolist()
                x = torch.stack([x[i, :, :, oy[i]:oy[i] + s, ox[i]:ox[i] + s] for i in range(b)])
        elif train and s < r:
            # one random crop per sample, shared by all its views and frames
            oy = torch.randint(0, r - s + 1, (b,), generator=generator, device="cpu").tolist()
            ox = torch.randint(0, r - s + 1, (b,), generator=generator, device="cpu").tolist()
            x = torch.stack([x[i, :, :, oy[i]:oy[i] + s, ox[i]:ox[i] + s] for i in range(b)])
        elif s < r:
            o = (r - s) // 2
            x = x[..., o:o + s, o:o + s]
        if train and self.jitter > 0:
            x = color_jitter(x, self.jitter, generator)
        return x.reshape(*lead, 3, s, s)

    def normalize_images(self, x: torch.Tensor, normalize: str | None = None) -> torch.Tensor:
        """[0, 1] images -> the network's range (``normalize``: this preprocessor's by default)."""
        normalize = self.normalize if normalize is None else normalize
        if normalize == "imagenet":
            return (x - self.mean) / self.std
        if normalize == "sym":
            return x * 2 - 1
        return x


def color_jitter(x: torch.Tensor, strength: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample brightness/contrast/saturation in [1-s, 1+s] and hue shift in [-s, s] turns
    (rotation in YIQ space). ``x``: (B, n, 3, H, W) in [0, 1]; one draw per sample."""
    b = x.shape[0]
    def u(lo, hi):
        return (torch.rand(b, generator=generator) * (hi - lo) + lo).to(x.device).view(b, 1, 1, 1, 1)
    gray_w = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 1, 3, 1, 1)
    x = x * u(1 - strength, 1 + strength)
    gray = (x * gray_w).sum(2, keepdim=True)
    x = (x - gray.mean((-1, -2), keepdim=True)) * u(1 - strength, 1 + strength) + gray.mean((-1, -2), keepdim=True)
    gray = (x * gray_w).sum(2, keepdim=True)
    x = gray + (x - gray) * u(1 - strength, 1 + strength)
    theta = u(-strength, strength) * 2 * math.pi  # hue in turns (torchvision convention, max 0.5)
    yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=x.device)
    rgb = torch.linalg.inv(yiq)
    c = torch.einsum("ij,bnjhw->bnihw", yiq, x)
    cos, sin = theta.cos().squeeze(2), theta.sin().squeeze(2)
    i2 = c[:, :, 1] * cos - c[:, :, 2] * sin
    q2 = c[:, :, 1] * sin + c[:, :, 2] * cos
    c = torch.stack([c[:, :, 0], i2, q2], 2)
    return torch.einsum("ij,bnjhw->bnihw", rgb, c).clamp(0, 1)


# ----------------------------------------------------------------------------- encoders
def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(max(1, channels // 16), channels)


class ResNet18GN(nn.Module):
    """torchvision ResNet-18 with every BatchNorm replaced by GroupNorm(channels/16) and the
    classifier replaced by Linear(512, out_dim). ``width`` < 64 gives a slim copy for tests.

    ``pretrained`` (the method config's ``pretrained_encoder``, see :func:`load_pretrained_encoder`):
    ``"imagenet"`` (torchvision ``ResNet18_Weights.IMAGENET1K_V1``), ``"none"``/None (random),
    or a local weights file. The GroupNorm affine stays freshly initialised (weight 1, bias 0)
    when the weights come from a BatchNorm network, as in the public UWM code."""

    def __init__(self, out_dim: int = 768, width: int = 64, pretrained: str | None = None):
        super().__init__()
        import torchvision
        if width == 64:
            net = torchvision.models.resnet18(weights=None, norm_layer=_group_norm)
        else:  # same topology, thinner channels
            net = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [2, 2, 2, 2], norm_layer=_group_norm)
            _slim_resnet(net, width)
        feat = net.fc.in_features
        net.fc = nn.Linear(feat, out_dim)
        self.net = net
        if pretrained_source(pretrained) == "imagenet" and width != 64:
            raise ValueError(f"pretrained_encoder=imagenet loads the real ResNet-18: it needs encoder_width=64 "
                             f"(got {width}); use pretrained_encoder=none for a slim encoder")
        load_pretrained_encoder(self.net, pretrained, "resnet18", skip_prefixes=("fc.",))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _slim_resnet(net: nn.Module, width: int) -> None:
    """Rebuild a torchvision ResNet-18 with base width ``width`` instead of 64."""
    import torchvision
    BasicBlock = torchvision.models.resnet.BasicBlock
    net.inplanes = width
    net.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    net.bn1 = _group_norm(width)
    net._norm_layer = _group_norm
    net.layer1 = net._make_layer(BasicBlock, width, 2)
    net.layer2 = net._make_layer(BasicBlock, width * 2, 2, stride=2)
    net.layer3 = net._make_layer(BasicBlock, width * 4, 2, stride=2)
    net.layer4 = net._make_layer(BasicBlock, width * 8, 2, stride=2)
    net.fc = nn.Linear(width * 8, 10)


# torchvision ImageNet weights the public code starts from: arch -> (weights enum, enum member, label)
IMAGENET_WEIGHTS = {
    "resnet18": ("ResNet18_Weights", "IMAGENET1K_V1", "ResNet-18"),
    "vit_b_32": ("ViT_B_32_Weights", "IMAGENET1K_V1", "ViT-B/32"),
}
_BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


def pretrained_source(spec: str | None) -> str | None:
    """The ``pretrained_encoder`` value normalised: None (random init: None, ``""``, ``"none"``),
    ``"imagenet"``, or a local file path."""
    if spec is None:
        return None
    s = str(spec).strip()
    if s.lower() in ("", "none"):
        return None
    if s.lower() == "imagenet":
        return "imagenet"
    return s


def imagenet_weights_file(arch: str) -> Path:
    """Where torchvision keeps the ImageNet weights of ``arch`` (the torch hub cache)."""
    import torchvision
    enum, member, _ = IMAGENET_WEIGHTS[arch]
    url = getattr(getattr(torchvision.models, enum), member).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights of ``arch`` (``resnet18``: ``ResNet18_Weights.IMAGENET1K_V1``,
    ``vit_b_32``: ``ViT_B_32_Weights.IMAGENET1K_V1``), downloaded once into the torch hub cache.
    Failure (offline, corrupt cache file) raises FileNotFoundError with a one-line message naming
    the option and the file to provide."""
    import torchvision
    enum, member, label = IMAGENET_WEIGHTS[arch]
    weights = getattr(getattr(torchvision.models, enum), member)
    target = imagenet_weights_file(arch)
    cached = target.is_file()
    try:
        return weights.get_state_dict(progress=True, check_hash=True, map_location="cpu", weights_only=True)
    except Exception as e:  # URLError, OSError, a hash mismatch, an unreadable file
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:200]
        what = (f"cannot read the cached {label} ImageNet weights {target} ({reason}); delete it, "
                if cached else f"cannot download {label} ImageNet weights ({reason}; offline?); ")
        raise FileNotFoundError(
            f"pretrained_encoder=imagenet: {what}put {target.name} in {target.parent} "
            f"or pass method.pretrained_encoder=/path/to/{target.name} (or none for random init)") from None


def load_pretrained_encoder(module: nn.Module, spec: str | None, arch: str,
                            skip_prefixes: tuple[str, ...] = ()) -> None:
    """Initialise the image encoder ``module`` (a torchvision ``arch``: ``resnet18`` or
    ``vit_b_32``) from the ``pretrained_encoder`` option ``spec``: None/``"none"`` keeps the
    random init, ``"imagenet"`` loads torchvision's ImageNet weights (downloaded once), anything
    else is a local weights file (.pth/.pt state dict or .safetensors).

    Keys under ``skip_prefixes`` (the classifier) and BatchNorm running statistics are ignored.
    When the source is a BatchNorm network (it has running statistics) and ``module`` uses
    GroupNorm, the GroupNorm affine parameters are NOT loaded: they keep their fresh init
    (weight 1, bias 0), as the public UWM code does after swapping BatchNorm for GroupNorm.
    On the meta device (shape-only builds) nothing is read or downloaded."""
    source = pretrained_source(spec)
    if source is None:   # said once per process and architecture (every rebuilt method would repeat it)
        level = logging.DEBUG if arch in _SAID_RANDOM_INIT else logging.INFO
        _SAID_RANDOM_INIT.add(arch)
        log.log(level, "%s encoder: random init (pretrained_encoder=none; imagenet or a local file for ImageNet "
                "weights)", IMAGENET_WEIGHTS[arch][2])
        return
    p = None if source == "imagenet" else Path(source).expanduser()
    if p is not None and not p.is_file():
        raise FileNotFoundError(f"pretrained_encoder: no weights file at {p}")
    if any(t.is_meta for t in module.parameters()):
        log.info("%s encoder: meta device, pretrained_encoder=%s not loaded (shapes only)", IMAGENET_WEIGHTS[arch][2], source)
        return
    if p is None:
        state, where = imagenet_state_dict(arch), f"{IMAGENET_WEIGHTS[arch][2]} ImageNet weights"
    else:
        where = str(p)
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(p))
        else:
            state = torch.load(str(p), map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
    _load_state(module, state, where, skip_prefixes)


def _load_state(module: nn.Module, state: dict[str, torch.Tensor], where: str, skip_prefixes: tuple[str, ...]) -> None:
    own = module.state_dict()
    from_batchnorm = any(k.endswith(_BN_STATS) for k in state)
    group_norm = {f"{name}.{p}" if name else p for name, m in module.named_modules() if isinstance(m, nn.GroupNorm)
                  for p in ("weight", "bias")}
    loaded = kept_fresh = 0
    for k, v in state.items():
        if k.startswith(skip_prefixes) or k.endswith(_BN_STATS) or k not in own:
            continue
        if own[k].shape != v.shape:
            raise ValueError(f"{where}: key {k!r} has shape {tuple(v.shape)}, the model expects {tuple(own[k].shape)}")
        if from_batchnorm and k in group_norm:
            kept_fresh += 1  # BatchNorm affine does not carry over to GroupNorm: keep (1, 0)
            continue
        own[k] = v
        loaded += 1
    if loaded == 0:
        raise ValueError(f"{where}: no key matched the model (first keys: {list(state)[:5]})")
    module.load_state_dict(own)
    log.info("loaded %d tensors from %s%s", loaded, where,
             f" ({kept_fresh} BatchNorm affine tensors skipped: GroupNorm keeps weight 1, bias 0)" if kept_fresh else "")


class MultiViewEncoder(nn.Module):
    """One shared ResNet-18-GN over every view and frame; features concatenated in
    (view, frame) order: (B, V, T, 3, S, S) -> (B, V*T*out_dim), or tokens (B, V*T, out_dim)."""

    def __init__(self, out_dim: int = 768, width: int = 64, pretrained: str | None = None):
        super().__init__()
        self.backbone = ResNet18GN(out_dim, width, pretrained)
        self.out_dim = out_dim

    def forward(self, images: torch.Tensor, as_tokens: bool = False) -> torch.Tensor:
        b, v, t = images.shape[:3]
        f = self.backbone(images.reshape(b * v * t, *images.shape[3:]))
        f = f.view(b, v * t, -1)
        return f if as_tokens else f.reshape(b, -1)


# ----------------------------------------------------------------------------- timesteps
def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0, freq_offset: int = 1) -> torch.Tensor:
    """(B,) integer/float timesteps -> (B, dim) ``[sin | cos]`` embedding with frequencies
    ``exp(-ln(max_period) * i / (half - freq_offset))``, ``i < half = dim // 2`` (an odd ``dim``
    gets a zero last column).

    ``freq_offset=1`` is the public UWM/DP/PAD timestep embedding (Diffusion Policy's
    ``SinusoidalPosEmb``); ``freq_offset=0`` the MAE-style position table (GR1's decoder)."""
    half = dim // 2
    denom = max(half - freq_offset, 1)
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / denom)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """k timesteps -> concat of k sinusoidal(freq_dim) -> Linear -> act -> Linear(out_dim).
    UWM: k=2 (t_a, t_o'), freq 512, hidden 2048, out 512, Mish; DP: Mish; PAD: SiLU."""

    def __init__(self, num_timesteps: int = 1, freq_dim: int = 512, hidden: int = 2048, out_dim: int = 512,
                 act: type[nn.Module] = nn.Mish):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(num_timesteps * freq_dim, hidden), act(), nn.Linear(hidden, out_dim))

    def forward(self, *ts: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([sinusoidal_embedding(t, self.freq_dim) for t in ts], dim=-1))


# ----------------------------------------------------------------------------- transformer
def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool = True, kv_dim: int | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.cross = kv_dim is not None
        if self.cross:
            self.q = nn.Linear(dim, dim, bias=qkv_bias)
            self.kv = nn.Linear(kv_dim, 2 * dim, bias=qkv_bias)
        else:
            self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask``: bool (B, Lk) True = attend, or a broadcastable (B, 1, Lq, Lk) bool."""
        b, n, d = x.shape
        h = self.heads
        if self.cross:
            q = self.q(x).view(b, n, h, d // h).transpose(1, 2)
            kv = self.kv(context).view(b, context.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
            k, v = kv[0], kv[1]
        else:
            qkv = self.qkv(x).view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
        if mask is not None and mask.dim() == 2:
            mask = mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """Transformer MLP: Linear -> exact (erf) GELU -> Linear, as in the public code."""

    def __init__(self, dim: int, hidden: int, out: int | None = None, act: type[nn.Module] = nn.GELU):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act()
        self.fc2 = nn.Linear(hidden, out or dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class DiTBlock(nn.Module):
    """Transformer block with AdaLN-Zero modulation from a condition vector. With
    ``context_dim`` set, a cross-attention sub-layer (to context tokens) is added between
    self-attention and MLP (the cross-attention conditioning ablation)."""

    def __init__(self, dim: int, heads: int, cond_dim: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 context_dim: int | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.cross = None
        if context_dim is not None:
            self.norm_x = nn.LayerNorm(dim, eps=1e-6)
            self.cross = Attention(dim, heads, qkv_bias, kv_dim=context_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 6 * dim))
        nn.init.zeros_(self.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.adaLN_modulation[-1].bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None = None,
                context: torch.Tensor | None = None) -> torch.Tensor:
        sh1, sc1, g1, sh2, sc2, g2 = self.adaLN_modulation(cond).chunk(6, dim=-1)
        x = x + g1.unsqueeze(1) * self.attn(modulate(self.norm1(x), sh1, sc1), mask=mask)
        if self.cross is not None:
            x = x + self.cross(self.norm_x(x), context=context)
        x = x + g2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), sh2, sc2))
        return x


class FinalLayer(nn.Module):
    """AdaLN (shift, scale) + zero-initialised linear projection."""

    def __init__(self, dim: int, out_dim: int, cond_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 2 * dim))
        self.linear = nn.Linear(dim, out_dim)
        for m in (self.adaLN_modulation[-1], self.linear):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(cond).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


def init_transformer_weights(module: nn.Module) -> None:
    """Xavier-uniform linears with zero bias (DiT); call before zero-initialising AdaLN."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ActionMLP(nn.Module):
    """Per-action-step MLP: in -> hidden -> out (UWM: 7 -> 3072 -> 768 and back). Activation:
    Mish (UWM, DP), SiLU (PAD), as in the public code."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, act: type[nn.Module] = nn.Mish):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), act(), nn.Linear(hidden, out_dim))

    def forward(self, x):
        return self.net(x)


# ----------------------------------------------------------------------------- latents <-> tokens
class LatentPatchify(nn.Module):
    """Latents (B, V, T, C, h, w) -> tokens (B, V * (T/pt) * (h/ph) * (w/pw), dim) with a
    Conv3d of kernel = stride = patch over (frames, h, w), shared across views."""

    def __init__(self, in_channels: int, dim: int, patch: tuple[int, int, int] = (2, 4, 4)):
        super().__init__()
        self.patch = tuple(patch)
        self.proj = nn.Conv3d(in_channels, dim, kernel_size=self.patch, stride=self.patch)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b, v, t, c, h, w = z.shape
        pt, ph, pw = self.patch
        if t % pt or h % ph or w % pw:
            raise ValueError(f"latent shape (T={t}, h={h}, w={w}) is not divisible by patch {self.patch}")
        x = self.proj(z.reshape(b * v, t, c, h, w).transpose(1, 2))  # (BV, dim, T', h', w')
        x = x.flatten(2).transpose(1, 2)  # (BV, N, dim)
        return x.reshape(b, v * x.shape[1], x.shape[2])


class LatentUnpatchify(nn.Module):
    """Tokens (B, N, dim) -> latents (B, V, T, C, h, w) through Linear(dim, C*pt*ph*pw)."""

    def __init__(self, dim: int, out_channels: int, patch: tuple[int, int, int] = (2, 4, 4)):
        super().__init__()
        self.patch = tuple(patch)
        self.c = out_channels
        self.linear = nn.Linear(dim, out_channels * math.prod(self.patch))

    def forward(self, tokens: torch.Tensor, shape: tuple[int, int, int, int, int]) -> torch.Tensor:
        v, t, c, h, w = shape
        b = tokens.shape[0]
        pt, ph, pw = self.patch
        nt, nh, nw = t // pt, h // ph, w // pw
        x = self.linear(tokens).view(b, v, nt, nh, nw, c, pt, ph, pw)
        x = x.permute(0, 1, 2, 6, 5, 3, 7, 4, 8)  # b v nt pt c nh ph nw pw
        return x.reshape(b, v, t, c, h, w)


def num_latent_tokens(views: int, frames: int, latent_hw: int, patch: tuple[int, int, int]) -> int:
    return views * (frames // patch[0]) * (latent_hw // patch[1]) * (latent_hw // patch[2])
