"""``uwmbench import-checkpoint`` against checkpoints written by the PUBLIC UWM code.

The fixtures in ``tests/fixtures/public_ckpt/<method>/`` were made by
``scripts/make_public_fixtures.py`` running github.com/WEIRDLabUW/unified-world-model (see the
README there): ``models.pt`` as the public train scripts save it (random weights, reduced size)
and ``io.pt`` with the public model's outputs for fixed inputs. After import, our networks
must reproduce those outputs (noise predictions for UWM/DP/PAD, actions and pixels for GR1)
to < 1e-5 relative (max |ours - public| / max |public|). ``paper_shapes.json`` lists the public
state-dict shapes at paper (LIBERO config) size: the mapping must place all of them.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from uwmbench.benchmarks import import_checkpoint as ic
from uwmbench.benchmarks.checkpoint import load_method, load_weights_into, resolve_checkpoint
from uwmbench.cli import main as cli_main

FIX = Path(__file__).parent / "fixtures" / "public_ckpt"
METHODS = ("uwm", "dp", "pad", "gr1")
TOL = 1e-5
# whole 10-step DDIM loops: float32 rounding of the noise predictions (~1e-6) is amplified by
# the early steps' 1/sqrt(alpha_bar_t) (the x0 estimate at t=90), so a loop gets ~1e-5
TOL_LOOP = 1e-4


def _fixture(method: str) -> dict:
    return json.loads((FIX / method / "fixture.json").read_text())


def _io(method: str) -> dict:
    return torch.load(FIX / method / "io.pt", map_location="cpu", weights_only=True)


def _rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    assert ours.shape == ref.shape, (tuple(ours.shape), tuple(ref.shape))
    return float((ours.double() - ref.double()).abs().max() / ref.double().abs().max())


def _images(io: dict) -> torch.Tensor:
    """Public (B, V, T, H, W, 3) uint8 -> ours (B, V, T, 3, H, W)."""
    return io["images"].permute(0, 1, 2, 5, 3, 4).contiguous()


def _latents(z: torch.Tensor) -> torch.Tensor:
    """Public latents (B, V, C, T, h, w) -> ours (B, V, T, C, h, w)."""
    return z.permute(0, 1, 3, 2, 4, 5).contiguous()


def _cli(*args: str) -> int:
    return cli_main(["import-checkpoint", *map(str, args)])


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> dict[str, Path]:
    """Each fixture imported once through the CLI, with the arguments fixture.json records."""
    root = tmp_path_factory.mktemp("imported")
    out = {}
    for m in METHODS:
        rc = _cli(FIX / m / "models.pt", "--method", m, "--out", root / m, "--frame-size", 32,
                  *_fixture(m)["uwmbench_import_args"])
        assert rc == 0
        out[m] = root / m
    return out


# ----------------------------------------------------------------------------- numerics
@torch.no_grad()
def outputs(method: str, model, io: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{name: (ours, public)} for the fixture's inputs, in our layout."""
    if method == "uwm":
        cond = model._condition(_images(io), train=False)
        eps_a, eps_o = model.denoiser(cond, io["noisy_action"], io["action_t"], _latents(io["noisy_next_obs"]),
                                      io["next_obs_t"])
        return {"features": (cond, io["features"]), "action_noise": (eps_a, io["action_noise"]),
                "next_obs_noise": (eps_o, _latents(io["next_obs_noise"]))}
    if method == "dp":
        feats = model.encode_obs(_images(io), train=False)
        b = feats.shape[0]  # public features are frame-major (t, v, d), ours view-major (v, t, d)
        public_feats = io["features"].view(b, model.cfg.obs_frames, len(model.cfg.views), -1).transpose(1, 2)
        eps = model.denoise(io["noisy_action"], io["t"], feats)
        return {"features": (feats, public_feats.reshape(b, -1)), "action_noise": (eps, io["action_noise"])}
    if method == "pad":
        eps_a, eps_o = model.net(_latents(io["obs_latent"]), io["noisy_action"], _latents(io["noisy_next_obs"]), io["t"])
        return {"action_noise": (eps_a, io["action_noise"]), "next_obs_noise": (eps_o, _latents(io["next_obs_noise"]))}
    actions, pixels = model(model.preprocess(_images(io), train=False))
    return {"actions": (actions, io["actions"]), "pixels": (pixels, _latents(io["pixels"]))}


@pytest.mark.parametrize("method", METHODS)
def test_outputs_match_public_code(imported, method):
    model = load_method(imported[method])
    errors = {k: _rel(ours, ref) for k, (ours, ref) in outputs(method, model, _io(method)).items()}
    print(f"{method}: max relative error {errors}")
    assert max(errors.values()) < TOL, errors


def test_sampling_loops_match_public_code(imported, monkeypatch):
    """Whole DDIM loops (10 of 100 steps, clip_sample) from the same initial noise: UWM policy
    mode (next latents held at t=90) and video mode (actions held at t=90) against the public
    sample_marginal_action / sample_marginal_next_obs; DP against the public sample(), ours in
    env units through the imported action normaliser."""
    io = _io("uwm")
    uwm = load_method(imported["uwm"])
    for mode, key, out in (("policy", "sample_marginal_action", "action"),
                           ("video", "sample_marginal_next_obs", "next_obs_latent")):
        noise = [io["init_action"], _latents(io["init_next_obs"])]
        monkeypatch.setattr(uwm, "_randn", lambda shape, gen: noise.pop(0))
        got = uwm.sample({"obs": _images(io)}, mode)[out]
        ref = io[key] if out == "action" else _latents(io[key])
        print(mode, _rel(got, ref))
        assert _rel(got, ref) < TOL_LOOP, (mode, _rel(got, ref))
    io = _io("dp")
    dp = load_method(imported["dp"])
    torch.manual_seed(int(io["sample_seed"]))
    got = dp.predict_action({"obs": _images(io)})
    ref = io["sample"] * dp.action_normalizer.scale + dp.action_normalizer.offset
    print("dp sample", _rel(got, ref))
    assert _rel(got, ref) < TOL_LOOP, _rel(got, ref)


@pytest.mark.parametrize("method", ["uwm", "pad"])
def test_vae_and_latent_scaling_match_public_code(imported, method):
    """The VAE weights and the latent scale (public: x scaling_factor / 3) come through: our
    decoder gives the public decoder's images (ours are rounded to uint8)."""
    model = load_method(imported[method])
    io = _io(method)
    ours = model.latent_encoder.decode(_latents(io["vae_latents"])).float()
    ref = _latents(io["vae_decoded"]).clamp(0, 1) * 255
    assert model.latent_encoder.extra_scale == 3.0
    assert float((ours - ref).abs().max()) <= 1.0
    assert float(ref.std()) > 10  # not a constant image


def test_action_normaliser_and_folder_contents(imported):
    dp = load_method(imported["dp"])
    norm = _fixture("dp")["action_normalizer"]
    assert dp.cfg.action_norm == "minmax"
    assert torch.allclose(dp.action_normalizer.offset, torch.tensor(norm["offset"]))
    assert torch.allclose(dp.action_normalizer.scale, torch.tensor(norm["scale"]))
    uwm = load_method(imported["uwm"])
    assert uwm.cfg.action_norm == "none" and bool((uwm.action_normalizer.scale == 1).all())

    from uwmbench.benchmarks.evaluate import checkpoint_flip as _checkpoint_flip
    from uwmbench.benchmarks.evaluate import checkpoint_frame_size
    ckpt = resolve_checkpoint(imported["gr1"])  # the --out folder works as checkpoint=...
    assert ckpt.parent.name == "checkpoints" and (ckpt / "model.safetensors").is_file()
    assert checkpoint_frame_size(ckpt) == (32, 32)
    assert _checkpoint_flip(ckpt) is True
    meta = json.loads((ckpt / "meta.json").read_text())["imported_from"]
    assert set(meta["dropped"]) == {"decoder_pos_embed", "obs_encoder.img_encoder.model.heads.weight",
                                    "obs_encoder.img_encoder.model.heads.bias"}
    assert all(meta["dropped"].values())  # every drop has its reason


def test_run_pretrain_checkpoint_loads_every_tensor(imported):
    """`uwmbench run pretrain.checkpoint=OUT` initialises the run's method with
    load_weights_into: built from the config the import reports, nothing may be skipped."""
    from uwmbench.methods.base import build_method
    cfg = json.loads((resolve_checkpoint(imported["uwm"]) / "method.json").read_text())
    name, size = cfg.pop("name"), cfg.pop("size")
    target = build_method(name, size, **{k: v for k, v in cfg.items() if k != "vae"}, vae="random:tiny")
    load_weights_into(target, imported["uwm"])
    source = load_method(imported["uwm"]).state_dict()
    for k, v in target.state_dict().items():
        assert torch.equal(v, source[k]), k


def test_auto_size_infers_the_fixture_size(tmp_path):
    ckpt = ic.import_checkpoint(FIX / "uwm" / "models.pt", "uwm", tmp_path / "auto")
    cfg = json.loads((ckpt / "method.json").read_text())
    assert cfg["size"] == "tiny"
    assert (cfg["time_hidden"], cfg["action_hidden"], cfg["encoder_width"]) == (128, 256, 16)


def test_dp_feature_order_permutation_is_what_makes_dp_match(imported, tmp_path, monkeypatch):
    """Sensitivity check: without the AdaLN column permutation (public DP features are
    frame-major) the noise predictions differ by far more than the tolerance."""
    monkeypatch.setattr(ic, "_permute_dp_condition", lambda *a, **k: None)
    ckpt = ic.import_checkpoint(FIX / "dp" / "models.pt", "dp", tmp_path / "dp", "tiny", {"encoder_width": 16})
    errors = {k: _rel(o, r) for k, (o, r) in outputs("dp", load_method(ckpt), _io("dp")).items()}
    assert errors["action_noise"] > 1e-3


def test_paper_size_public_state_dicts_map_completely():
    """The public models at their LIBERO config size (the released LIBERO-90 UWM checkpoint's
    layout): every tensor maps onto our paper preset with no override, shapes equal; only
    the documented tensors are dropped (GR1's unused classifier: 590,592 parameters)."""
    from uwmbench.methods.base import get_method_class, make_config
    shapes = json.loads((FIX / "paper_shapes.json").read_text())["methods"]
    for method in METHODS:
        state = {k: (torch.zeros(s) if k.endswith("vae.shift") else torch.full(s, 3.0) if k.endswith("vae.scale")
                     else torch.empty(s, device="meta")) for k, s in shapes[method]["state_dict"].items()}
        inferred = ic.infer_config(method, state)
        size, over = ic.suggest_size(method, inferred)
        assert (size, over) == ("paper", {}), (method, size, over)
        cls = get_method_class(method)
        cfg = make_config(method, "paper", cls.offline_overrides("paper"))
        mapping = ic.map_state(method, {"model": state}, len(cfg.views), cfg.obs_frames)
        with torch.device("meta"):
            ours = cls(make_config(method, "paper", {**cls.offline_overrides("paper"), **mapping.config}))
        ic.check_shapes(Path("paper"), method, "paper", mapping, ours.state_dict(), inferred)
        n_ours = sum(p.numel() for p in ours.parameters())
        dropped = {k: state[k].numel() for k in mapping.dropped}
        if method == "gr1":
            heads = dropped["obs_encoder.img_encoder.model.heads.weight"] + dropped["obs_encoder.img_encoder.model.heads.bias"]
            assert heads == 590_592
            assert shapes[method]["parameters"] - n_ours == heads + dropped["decoder_pos_embed"]
        else:
            assert shapes[method]["parameters"] == n_ours, method


# ----------------------------------------------------------------------------- errors
def _error(capsys, *args) -> str:
    assert _cli(*args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def test_wrong_method_is_one_clear_line(capsys, tmp_path):
    f = FIX / "uwm" / "models.pt"
    err = _error(capsys, f, "--method", "dp", "--out", tmp_path / "o")
    assert str(f) in err and "noise_pred_net.registers" in err and "--method uwm" in err
    err = _error(capsys, f, "--method", "diffusion", "--out", tmp_path / "o")
    assert "'diffusion'" in err and "uwm, dp, pad, gr1" in err
    assert not (tmp_path / "o").exists()


def test_truncated_or_foreign_file_is_one_clear_line(capsys, tmp_path):
    data = (FIX / "pad" / "models.pt").read_bytes()
    bad = tmp_path / "models.pt"
    bad.write_bytes(data[: len(data) // 2])
    err = _error(capsys, bad, "--method", "pad", "--out", tmp_path / "o")
    assert str(bad) in err and "truncated" in err
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    err = _error(capsys, text, "--method", "pad", "--out", tmp_path / "o")
    assert str(text) in err and "not a torch checkpoint" in err
    err = _error(capsys, tmp_path / "missing.pt", "--method", "pad", "--out", tmp_path / "o")
    assert "missing.pt" in err and "no such file" in err


def test_foreign_pickled_objects_need_trust_pickle(capsys, tmp_path):
    import fractions
    ckpt = torch.load(FIX / "gr1" / "models.pt", map_location="cpu", weights_only=True)
    f = tmp_path / "models.pt"
    torch.save({**ckpt, "extra": fractions.Fraction(1, 3)}, f)
    err = _error(capsys, f, "--method", "gr1", "--size", "tiny", "--out", tmp_path / "o")
    assert str(f) in err and "fractions.Fraction" in err and "--trust-pickle" in err
    assert _cli(f, "--method", "gr1", "--size", "tiny", "--out", tmp_path / "o", "--trust-pickle") == 0


def test_checkpoint_of_another_size_is_one_clear_line(capsys, tmp_path):
    f = FIX / "uwm" / "models.pt"
    err = _error(capsys, f, "--method", "uwm", "--size", "paper", "--out", tmp_path / "o")
    # the key (public and ours), both shapes and the size the file looks like
    assert str(f) in err and "key 'obs_encoder.img_encoder.model.conv1.weight'" in err
    assert "(ours 'obs_encoder.backbone.net.conv1.weight')" in err
    assert "(16, 3, 7, 7) in the checkpoint but (64, 3, 7, 7) in uwm size=paper" in err
    assert "--size tiny" in err and "--set time_hidden=128" in err
    err = _error(capsys, f, "--method", "uwm", "--size", "tiny", "--out", tmp_path / "o")  # missing overrides
    assert "shape" in err and "--set action_hidden=256" in err


def test_out_folder_is_not_overwritten(capsys, imported):
    err = _error(capsys, FIX / "gr1" / "models.pt", "--method", "gr1", "--out", imported["gr1"])
    assert "already holds checkpoints" in err and "--force" in err


def test_bare_state_dict_and_ddp_prefix_are_accepted(tmp_path):
    ckpt = torch.load(FIX / "gr1" / "models.pt", map_location="cpu", weights_only=True)
    f = tmp_path / "bare.pt"
    torch.save({f"module.{k}": v for k, v in ckpt["model"].items()}, f)
    out = ic.import_checkpoint(f, "gr1", tmp_path / "o", "tiny")
    ref = load_method(ic.import_checkpoint(FIX / "gr1" / "models.pt", "gr1", tmp_path / "r", "tiny"))
    got = load_method(out)
    for k, v in ref.state_dict().items():
        assert torch.equal(v, got.state_dict()[k]), k
    shutil.rmtree(tmp_path / "o")
