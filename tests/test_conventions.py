"""The public code's fixed conventions (WEIRDLabUW/unified-world-model @ 677560e; docs/conventions.md), pinned
numerically so that weights trained by the public code load and behave unchanged:
sinusoidal embeddings, exact GELU, PAD's SiLU MLPs, ImageNet encoder init (download, cache,
local file, offline error, GroupNorm affine), and the paper presets' defaults."""
from __future__ import annotations

import math
import urllib.error
from pathlib import Path

import pytest
import torch
from torch import nn

from uwmbench.methods import build_method, get_method_class, make_config
from uwmbench.methods.gr1 import sincos_2d
from uwmbench.methods.nets import Mlp, ResNet18GN, sinusoidal_embedding

ROOT = Path(__file__).resolve().parents[1]
RESNET18_FILE = "resnet18-f37072fd.pth"
VIT_B_32_FILE = "vit_b_32-d86f8d99.pth"


def public_timestep_embedding(t: float, dim: int) -> list[float]:
    """The public code's formula, written out: [sin | cos], freq_i = exp(-ln(1e4) * i / (half - 1))."""
    half = dim // 2
    f = [math.exp(-math.log(10000.0) * i / (half - 1)) for i in range(half)]
    return [math.sin(t * x) for x in f] + [math.cos(t * x) for x in f]


# ----------------------------------------------------------------------------- embeddings
@pytest.mark.parametrize("dim", [8, 32, 256, 512])
def test_timestep_embedding_is_the_public_one(dim):
    emb = sinusoidal_embedding(torch.tensor([0, 7]), dim)
    assert emb.shape == (2, dim)
    assert torch.equal(emb[0], torch.tensor([0.0] * (dim // 2) + [1.0] * (dim // 2)))  # t=0: sin 0 | cos 0
    assert torch.allclose(emb[1], torch.tensor(public_timestep_embedding(7, dim)), atol=1e-5)
    # spot values for dim 8: half=4, frequencies 1, 10**(-4/3), 10**(-8/3), 1e-4
    if dim == 8:
        assert emb[1, 0].item() == pytest.approx(math.sin(7.0), abs=1e-6)
        assert emb[1, 3].item() == pytest.approx(math.sin(7e-4), abs=1e-6)
        assert emb[1, 4].item() == pytest.approx(math.cos(7.0), abs=1e-6)


@pytest.mark.parametrize("name,k,freq_dim", [("uwm", 2, 32), ("dp", 1, 32), ("pad", 1, 32)])
def test_methods_embed_timesteps_with_the_public_formula(name, k, freq_dim):
    torch.manual_seed(0)
    m = build_method(name, "tiny")
    embedder = {"uwm": lambda: m.denoiser.time_embed, "dp": lambda: m.t_embed, "pad": lambda: m.net.t_embed}[name]()
    assert embedder.freq_dim == freq_dim
    t = torch.tensor([0, 7])
    x = torch.cat([torch.tensor([public_timestep_embedding(float(v), freq_dim) for v in t])] * k, dim=-1)
    assert torch.allclose(embedder(*([t] * k)), embedder.mlp(x), atol=1e-5)


def test_gr1_decoder_table_is_sin_cos_per_axis():
    dim, grid = 768, 7
    table = sincos_2d(grid, dim)
    assert table.shape == (49, dim)
    axis = dim // 2  # 384 per axis: [sin | cos] of 192 frequencies 1e4 ** (-i / 192)
    def one_axis(p):
        f = [10000.0 ** (-i / (axis // 2)) for i in range(axis // 2)]
        return [math.sin(p * x) for x in f] + [math.cos(p * x) for x in f]
    for row, col in [(0, 0), (0, 1), (3, 5), (6, 6)]:
        want = torch.tensor(one_axis(row) + one_axis(col))
        assert torch.allclose(table[row * grid + col], want, atol=1e-5), (row, col)
    m = build_method("gr1", "tiny")
    assert torch.equal(m.decoder_pos[0], sincos_2d(m.cfg.image_size // m.cfg.decoder_patch, m.cfg.width))


# ----------------------------------------------------------------------------- activations
def exact_gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


@pytest.mark.parametrize("name", ["uwm", "dp", "pad", "gr1"])
def test_transformer_mlps_use_exact_gelu(name):
    m = build_method(name, "tiny")
    mlps = [mod for mod in m.modules() if isinstance(mod, Mlp)]
    assert mlps, name
    x = torch.linspace(-4, 4, 101)
    for mlp in mlps:
        assert isinstance(mlp.act, nn.GELU) and mlp.act.approximate == "none"
        assert torch.allclose(mlp.act(x), exact_gelu(x), atol=1e-6)
        assert not torch.allclose(mlp.act(x), nn.functional.gelu(x, approximate="tanh"), atol=1e-5)
    geluless = [mod for mod in m.modules() if isinstance(mod, nn.GELU) and mod.approximate != "none"]
    assert geluless == []


def test_pad_mlps_use_silu_uwm_and_dp_use_mish():
    pad = build_method("pad", "tiny").net
    for mlp in (pad.action_in.net, pad.action_out.net, pad.t_embed.mlp):
        assert isinstance(mlp[1], nn.SiLU)
        x = torch.linspace(-4, 4, 11)
        assert torch.allclose(mlp[1](x), x * torch.sigmoid(x))
    uwm = build_method("uwm", "tiny").denoiser
    dp = build_method("dp", "tiny")
    for mlp in (uwm.action_in.net, uwm.action_out.net, uwm.time_embed.mlp, dp.action_in.net, dp.action_out.net,
                dp.t_embed.mlp):
        assert isinstance(mlp[1], nn.Mish)


# ----------------------------------------------------------------------------- presets
@pytest.mark.parametrize("name", ["uwm", "dp", "gr1", "bc"])
def test_paper_preset_starts_from_imagenet_tiny_from_random(name):
    assert make_config(name, "paper").pretrained_encoder == "imagenet"
    assert make_config(name, "tiny").pretrained_encoder == "none"
    assert get_method_class(name).offline_overrides("paper")["pretrained_encoder"] == "none"
    assert "pretrained_encoder" not in get_method_class(name).offline_overrides("tiny")


def test_pad_paper_preset_augments_latents_and_has_no_image_encoder():
    assert make_config("pad", "paper").augment_latents is True
    assert make_config("pad", "tiny").augment_latents is False
    assert make_config("pad", "paper").pretrained_encoder == "none"  # PAD sees images through the frozen VAE only


def test_uwm_marginal_timestep_default_is_the_public_codes():
    assert make_config("uwm", "paper").marginal_t == "first_inference_step"
    assert build_method("uwm", "tiny").marginal_timestep() == 90
    assert build_method("uwm", "tiny", marginal_t="T").marginal_timestep() == 99


def test_quickstart_and_test_configs_never_download():
    from omegaconf import OmegaConf
    q = OmegaConf.load(ROOT / "uwmbench" / "configs" / "quickstart.yaml")
    assert q.method_size in ("tiny", "small")
    assert q.vae.preset in ("tiny", "small")  # fitted here, never a hub model
    for name in q.methods:
        assert make_config(name, q.method_size).pretrained_encoder == "none"


# ----------------------------------------------------------------------------- encoder weights
@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty torch hub cache and no network: any download raises."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    calls = []

    def no_network(url, dst, *a, **k):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    assert Path(torch.hub.get_dir()) == home / "hub"
    return home / "hub" / "checkpoints", calls


def bn_resnet18_state(tmp_seed: int = 3) -> dict[str, torch.Tensor]:
    """A torchvision (BatchNorm) ResNet-18 state dict with recognisable norm parameters."""
    import torchvision
    torch.manual_seed(tmp_seed)
    net = torchvision.models.resnet18()
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.fill_(2.5)
                mod.bias.fill_(-0.5)
                mod.running_mean.fill_(0.3)
    return net.state_dict()


def assert_loaded_with_fresh_group_norm(enc: ResNet18GN, state: dict[str, torch.Tensor]) -> None:
    net = enc.net
    assert torch.equal(net.conv1.weight, state["conv1.weight"])
    assert torch.equal(net.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])
    assert torch.equal(net.layer2[0].downsample[0].weight, state["layer2.0.downsample.0.weight"])
    norms = [mod for mod in net.modules() if isinstance(mod, nn.GroupNorm)]
    assert len(norms) == 20 and not any(isinstance(mod, nn.BatchNorm2d) for mod in net.modules())
    for gn in norms:  # BatchNorm affine does not carry over: fresh (1, 0), as the public code
        assert gn.num_groups == gn.num_channels // 16
        assert torch.equal(gn.weight, torch.ones_like(gn.weight)) and torch.equal(gn.bias, torch.zeros_like(gn.bias))
    assert net.fc.weight.shape == (768, 512)  # the classifier is replaced, not loaded


def test_local_resnet18_file_loads_and_group_norm_stays_fresh(tmp_path, offline):
    state = bn_resnet18_state()
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    enc = ResNet18GN(768, 64, pretrained=str(path))
    assert_loaded_with_fresh_group_norm(enc, state)
    assert offline[1] == []  # nothing downloaded
    # through a method config: DP with the real ResNet-18 width
    dp = build_method("dp", "tiny", encoder_width=64, pretrained_encoder=str(path))
    assert torch.equal(dp.obs_encoder.backbone.net.conv1.weight, state["conv1.weight"])


def test_group_norm_checkpoint_keeps_its_affine(tmp_path):
    """A file saved from a GroupNorm ResNet (no BatchNorm statistics) loads its norm affine too."""
    torch.manual_seed(1)
    src = ResNet18GN(768, 8)
    with torch.no_grad():
        src.net.bn1.weight.fill_(3.0)
    path = tmp_path / "gn.pth"
    torch.save(src.net.state_dict(), path)
    enc = ResNet18GN(768, 8, pretrained=str(path))
    assert torch.equal(enc.net.bn1.weight, src.net.bn1.weight)
    assert torch.equal(enc.net.conv1.weight, src.net.conv1.weight)


def test_imagenet_comes_from_the_torch_hub_cache(offline):
    ckpt_dir, calls = offline
    state = bn_resnet18_state()
    ckpt_dir.mkdir(parents=True)
    torch.save(state, ckpt_dir / RESNET18_FILE)
    enc = ResNet18GN(768, 64, pretrained="imagenet")
    assert_loaded_with_fresh_group_norm(enc, state)
    assert calls == []


def test_imagenet_offline_fails_at_build_with_one_line(offline):
    ckpt_dir, calls = offline
    with pytest.raises(FileNotFoundError) as e:
        build_method("dp", "tiny", encoder_width=64, pretrained_encoder="imagenet")
    msg = str(e.value)
    assert "\n" not in msg and len(calls) == 1 and calls[0].endswith(RESNET18_FILE)
    assert msg.startswith("pretrained_encoder=imagenet: cannot download ResNet-18 ImageNet weights")
    assert "offline?" in msg and f"put {RESNET18_FILE} in {ckpt_dir} " in msg
    assert "method.pretrained_encoder=/path/to/" in msg
    # the CLI's config path: one line, exit-2 class (ConfigPathError), the option named
    from uwmbench.config import ConfigPathError, build_method_from_config
    with pytest.raises(ConfigPathError) as e:
        build_method_from_config({"name": "uwm", "size": "tiny", "encoder_width": 64, "pretrained_encoder": "imagenet"})
    assert "\n" not in str(e.value) and "method: pretrained_encoder=imagenet" in str(e.value)
    assert RESNET18_FILE in str(e.value)


def test_vit_imagenet_offline_error_names_its_file(offline):
    from uwmbench.methods.nets import imagenet_state_dict
    ckpt_dir, _ = offline
    with pytest.raises(FileNotFoundError) as e:
        imagenet_state_dict("vit_b_32")
    assert "\n" not in str(e.value) and "ViT-B/32" in str(e.value) and f"put {VIT_B_32_FILE} in {ckpt_dir}" in str(e.value)


def test_imagenet_needs_the_real_architectures():
    with pytest.raises(ValueError, match="encoder_width=64"):
        build_method("uwm", "tiny", pretrained_encoder="imagenet")
    with pytest.raises(ValueError, match="pretrained_encoder=imagenet loads ViT-B/32"):
        build_method("gr1", "tiny", pretrained_encoder="imagenet")


@pytest.mark.parametrize("name", ["uwm", "dp", "gr1"])
def test_paper_preset_on_meta_device_does_not_download(name, offline):
    kw = {"vae": "random:sdxl"} if name == "uwm" else {}
    with torch.device("meta"):
        m = build_method(name, "paper", **kw)
    assert m.cfg.pretrained_encoder == "imagenet" and offline[1] == []
