"""MAE-FAR: the network against the upstream config, its MAE and attention pieces against independent references,
the official Lightning file end to end through the adapter at 256 and 512, polarity, paste-back, bad files."""
import json
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import baselines.maefar as maefar
from baselines import create_method
from baselines.maefar import build_network, masked_position_encoding
from misato.cli import main
from misato.errors import MisatoError
from misato.io import list_images, read_image, read_mask
from misato.weights import file_sha256
from tests.helpers import (TRIPWIRE, TRIPWIRE_CLASS, assert_fills_the_hole, save_lightning_checkpoint, smooth_image,
                           write_misato_folder)

# MAE/util/misc.py mae_vit_base_patch16 + generators.py / ffc.py / layers.py with g_args of config_FAR_places2.yml
EMBED, DEPTH, DEC, DEC_DEPTH, PATCH, TOKENS, MLP = 768, 12, 512, 8, 16, 256, 4
WIDTHS, BLOCKS, REL_POS_NUM = (64, 128, 256, 512), 9, 128
TINY = {"mae": dict(image_size=256, patch_size=16, embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32,
                    decoder_depth=2, decoder_num_heads=2, mlp_ratio=2.0, prior_layers=2, partial_token_embedding=False),
        "width": 4, "blocks": 1}


def expected_shapes() -> dict:
    """Every tensor of the Lightning file's ``mae.*`` and ``acr.*`` parts, written out from the upstream layer
    definitions (timm ViT blocks; FFC with 75 % global channels, LFU off, bias-free; GateConv; BatchNorm)."""
    shapes = {}

    def linear(key, cin, cout):
        shapes.update({f"{key}.weight": (cout, cin), f"{key}.bias": (cout,)})

    def norm(key, c):
        shapes.update({f"{key}.weight": (c,), f"{key}.bias": (c,)})

    def bn(key, c):
        norm(key, c)
        shapes.update({f"{key}.running_mean": (c,), f"{key}.running_var": (c,), f"{key}.num_batches_tracked": ()})

    def vit_block(key, dim):
        norm(f"{key}.norm1", dim)
        linear(f"{key}.attn.qkv", dim, 3 * dim)
        linear(f"{key}.attn.proj", dim, dim)
        norm(f"{key}.norm2", dim)
        linear(f"{key}.mlp.fc1", dim, MLP * dim)
        linear(f"{key}.mlp.fc2", MLP * dim, dim)

    shapes["mae.patch_embed.proj.weight"] = (EMBED, 3, PATCH, PATCH)
    shapes["mae.patch_embed.proj.bias"] = (EMBED,)
    shapes["mae.pos_embed"] = (1, TOKENS, EMBED)
    for i in range(DEPTH):
        vit_block(f"mae.blocks.{i}", EMBED)
    norm("mae.norm", EMBED)
    linear("mae.decoder_embed", EMBED, DEC)
    shapes["mae.mask_token"] = (1, 1, DEC)
    shapes["mae.decoder_pos_embed"] = (1, TOKENS, DEC)
    for i in range(DEC_DEPTH):
        vit_block(f"mae.decoder_blocks.{i}", DEC)
    norm("mae.decoder_norm", DEC)
    linear("mae.decoder_pred", DEC, PATCH * PATCH * 3)

    g = "acr.G"
    shapes[f"{g}.conv1.weight"], shapes[f"{g}.conv1.bias"] = (64, 4, 7, 7), (64,)
    bn(f"{g}.bn1", 64)
    for i, (cin, cout) in enumerate(zip(WIDTHS, WIDTHS[1:]), start=2):
        shapes[f"{g}.conv{i}.weight"], shapes[f"{g}.conv{i}.bias"] = (cout, cin, 3, 3), (cout,)
        bn(f"{g}.bn{i}", cout)
    local, glob = 128, 384  # 512 channels, int(512 * 0.75) global
    for b in range(BLOCKS):
        for layer in ("ffc1", "ffc2"):
            key = f"{g}.middle.{b}.{layer}"
            shapes[f"{key}.ffc.convl2l.weight"] = (local, local, 3, 3)
            shapes[f"{key}.ffc.convl2g.weight"] = (glob, local, 3, 3)
            shapes[f"{key}.ffc.convg2l.weight"] = (local, glob, 3, 3)
            shapes[f"{key}.ffc.convg2g.conv1.0.weight"] = (glob // 2, glob, 1, 1)
            bn(f"{key}.ffc.convg2g.conv1.1", glob // 2)
            shapes[f"{key}.ffc.convg2g.fu.conv_layer.weight"] = (glob, glob, 1, 1)  # (re, im) of 192 channels
            bn(f"{key}.ffc.convg2g.fu.bn", glob)
            shapes[f"{key}.ffc.convg2g.conv2.weight"] = (glob, glob // 2, 1, 1)
            bn(f"{key}.bn_l", local)
            bn(f"{key}.bn_g", glob)
    for i, (cin, cout) in enumerate(zip(WIDTHS[::-1], WIDTHS[::-1][1:]), start=1):  # ConvTranspose: (in, out, k, k)
        shapes[f"{g}.convt{i}.weight"], shapes[f"{g}.convt{i}.bias"] = (cin, cout, 3, 3), (cout,)
        bn(f"{g}.bnt{i}", cout)
    shapes[f"{g}.convt4.weight"], shapes[f"{g}.convt4.bias"] = (3, 64, 7, 7), (3,)

    gc = "acr.GCs"
    for i, (cin, cout) in enumerate(zip((DEC + 2, 512, 256, 128), (512, 256, 128, 64))):
        shapes[f"{gc}.convt{i}.gate_conv.weight"] = (cin, 2 * cout, 4, 4)
        shapes[f"{gc}.convt{i}.gate_conv.bias"] = (2 * cout,)
        bn(f"{gc}.bnt{i}", cout)
    for name in ("alpha1", "alpha2", "alpha3", "alpha4", "alpha_att1", "alpha_att2", "alpha5", "alpha6"):
        shapes[f"{gc}.{name}"] = ()
    shapes[f"{gc}.rel_pos_emb.weight"] = (REL_POS_NUM, 64)
    shapes[f"{gc}.direct_emb.weight"] = (4, 64)
    return shapes


def test_network_matches_the_upstream_config():
    with torch.device("meta"):
        net = build_network()
    got = {key: tuple(value.shape) for key, value in net.state_dict().items()}
    expected = expected_shapes()
    assert sorted(got) == sorted(expected)
    assert got == expected
    count = sum(int(np.prod(shape)) for key, shape in expected.items()
                if not key.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert count == sum(p.numel() for p in net.parameters()) == 152_971_083
    assert sum(p.numel() for p in net.mae.parameters()) == 111_982_592  # what test_custom.py prints as 'MAE'
    assert sum(p.numel() for p in net.acr.G.parameters()) == 27_049_795  # 'G'
    assert sum(p.numel() for p in net.acr.GCs.parameters()) == 13_938_696  # 'GCs'


# --- the pieces against independent references ----------------------------------------------------------

def test_decoder_scores_equal_torch_multihead_attention():
    from asuka.models.mae import MAEPrior

    torch.manual_seed(0)
    mae = MAEPrior(**TINY["mae"]).eval()
    image = torch.rand(2, 3, 256, 256)
    mask = torch.zeros(2, 1, 256, 256)
    mask[0, :, 40:120, 30:200] = 1  # whole tokens and partial ones
    mask[1, :, 0:16, 0:20] = 1
    features, scores = mae.features_and_scores(image, mask)
    assert features.shape == (2, 32, 16, 16) and scores.shape == (2, 256, 256)
    torch.testing.assert_close(scores.sum(-1), torch.ones(2, 256))

    # the features: every decoder block (as forward) then decoder_norm, token i at (i // 16, i % 16)
    tokens = mae.decoder_norm(mae(image, mask, prior_layers=2))
    torch.testing.assert_close(features, tokens.transpose(1, 2).reshape(2, 32, 16, 16), atol=1e-5, rtol=1e-5)

    # the scores: torch's multi-head attention weights with the all-hole tokens as padded keys, per block
    normalized, hole = mae.prepare_inputs(image, mask)
    masked, partial = mae.token_masks(hole)
    x = mae.decoder_input(mae.encode(normalized, masked), normalized, hole)
    inside = masked & ~partial
    assert inside[0].any() and inside[1].any() and (partial[0].any())
    reference = torch.zeros(2, 256, 256)
    for block in mae.decoder_blocks:
        mha = torch.nn.MultiheadAttention(32, 2, batch_first=True)
        mha.in_proj_weight.data.copy_(block.attn.qkv.weight)
        mha.in_proj_bias.data.copy_(block.attn.qkv.bias)
        mha.out_proj.weight.data.copy_(block.attn.proj.weight)
        mha.out_proj.bias.data.copy_(block.attn.proj.bias)
        h = block.norm1(x)
        _, weights = mha(h, h, h, key_padding_mask=inside, need_weights=True, average_attn_weights=True)
        attended, _ = mha(h, h, h, need_weights=False)
        reference += weights / len(mae.decoder_blocks)
        x = x + attended
        x = x + block.mlp(block.norm2(x))
    torch.testing.assert_close(scores, reference, atol=1e-6, rtol=1e-5)


def test_attention_transfer_equals_upstreams_grouped_transposed_convolution():
    transfer = maefar._modules().attention_transfer
    torch.manual_seed(0)
    for rate in (2, 4):  # 256 and 512 inputs
        x = torch.randn(2, 3, 16 * rate, 16 * rate)
        scores = torch.rand(2, 256, 256).softmax(-1)
        # GroupConvAttention as written upstream: key patches as the kernels of a transposed conv, one group per
        # sample, fed with the score maps of every key
        k, pad = 2 * rate, rate // 2
        padded = torch.nn.ReplicationPad2d(pad)(x).permute(0, 2, 3, 1)
        value = padded.unfold(1, k, rate).unfold(2, k, rate).reshape(2 * 256, 3, k, k)
        maps = scores.permute(0, 2, 1).reshape(1, 2 * 256, 16, 16)
        y = F.conv_transpose2d(maps, value, stride=rate, padding=pad, groups=2) / 4
        expected = x + y.reshape(2, 3, 16 * rate, 16 * rate) * 0.3
        torch.testing.assert_close(transfer(x, scores, torch.tensor(0.3)), expected, atol=1e-5, rtol=1e-5)


def test_masked_position_encoding_by_hand():
    hole = np.zeros((32, 32), bool)
    hole[10:13, 10:13] = True  # a 3x3 hole: its border is reached at step 1, its centre at step 2
    rel_pos, direct = masked_position_encoding(hole)
    expected = np.zeros((32, 32), np.int64)
    expected[10:13, 10:13] = 8  # 1 / (32 / 2) * 128
    expected[11, 11] = 16
    np.testing.assert_array_equal(rel_pos, expected)
    # directions of known pixels that reached it: (above/left, below/left, above/right, below/right)
    assert direct[10, 10].tolist() == [1, 1, 1, 0]
    assert direct[12, 12].tolist() == [0, 1, 1, 1]
    assert direct[10, 11].tolist() == [1, 0, 1, 0]
    assert direct[11, 11].tolist() == [1, 1, 1, 1]
    assert direct[~hole].sum() == 0
    # at 64: the same grid enlarged (nearest), zero on known pixels
    big = np.zeros((64, 64), bool)
    big[20:26, 20:25] = True  # covers 32-grid cells 10..12 x 10..12 partly
    rel_big, direct_big = masked_position_encoding(big)
    small = np.zeros((32, 32), bool)
    small[10:13, 10:13] = True
    rel_small, direct_small = masked_position_encoding(small)
    np.testing.assert_array_equal(rel_big, np.where(big, rel_small.repeat(2, 0).repeat(2, 1), 0))
    np.testing.assert_array_equal(direct_big, np.where(big[..., None], direct_small.repeat(2, 0).repeat(2, 1), 0))
    # a mask with no known pixel terminates with zeros
    rel_all, direct_all = masked_position_encoding(np.ones((64, 64), bool))
    assert rel_all.max() == 0 and direct_all.max() == 0


# --- the official file format, end to end ---------------------------------------------------------------

def _random_network():
    torch.manual_seed(0)
    net = build_network(TINY).eval()
    with torch.no_grad():  # open every path: trained alphas and BatchNorm statistics are not the init values
        for name, parameter in net.acr.GCs.named_parameters():
            if name.startswith("alpha"):
                parameter.fill_(0.7)
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return net


@pytest.fixture(scope="module")
def lightning_file(tmp_path_factory):
    net = _random_network()
    state = {}
    for prefix, module in (("mae.", net.mae), ("acr.", net.acr), ("acr_ema.", net.acr)):
        state.update({prefix + key: value for key, value in module.state_dict().items()})
    state["D.conv.weight"] = torch.zeros(1, 3, 3, 3)
    return save_lightning_checkpoint(tmp_path_factory.mktemp("maefar") / "maefar_places2.ckpt", state), net


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(maefar, "ARCHITECTURE", TINY)


def _hole(size, box):
    hole = np.zeros((size, size), bool)
    hole[box[0]:box[1], box[2]:box[3]] = True
    return hole


def test_lightning_file_runs_end_to_end_at_256_and_512(lightning_file, tiny, monkeypatch):
    import cv2

    path, net = lightning_file
    mae_inputs = []
    features_and_scores = net.mae.features_and_scores
    monkeypatch.setattr(net.mae, "features_and_scores",
                        lambda image, mask: mae_inputs.append(image) or features_and_scores(image, mask))
    for size in (256, 512):
        method = create_method("maefar", weights=str(path), size=size)
        image = smooth_image(np.random.default_rng(size), size)
        hole = _hole(size, (size // 4, size // 2, size // 3, size // 2 + 7))
        out = method.inpaint([image], [hole], [0])[0]
        assert_fills_the_hole(out, image, hole)
        # the same pixels as the bare network on the same tensors, quantised as test_custom.py
        tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        with torch.inference_mode():
            bare = net(tensor, torch.from_numpy(hole)[None, None].float())
        expected = (bare[0].permute(1, 2, 0) * 255).clamp(0, 255).to(torch.uint8).numpy()
        np.testing.assert_array_equal(out, expected)
        # the MAE branch sees the image at 256 as upstream's cv2.resize(INTER_AREA) of the uint8 image gives it
        seen = (mae_inputs.pop()[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        np.testing.assert_array_equal(seen, cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA))
    record = method.describe()
    assert TRIPWIRE == []
    assert record["size"] == 512 and record["weights_sha256"] == file_sha256(path)
    assert record["weights_origin"] == "explicit" and record["ignored_prefixes"] == ["D", "acr_ema"]
    assert record["refused_pickled_classes"] == [TRIPWIRE_CLASS]


def test_other_sizes_are_resized_and_known_pixels_untouched(lightning_file, tiny):
    method = create_method("maefar", weights=str(lightning_file[0]), size=256)
    image = smooth_image(np.random.default_rng(1), 300)[:300, :280].copy()
    hole = np.zeros((300, 280), bool)
    hole[100:101, 50:250] = True  # one row: at 256 nearest would lose it, area keeps it
    out = method.inpaint([image], [hole], [0])[0]
    assert_fills_the_hole(out, image, hole)


def test_polarity_both_ways_and_determinism(lightning_file, tiny):
    method = create_method("maefar", weights=str(lightning_file[0]), size=256)
    image = smooth_image(np.random.default_rng(2), 256)
    one_hole = np.zeros((256, 256), bool)
    one_hole[100, 120] = True
    out = method.inpaint([image, image], [one_hole, ~one_hole], [0, 1])
    changed = (out[0] != image).any(-1)
    assert changed[100, 120] and changed.sum() == 1  # 255 = hole on disk: one hole pixel, one changed pixel
    assert (out[1][100, 120] == image[100, 120]).all()  # the one known pixel kept, the rest filled
    assert (out[1] != image).any(-1).mean() > 0.5
    again = method.inpaint([image, image], [one_hole, ~one_hole], [5, 6])
    np.testing.assert_array_equal(again[0], out[0])
    np.testing.assert_array_equal(again[1], out[1])


def test_end_to_end_through_misato_inpaint_with_the_registry_file(lightning_file, tiny, tmp_path, monkeypatch,
                                                                   capsys):
    monkeypatch.setenv("MISATO_WEIGHTS_DIR", str(lightning_file[0].parent))  # found under its registry name
    assert main(["methods", "--json"]) == 0
    row = next(r for r in map(json.loads, capsys.readouterr().out.splitlines()) if r["method"] == "maefar")
    assert row["ready"] and row["weights"] == ["maefar_places2.ckpt"] and row["gpu_advised"]
    data = write_misato_folder(tmp_path / "data", n=2, size=48)
    out = tmp_path / "pred"
    assert main(["inpaint", "--method", "maefar", "--size", "256", "--data", str(data), "--out", str(out),
                 "--batch-size", "2"]) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["complete"] and record["method"] == "maefar" and record["size"] == 256
    assert record["weights_sha256"] == file_sha256(lightning_file[0]) and record["weights_origin"] == "official"
    for name, path in list_images(out).items():
        image, hole = read_image(data / "image" / f"{name}.png"), read_mask(data / "mask" / f"{name}.png")
        np.testing.assert_array_equal(read_image(path)[~hole], image[~hole])


@pytest.mark.slow
def test_full_size_network_in_the_lightning_format(tmp_path):
    """The released architecture itself (ViT-B MAE + ACR, ~612 MB file): strict load and one 256 image."""
    net = build_network().eval()
    state = {**{f"mae.{k}": v for k, v in net.mae.state_dict().items()},
             **{f"acr.{k}": v for k, v in net.acr.state_dict().items()}}
    path = save_lightning_checkpoint(tmp_path / "maefar_places2.ckpt", state)
    del net, state
    method = create_method("maefar", weights=str(path), size=256)
    image = smooth_image(np.random.default_rng(3), 256)
    hole = _hole(256, (60, 140, 90, 200))
    out = method.inpaint([image], [hole], [0])[0]
    assert_fills_the_hole(out, image, hole)


def test_checkpoints_of_other_models_are_refused_with_a_report(tmp_path, lightning_file, tiny):
    lama = save_lightning_checkpoint(tmp_path / "best.ckpt", {"generator.model.1.ffc.convl2l.weight": torch.zeros(64, 4, 7, 7)})
    with pytest.raises(MisatoError, match=r"no 'mae\.\*' or 'acr\.\*' keys .*generator"):
        create_method("maefar", weights=str(lama))
    state = {key: value for key, value in lightning_file[1].state_dict().items()}
    del state["acr.G.conv1.weight"]
    state["acr.G.extra.weight"] = torch.zeros(1)
    state["mae.decoder_pred.bias"] = torch.zeros(5)
    damaged = save_lightning_checkpoint(tmp_path / "damaged.ckpt", state)
    with pytest.raises(MisatoError, match=r"damaged.ckpt: not the expected weights for this network; missing keys: "
                                          r"acr\.G\.conv1\.weight; unexpected keys: acr\.G\.extra\.weight; "
                                          r"shape mismatches: mae\.decoder_pred\.bias \(5,\)"):
        create_method("maefar", weights=str(damaged))
    plain = tmp_path / "plain.pth"
    torch.save({"model": {}}, plain)
    with pytest.raises(MisatoError, match=r"plain.pth: not a checkpoint of MAE-FAR .*: expected a state dict of "
                                          r"tensors \(optionally under 'state_dict'\)"):
        create_method("maefar", weights=str(plain))
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(pickle.dumps([1, 2]) + b"garbage")
    with pytest.raises(MisatoError, match="junk.ckpt"):
        create_method("maefar", weights=str(junk))


def test_bad_options_and_missing_weights(tmp_path, monkeypatch):
    with pytest.raises(MisatoError, match="--size must be one of 256, 512"):
        create_method("maefar", weights="whatever.ckpt", size=384)
    monkeypatch.setenv("MISATO_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(MisatoError, match=r"maefar_places2\.ckpt.*drive\.google\.com.*--weights FILE"):
        create_method("maefar")
