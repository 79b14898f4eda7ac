import numpy as np
import pytest
import torch

from asuka.convert import load_mae_checkpoint, mae_config_from_state_dict
from asuka.models.mae import MAEPrior, sincos_pos_embed_2d
from asuka.testing import TINY_MAE
from misato.errors import MisatoError

# Parameter names of MAE-FAR's fine-tuned model (models_mae.py, MaskedAutoencoderViTFinetune), written out by hand.
OFFICIAL_BLOCK_KEYS = [
    "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
    "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias",
]


def official_mae_keys(depth: int, decoder_depth: int, finetune: bool = True) -> set[str]:
    keys = {"pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias",
            "decoder_embed.weight", "decoder_embed.bias", "mask_token", "decoder_pos_embed", "decoder_norm.weight",
            "decoder_norm.bias", "decoder_pred.weight", "decoder_pred.bias"}
    keys |= {f"blocks.{i}.{k}" for i in range(depth) for k in OFFICIAL_BLOCK_KEYS}
    keys |= {f"decoder_blocks.{i}.{k}" for i in range(decoder_depth) for k in OFFICIAL_BLOCK_KEYS}
    if finetune:
        keys |= {"decoder_patch_embed.proj.weight", "decoder_patch_embed.proj.bias", "alpha"}
    return keys


@pytest.fixture(scope="module")
def mae():
    torch.manual_seed(0)
    return MAEPrior(**TINY_MAE).eval()


def box(size: int, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    mask = torch.zeros(1, 1, size, size)
    mask[..., y0:y1, x0:x1] = 1
    return mask


def test_vit_b_prior_shape_and_official_layout():
    torch.manual_seed(0)
    model = MAEPrior().eval()
    assert set(model.state_dict()) == official_mae_keys(12, 8)
    assert model.pos_embed.shape == (1, 256, 768) and model.decoder_pos_embed.shape == (1, 256, 512)
    with torch.no_grad():
        prior = model(torch.rand(2, 3, 512, 512), box(512, 100, 300, 50, 250).expand(2, -1, -1, -1))
    assert prior.shape == (2, 256, 512) and torch.isfinite(prior).all()


def test_sincos_positions_match_the_formula():
    dim, grid = 16, 4
    table = sincos_pos_embed_2d(dim, grid).numpy()
    omega = 1.0 / 10000 ** (np.arange(4) / 4.0)
    token = 2 * grid + 3  # row y=2, column x=3
    expected = np.concatenate([np.sin(3 * omega), np.cos(3 * omega), np.sin(2 * omega), np.cos(2 * omega)])
    np.testing.assert_allclose(table[token], expected, atol=1e-6)


def test_token_masks_by_hand(mae):
    hole = box(64, 0, 16, 0, 24)  # token (0,0) fully masked, token (0,1) half masked
    masked, partial = mae.token_masks(hole)
    expected_masked = np.zeros(16, bool)
    expected_masked[[0, 1]] = True
    np.testing.assert_array_equal(masked[0].numpy(), expected_masked)
    np.testing.assert_array_equal(partial[0].numpy(), np.eye(16, dtype=bool)[1])


def test_encoder_ignores_masked_tokens_like_mae_on_the_visible_subset(mae):
    normalized = torch.randn(1, 3, 64, 64)
    hole = box(64, 16, 48, 16, 32)
    masked, _ = mae.token_masks(hole)
    with torch.no_grad():
        ours = mae.encode(normalized, masked)
        # independent reference: MAE's own way, running the encoder on the visible tokens only
        tokens = (mae.patch_embed(normalized) + mae.pos_embed)[:, ~masked[0]]
        for block in mae.blocks:
            tokens = block(tokens)
        reference = mae.norm(tokens)
        changed = normalized.clone()
        changed[..., 16:48, 16:32] = 5.0
        ours_changed = mae.encode(changed, masked)
    torch.testing.assert_close(ours[:, ~masked[0]], reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours_changed[:, ~masked[0]], ours[:, ~masked[0]])


def test_partial_tokens_blend_with_clamped_alpha(mae):
    normalized = torch.randn(1, 3, 64, 64)
    hole = box(64, 0, 16, 0, 24)
    latent = torch.randn(1, 16, TINY_MAE["embed_dim"])
    with torch.no_grad():
        embedded = mae.decoder_patch_embed(torch.cat([normalized, hole], 1))
        visible = mae.decoder_embed(latent)
        for raw_alpha, alpha in ((0.25, 0.25), (3.0, 1.0), (-1.0, 0.0)):
            mae.alpha.fill_(raw_alpha)
            tokens = mae.decoder_input(latent, normalized, hole) - mae.decoder_pos_embed
            torch.testing.assert_close(tokens[0, 0], mae.mask_token[0, 0])
            torch.testing.assert_close(tokens[0, 1], alpha * mae.mask_token[0, 0] + (1 - alpha) * embedded[0, 1])
            torch.testing.assert_close(tokens[0, 2:], visible[0, 2:])
        mae.alpha.fill_(1.0)


def test_prior_uses_first_k_decoder_blocks(mae):
    image, mask = torch.rand(1, 3, 64, 64), box(64, 8, 40, 8, 40)
    with torch.no_grad():
        normalized, hole = mae.prepare_inputs(image, mask)
        x = mae.decoder_input(mae.encode(normalized, mae.token_masks(hole)[0]), normalized, hole)
        for block in mae.decoder_blocks[:1]:
            x = block(x)
        torch.testing.assert_close(mae(image, mask, prior_layers=1), x)
        assert mae(image, mask).shape == (1, 16, TINY_MAE["decoder_embed_dim"])


def test_full_hole_and_reconstruction(mae):
    with torch.no_grad():
        prior = mae(torch.rand(2, 3, 64, 64), torch.ones(2, 1, 64, 64))
        recon = mae.reconstruct(torch.rand(1, 3, 96, 96), box(96, 10, 50, 10, 50))
    assert torch.isfinite(prior).all()
    assert recon.shape == (1, 3, 64, 64)
    images = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(mae.unpatchify(mae.patchify(images)), images)
    assert mae.patchify(images).shape == (2, 16, 16 * 16 * 3)


def test_checkpoint_roundtrip_and_strict_report(tmp_path, mae):
    state = {k: v.clone() for k, v in mae.state_dict().items()}
    torch.save({"model": state, "epoch": 300}, tmp_path / "mae_300.pth")
    loaded = load_mae_checkpoint(tmp_path / "mae_300.pth", num_heads=2, decoder_num_heads=2, prior_layers=2)
    image, mask = torch.rand(1, 3, 64, 64), box(64, 8, 40, 8, 40)
    with torch.no_grad():
        torch.testing.assert_close(loaded(image, mask), mae(image, mask))
    broken = dict(state)
    broken.pop("alpha")
    broken["head.weight"] = torch.zeros(3)
    torch.save({"model": broken}, tmp_path / "broken.pth")
    with pytest.raises(MisatoError, match=r"missing keys: alpha; unexpected keys: head\.weight"):
        load_mae_checkpoint(tmp_path / "broken.pth", num_heads=2, decoder_num_heads=2, prior_layers=2)


def test_pretraining_checkpoint_has_no_partial_embedding():
    torch.manual_seed(0)
    pretrained = MAEPrior(**{**TINY_MAE, "partial_token_embedding": False})
    assert set(pretrained.state_dict()) == official_mae_keys(2, 3, finetune=False)
    config = mae_config_from_state_dict(pretrained.state_dict())
    assert config["partial_token_embedding"] is False
    assert (config["embed_dim"], config["depth"], config["decoder_depth"], config["image_size"]) == (32, 2, 3, 64)


def test_hole_pixels_never_reach_the_prior(mae):
    image, mask = torch.rand(1, 3, 100, 100), box(100, 13, 57, 21, 70)
    other = image.clone()
    other[..., 13:57, 21:70] = torch.rand(1, 3, 44, 49)
    with torch.no_grad():
        torch.testing.assert_close(mae(image, mask), mae(other, mask))
