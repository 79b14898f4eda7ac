import pytest
import torch
from diffusers import AutoencoderKL

from asuka.convert import load_decoder_checkpoint
from asuka.models.decoder import InpaintingDecoder
from asuka.testing import TINY_VAE
from misato.errors import MisatoError


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return AutoencoderKL(**TINY_VAE).eval()


@pytest.fixture(scope="module")
def decoder(vae):
    torch.manual_seed(1)
    return InpaintingDecoder.from_vae(vae).eval()


def hole_box() -> torch.Tensor:
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 10:40, 20:50] = 1
    return mask


def test_whole_image_hole_equals_kl_vae_decoder(vae, decoder):
    z = torch.randn(2, 4, 8, 8)
    image = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        ours = decoder(z, image, torch.ones(2, 1, 64, 64))
        plain = vae.decode(z).sample
        without_condition = decoder(z)
    torch.testing.assert_close(ours, plain)
    torch.testing.assert_close(without_condition, plain)


def test_no_hole_output_ignores_the_latent(decoder):
    image = torch.rand(1, 3, 64, 64) * 2 - 1
    known = torch.zeros(1, 1, 64, 64)
    with torch.no_grad():
        first = decoder(torch.randn(1, 4, 8, 8), image, known)
        second = decoder(torch.randn(1, 4, 8, 8), image, known)
    torch.testing.assert_close(first, second)


def test_hole_pixels_of_the_image_are_not_seen(decoder):
    z = torch.randn(1, 4, 8, 8)
    image, mask = torch.rand(1, 3, 64, 64) * 2 - 1, hole_box()
    other = image.clone()
    other[..., 10:40, 20:50] = -1
    with torch.no_grad():
        torch.testing.assert_close(decoder(z, image, mask), decoder(z, other, mask))


def test_condition_widths_follow_the_levels():
    sd = InpaintingDecoder()
    widths = [layer.out_channels for layer in sd.condition_encoder.layers]
    strides = [layer.stride[0] for layer in sd.condition_encoder.layers]
    assert widths == [128, 256, 512, 512, 512] and strides == [1, 1, 2, 2, 2]
    assert sd.condition_encoder.layers[0].in_channels == 4
    assert InpaintingDecoder(asymmetric_vqgan=True).condition_encoder.layers[0].in_channels == 3


def test_mask_downsampling_flavours():
    mask = torch.zeros(1, 1, 8, 8)
    mask[0, 0, 1, 1] = 1  # a single hole pixel that nearest-neighbour subsampling (rows/cols 0, 2, 4, 6) misses
    asuka = InpaintingDecoder(block_out_channels=(8, 8), norm_num_groups=4, layers_per_block=1)
    asym = InpaintingDecoder(block_out_channels=(8, 8), norm_num_groups=4, layers_per_block=1, asymmetric_vqgan=True)
    dilated = asuka.downsample_mask(mask, (4, 4))
    assert dilated[0, 0, 0, 0] == 1 and dilated.sum() == 1
    assert asym.downsample_mask(mask, (4, 4)).sum() == 0


# ---------------------------------------------------------------- Lightning checkpoints in the ldm layout

def to_ldm_layout(decoder: InpaintingDecoder) -> dict[str, torch.Tensor]:
    """The inverse mapping written independently: diffusers names → original ldm / Asymmetric-VQGAN names."""
    levels = len(decoder.decoder.up_blocks)
    attention = {"to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out", "group_norm": "norm"}
    out = {}
    for key, value in decoder.state_dict().items():
        if key.startswith("post_quant_conv."):
            out[key] = value
            continue
        if key.startswith("condition_encoder."):
            out["decoder.encoder." + key[len("condition_encoder."):]] = value
            continue
        name = key[len("decoder."):]
        parts = name.split(".")
        if parts[0] == "up_blocks":
            level = levels - 1 - int(parts[1])
            if parts[2] == "resnets":
                rest = ".".join(parts[4:]).replace("conv_shortcut", "nin_shortcut")
                name = f"up.{level}.block.{parts[3]}.{rest}"
            else:  # upsamplers.0.conv.*
                name = f"up.{level}.upsample.{'.'.join(parts[4:])}"
        elif parts[0] == "mid_block" and parts[1] == "resnets":
            name = f"mid.block_{int(parts[2]) + 1}.{'.'.join(parts[3:])}"
        elif parts[0] == "mid_block":
            inner = ".".join(parts[3:-1])
            name = f"mid.attn_1.{attention[inner]}.{parts[-1]}"
            if parts[-1] == "weight" and inner != "group_norm":
                value = value[:, :, None, None]
        elif parts[0] == "conv_norm_out":
            name = "norm_out." + parts[-1]
        out["decoder." + name] = value
    return out


@pytest.mark.parametrize("asymmetric", [False, True])
def test_lightning_checkpoint_loads_by_key_mapping(tmp_path, vae, asymmetric):
    torch.manual_seed(2)
    source = InpaintingDecoder(block_out_channels=(16, 24, 32, 32), layers_per_block=2, norm_num_groups=8,
                               asymmetric_vqgan=asymmetric).eval()
    state = to_ldm_layout(source)
    assert "decoder.mid.attn_1.q.weight" in state and "decoder.up.0.block.0.nin_shortcut.weight" in state
    state["encoder.conv_in.weight"] = torch.zeros(1)  # the VAE encoder and the loss live in the same file
    state["loss.discriminator.main.0.weight"] = torch.zeros(1)
    torch.save({"state_dict": state, "global_step": 50000}, tmp_path / "decoder.ckpt")
    loaded = load_decoder_checkpoint(tmp_path / "decoder.ckpt", vae=vae)
    assert loaded.config.asymmetric_vqgan is asymmetric
    assert tuple(loaded.config.block_out_channels) == (16, 24, 32, 32) and loaded.config.layers_per_block == 2
    z, image, mask = torch.randn(1, 4, 8, 8), torch.rand(1, 3, 64, 64) * 2 - 1, hole_box()
    with torch.no_grad():
        torch.testing.assert_close(loaded(z, image, mask), source(z, image, mask))


def test_checkpoint_without_post_quant_conv_takes_the_vae_one(tmp_path, vae, decoder):
    state = {k: v for k, v in to_ldm_layout(decoder).items() if not k.startswith("post_quant_conv.")}
    torch.save({"state_dict": state}, tmp_path / "asuka_decoder.ckpt")
    loaded = load_decoder_checkpoint(tmp_path / "asuka_decoder.ckpt", vae=vae)
    torch.testing.assert_close(loaded.post_quant_conv.weight, vae.post_quant_conv.weight)


def test_incomplete_checkpoint_is_reported(tmp_path, vae, decoder):
    state = to_ldm_layout(decoder)
    state.pop("decoder.up.1.block.0.conv1.weight")
    torch.save({"state_dict": state}, tmp_path / "broken.ckpt")
    with pytest.raises(MisatoError, match=r"missing keys: decoder\.up_blocks\.2\.resnets\.0\.conv1"):
        load_decoder_checkpoint(tmp_path / "broken.ckpt", vae=vae)


def test_unreadable_checkpoint(tmp_path):
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(MisatoError, match=r"junk\.ckpt: not a checkpoint of an inpainting decoder \(") as error:
        load_decoder_checkpoint(tmp_path / "junk.ckpt")
    assert "\n" not in str(error.value) and "weights_only" not in str(error.value)


def test_asymmetric_variant_equals_diffusers_asymmetric_autoencoder(tmp_path):
    """Independent reference: diffusers' own AsymmetricAutoencoderKL (MaskConditionDecoder), loaded from its folder."""
    from diffusers import AsymmetricAutoencoderKL

    torch.manual_seed(3)
    reference = AsymmetricAutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4, down_block_out_channels=(8, 16, 32, 32),
        up_block_types=("UpDecoderBlock2D",) * 4, up_block_out_channels=(8, 16, 32, 32), layers_per_down_block=1,
        layers_per_up_block=2, norm_num_groups=4, latent_channels=4).eval()
    reference.save_pretrained(tmp_path / "asym")
    ours = load_decoder_checkpoint(tmp_path / "asym")
    assert ours.config.asymmetric_vqgan and ours.config.layers_per_block == 2
    z, image = torch.randn(1, 4, 8, 8), torch.rand(1, 3, 64, 64) * 2 - 1
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 9:41, 19:51] = 1  # odd edges: nearest downsampling matters
    with torch.no_grad():
        expected = reference.decode(z, image=image, mask=mask).sample
        torch.testing.assert_close(ours(z, image, mask), expected, atol=1e-5, rtol=1e-5)
