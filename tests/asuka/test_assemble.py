import json

import numpy as np
import pytest
import torch

from asuka.assemble import assemble
from asuka.models import MAEPrior, PriorAlignment
from asuka.pipeline import ASUKAInpaintPipeline
from asuka.testing import TINY_MAE, write_dummy_sd_inpaint_folder
from misato.errors import MisatoError
from misato.weights import file_sha256
from tests.asuka.test_decoder import to_ldm_layout


@pytest.fixture(scope="module")
def pieces(tmp_path_factory):
    root = tmp_path_factory.mktemp("pieces")
    sd = write_dummy_sd_inpaint_folder(root / "sd", text_encoder=False)
    torch.manual_seed(5)
    mae = MAEPrior(**{**TINY_MAE, "num_heads": 1, "decoder_num_heads": 1, "prior_layers": 3})
    torch.save({"model": mae.state_dict()}, root / "mae_300.pth")
    alignment = PriorAlignment(prior_dim=16, cross_attention_dim=32, num_layers=2, num_heads=1)
    torch.save(alignment.state_dict(), root / "alignment.pth")
    return root, sd, mae, alignment


def test_assemble_from_checkpoints(tmp_path, pieces):
    root, sd, mae, alignment = pieces
    pipe = ASUKAInpaintPipeline.from_sd_inpaint(sd)
    from asuka.models import InpaintingDecoder

    torch.manual_seed(6)
    decoder = InpaintingDecoder.from_vae(pipe.vae)
    torch.save({"state_dict": to_ldm_layout(decoder)}, root / "decoder.ckpt")
    record = assemble(sd, tmp_path / "asuka", mae=root / "mae_300.pth", alignment=root / "alignment.pth",
                      decoder=root / "decoder.ckpt")
    assert record["components"]["mae"]["sha256"] == file_sha256(root / "mae_300.pth")
    assert json.loads((tmp_path / "asuka" / "assembly.json").read_text()) == record
    loaded = ASUKAInpaintPipeline.from_pretrained(tmp_path / "asuka", local_files_only=True)
    for name, original in (("mae", mae), ("alignment", alignment), ("decoder", decoder)):
        ours = getattr(loaded, name).state_dict()
        for key, value in original.state_dict().items():
            torch.testing.assert_close(ours[key], value, msg=f"{name}.{key}")
    loaded.set_progress_bar_config(disable=True)
    out = loaded(np.zeros((64, 64, 3), np.uint8), np.eye(64, dtype=bool), num_inference_steps=1, output_type="np")
    assert out.images.shape == (1, 64, 64, 3)


def test_assemble_fresh_and_kl_vae(tmp_path, pieces):
    _, sd, _, _ = pieces
    assemble(sd, tmp_path / "fresh", decoder="kl-vae")
    loaded = ASUKAInpaintPipeline.from_pretrained(tmp_path / "fresh", local_files_only=True)
    assert loaded.decoder is None
    assert loaded.mae.config.embed_dim == 768 and loaded.alignment.config.cross_attention_dim == 32
    with pytest.raises(MisatoError, match="not empty"):
        assemble(sd, tmp_path / "fresh")


def test_assemble_refuses_bad_sources(tmp_path, pieces):
    root, sd, _, _ = pieces
    with pytest.raises(MisatoError, match="missing unet/, vae/, scheduler/"):
        assemble(root, tmp_path / "out")
    with pytest.raises(MisatoError, match="--mae .*no such file"):
        assemble(sd, tmp_path / "out", mae=root / "absent.pth")
    with pytest.raises(MisatoError, match="--decoder kl_vae"):
        assemble(sd, tmp_path / "out", decoder="kl_vae")


def test_assemble_overwrite_replaces_only_an_assembly_and_leaves_global_rng_alone(tmp_path, pieces):
    _, sd, _, _ = pieces
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(MisatoError, match="holds no assembly.json"):
        assemble(sd, mine, decoder="kl-vae", overwrite=True)
    with pytest.raises(MisatoError, match="inside the input folder"):
        assemble(sd, sd / "asuka", decoder="kl-vae")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    record = assemble(sd, tmp_path / "a", decoder="none", seed=1)
    assert torch.equal(torch.rand(3), expected)  # the caller's random stream is untouched
    assert set(record["provenance"]) == {"misato_version", "python", "packages", "weights_sha256"}
    (tmp_path / "a" / "notes.txt").write_text("kept")
    assemble(sd, tmp_path / "a", decoder="none", seed=1, overwrite=True)
    assert (tmp_path / "a" / "notes.txt").read_text() == "kept"
    assemble(sd, tmp_path / "b", decoder="none", seed=1)
    for part in ("mae/diffusion_pytorch_model.safetensors", "decoder/diffusion_pytorch_model.safetensors"):
        assert (tmp_path / "a" / part).read_bytes() == (tmp_path / "b" / part).read_bytes()
