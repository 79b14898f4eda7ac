"""The released ASUKA-FLUX files in their own formats: Lightning decoder checkpoint, none features, MAE."""
import argparse

import pytest
import torch
from diffusers import AutoencoderKL

from asuka.convert import load_mae_checkpoint
from asuka.flux.loaders import load_flux_decoder_checkpoint, load_none_features
from asuka.models import InpaintingDecoder, MAEPrior
from asuka.testing import TINY_FLUX_VAE, TINY_MAE, TINY_VAE
from misato.errors import MisatoError
from tests.asuka.test_decoder import to_ldm_layout


def encoder_to_ldm_layout(vae: AutoencoderKL) -> dict[str, torch.Tensor]:
    """diffusers Encoder names → BFL/LDM autoencoder names (written independently of the loader)."""
    attention = {"to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out", "group_norm": "norm"}
    out = {}
    for key, value in vae.encoder.state_dict().items():
        parts = key.split(".")
        if parts[0] == "down_blocks" and parts[2] == "resnets":
            name = f"down.{parts[1]}.block.{parts[3]}." + ".".join(parts[4:]).replace("conv_shortcut", "nin_shortcut")
        elif parts[0] == "down_blocks":
            name = f"down.{parts[1]}.downsample.conv.{parts[-1]}"
        elif parts[:2] == ["mid_block", "resnets"]:
            name = f"mid.block_{int(parts[2]) + 1}." + ".".join(parts[3:])
        elif parts[0] == "mid_block":
            inner = ".".join(parts[3:-1])
            name = f"mid.attn_1.{attention[inner]}.{parts[-1]}"
            if parts[-1] == "weight" and inner != "group_norm":
                value = value[:, :, None, None]
        elif parts[0] == "conv_norm_out":
            name = "norm_out." + parts[-1]
        else:
            name = key
        out["encoder." + name] = value
    return out


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A Lightning-style asuka_decoder.ckpt as released: LDM decoder keys (z = 16, unused deconv ``up_layers``),
    the AE encoder, loss weights and an argparse.Namespace of hyper-parameters."""
    folder = tmp_path_factory.mktemp("release")
    torch.manual_seed(0)
    source_vae = AutoencoderKL(**TINY_FLUX_VAE).eval()
    source = InpaintingDecoder.from_vae(source_vae).eval()
    with torch.no_grad():
        for parameter in source.condition_encoder.parameters():
            parameter.normal_(0, 0.1)
    state = {**to_ldm_layout(source), **encoder_to_ldm_layout(source_vae)}
    state["decoder.up_layers.0.deconv.weight"] = torch.zeros(256, 128, 4, 4)
    state["loss.discriminator.main.0.weight"] = torch.zeros(1)
    torch.save({"state_dict": state, "global_step": 10, "hyper_parameters": argparse.Namespace(lr=8e-5)},
               folder / "asuka_decoder.ckpt")
    return folder, source, source_vae


def test_decoder_checkpoint_loads_decoder_and_ae_encoder(released):
    folder, source, source_vae = released
    torch.manual_seed(1)
    vae = AutoencoderKL(**TINY_FLUX_VAE).eval()
    decoder, report, encoder_report = load_flux_decoder_checkpoint(folder / "asuka_decoder.ckpt", vae)
    assert report.ok and encoder_report.ok
    assert report.skipped == ["decoder.up_layers.0.deconv.weight", "loss.discriminator.main.0.weight"]
    assert decoder.config.latent_channels == 16 and decoder.post_quant_conv is None
    for key, value in source_vae.encoder.state_dict().items():
        assert torch.equal(vae.encoder.state_dict()[key], value)
    z, image = torch.randn(1, 16, 8, 8), torch.rand(1, 3, 64, 64) * 2 - 1
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 10:40, 20:50] = 1
    with torch.no_grad():
        assert torch.equal(decoder(z, image, mask), source(z, image, mask))
        torch.testing.assert_close(vae.encode(image).latent_dist.mean, source_vae.encode(image).latent_dist.mean)


def test_decoder_for_other_latents_and_broken_encoder_are_refused(tmp_path):
    torch.manual_seed(0)
    sd_decoder = InpaintingDecoder.from_vae(AutoencoderKL(**TINY_VAE))
    torch.save({"state_dict": to_ldm_layout(sd_decoder)}, tmp_path / "sd.ckpt")
    vae = AutoencoderKL(**TINY_FLUX_VAE)
    with pytest.raises(MisatoError, match="decodes 4-channel latents but the FLUX VAE has 16"):
        load_flux_decoder_checkpoint(tmp_path / "sd.ckpt", vae)
    flux_decoder = InpaintingDecoder.from_vae(vae)
    state = {**to_ldm_layout(flux_decoder), **encoder_to_ldm_layout(vae)}
    state.pop("encoder.conv_out.bias")
    torch.save({"state_dict": state}, tmp_path / "broken.ckpt")
    with pytest.raises(MisatoError, match=r"(?s)AE encoder.*missing keys: conv_out\.bias"):
        load_flux_decoder_checkpoint(tmp_path / "broken.ckpt", vae)


def test_none_features_and_mae_in_release_formats(tmp_path):
    torch.save(torch.randn(1, 256, 64), tmp_path / "txt_256.pt")
    torch.save(torch.randn(1, 24), tmp_path / "vec.pt")
    features = load_none_features(tmp_path / "txt_256.pt", tmp_path / "vec.pt", txt_dim=64, vec_dim=24)
    assert features.txt.shape == (1, 256, 64) and torch.equal(features.vec, torch.load(tmp_path / "vec.pt"))
    with pytest.raises(MisatoError, match=r"vec.pt: expected the CLIP none feature \[1, 768\]"):
        load_none_features(tmp_path / "txt_256.pt", tmp_path / "vec.pt", vec_dim=768)
    with pytest.raises(MisatoError, match="ASUKA-FLUX none feature not found"):
        load_none_features(tmp_path / "txt_256.pt", tmp_path / "missing.pt")
    torch.manual_seed(0)
    mae = MAEPrior(**TINY_MAE)
    torch.save({"model": mae.state_dict(), "epoch": 300, "args": argparse.Namespace(model="mae_vit_base_patch16")},
               tmp_path / "mae_300.pth")
    loaded = load_mae_checkpoint(tmp_path / "mae_300.pth", num_heads=2, decoder_num_heads=2, prior_layers=2)
    image, mask = torch.rand(1, 3, 64, 64), torch.zeros(1, 1, 64, 64)
    mask[..., :20, :30] = 1
    with torch.no_grad():
        assert torch.equal(loaded(image, mask), mae(image, mask))


def hand_wired_ldm_decoder(state: dict, z: torch.Tensor, image: torch.Tensor, mask: torch.Tensor,
                           groups: int) -> torch.Tensor:
    """The official LDM ``Decoder.forward`` (asuka_decoder.py) written out on the checkpoint's own key names."""
    import torch.nn.functional as F

    def p(name):
        return state[f"decoder.{name}"]

    def conv(x, name, **kw):
        return F.conv2d(x, p(f"{name}.weight"), p(f"{name}.bias"), **kw)

    def norm(x, name):
        return F.group_norm(x, groups, p(f"{name}.weight"), p(f"{name}.bias"), eps=1e-6)

    def resnet(x, name):
        h = conv(F.silu(norm(x, f"{name}.norm1")), f"{name}.conv1", padding=1)
        h = conv(F.silu(norm(h, f"{name}.norm2")), f"{name}.conv2", padding=1)
        shortcut = f"decoder.{name}.nin_shortcut.weight"
        return (conv(x, f"{name}.nin_shortcut") if shortcut in state else x) + h

    def attention(x):
        h = norm(x, "mid.attn_1.norm")
        q, k, v = (conv(h, f"mid.attn_1.{n}") for n in "qkv")
        b, c, height, width = q.shape
        weights = torch.softmax(torch.bmm(q.reshape(b, c, -1).permute(0, 2, 1), k.reshape(b, c, -1)) * c ** -0.5, 2)
        h = torch.bmm(v.reshape(b, c, -1), weights.permute(0, 2, 1)).reshape(b, c, height, width)
        return x + conv(h, "mid.attn_1.proj_out")

    levels = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("decoder.up."))
    blocks = 1 + max(int(k.split(".")[4]) for k in state if k.startswith("decoder.up.0.block."))
    h = resnet(attention(resnet(conv(z, "conv_in", padding=1), "mid.block_1")), "mid.block_2")
    features, x = {}, torch.cat([(1 - mask) * image, mask], dim=1)
    layer = 0
    while f"decoder.encoder.layers.{layer}.weight" in state:
        kw = {"padding": 1} if layer < 2 else {"stride": 2, "padding": 1}
        x = conv(x, f"encoder.layers.{layer}", **kw)
        features[tuple(x.shape)] = x
        x, layer = F.relu(x), layer + 1
    for level in reversed(range(levels)):
        m = F.interpolate(mask, size=h.shape[-2:], mode="area")
        m[m > 0] = 1
        h = h * m + features[tuple(h.shape)] * (1 - m)
        for block in range(blocks):
            h = resnet(h, f"up.{level}.block.{block}")
        if level != 0:
            h = conv(F.interpolate(h, scale_factor=2.0, mode="nearest"), f"up.{level}.upsample.conv", padding=1)
    h = h * mask + features[tuple(h.shape)] * (1 - mask)
    return conv(F.silu(norm(h, "norm_out")), "conv_out", padding=1)


def test_loaded_decoder_equals_the_hand_wired_ldm_decoder(tmp_path):
    torch.manual_seed(4)
    source = InpaintingDecoder(latent_channels=16, block_out_channels=(16, 24, 32, 32), layers_per_block=1,
                               norm_num_groups=8, use_post_quant_conv=False)
    with torch.no_grad():
        for parameter in source.parameters():
            parameter.normal_(0, 0.2)
    state = to_ldm_layout(source)
    torch.save({"state_dict": state}, tmp_path / "asuka_decoder.ckpt")
    decoder, report, encoder_report = load_flux_decoder_checkpoint(tmp_path / "asuka_decoder.ckpt",
                                                                   AutoencoderKL(**TINY_FLUX_VAE))
    assert report.ok and encoder_report is None
    z, image = torch.randn(2, 16, 8, 8), torch.rand(2, 3, 64, 64) * 2 - 1
    mask = torch.zeros(2, 1, 64, 64)
    mask[0, :, 10:40, 21:50] = 1
    mask[1, :, 3:7, 3:60] = 1
    with torch.no_grad():
        torch.testing.assert_close(decoder(z, image, mask), hand_wired_ldm_decoder(state, z, image, mask, 8),
                                   rtol=1e-4, atol=1e-4)
