"""`misato asuka assemble --flux … --asuka-flux …` on a tiny FLUX.1-Fill folder and a release in its own formats."""
import argparse
import json

import pytest
import torch
from torch import nn

from asuka.flux.pipeline import ASUKAFluxFillPipeline
from asuka.models import InpaintingDecoder, MAEPrior
from asuka.models.flux_alignment import FluxPriorAlignment
from asuka.testing import TINY_MAE, get_dummy_flux_components, write_dummy_flux_fill_folder
from misato.cli import main
from tests.asuka.test_decoder import to_ldm_layout
from tests.asuka.test_flux_loaders import encoder_to_ldm_layout


def write_release(folder, vae):
    """The six released files at toy widths: nn.Sequential alignments, Lightning decoder, tensors, MAE-FAR file."""
    torch.manual_seed(3)
    for name, dim in (("asuka_alignment_t5.pt", 32), ("asuka_alignment_clip.pt", 16)):
        module = FluxPriorAlignment(prior_dim=16, dim=dim, num_layers=4, num_heads=1)
        released = nn.Sequential(*module.children())
        torch.save(released.state_dict(), folder / name)
    decoder = InpaintingDecoder.from_vae(vae)
    state = {**to_ldm_layout(decoder), **encoder_to_ldm_layout(vae)}
    torch.save({"state_dict": state, "hyper_parameters": argparse.Namespace(lr=1e-4)}, folder / "asuka_decoder.ckpt")
    torch.save(torch.randn(1, 16, 32), folder / "txt_256.pt")
    torch.save(torch.randn(1, 16), folder / "vec.pt")
    mae = MAEPrior(**{**TINY_MAE, "num_heads": 1, "decoder_num_heads": 1})
    torch.save({"model": mae.state_dict(), "args": argparse.Namespace(epochs=300)}, folder / "mae_300.pth")


@pytest.fixture(scope="module")
def assembled(tmp_path_factory):
    root = tmp_path_factory.mktemp("flux")
    flux = write_dummy_flux_fill_folder(root / "flux-fill")
    release = root / "release"
    release.mkdir()
    write_release(release, get_dummy_flux_components(seed=9)["vae"])
    out = root / "asuka-flux"
    assert main(["asuka", "assemble", "--flux", str(flux), "--asuka-flux", str(release), "--out", str(out)]) == 0
    return out, release


def test_assembled_folder_reopens_and_inpaints(assembled):
    out, release = assembled
    record = json.loads((out / "assembly.json").read_text())
    assert set(record["files"]) == {"decoder", "alignment_t5", "alignment_clip", "none_txt", "none_vec", "mae"}
    assert "all keys matched" in record["load_reports"]["ae_encoder"]
    pipe = ASUKAFluxFillPipeline.from_pretrained(out, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.decoder.config.latent_channels == 16 and pipe.alignment_t5.config.dim == 32
    assert torch.equal(pipe.none_features.txt, torch.load(release / "txt_256.pt"))
    source_vae = get_dummy_flux_components(seed=9)["vae"]  # the release's AE encoder replaced FLUX.1-Fill's
    assert torch.equal(pipe.vae.encoder.conv_in.weight, source_vae.encoder.conv_in.weight)
    image, mask = torch.rand(1, 3, 64, 64), torch.zeros(1, 1, 64, 64)
    mask[..., 16:48, 16:48] = 1
    result = pipe(image, mask, num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                  output_type="pt").images
    assert result.shape == (1, 3, 64, 64) and torch.isfinite(result).all()


def test_assemble_refuses_bad_sources(tmp_path, assembled, capsys):
    out, release = assembled
    not_flux = tmp_path / "not-flux"
    not_flux.mkdir()
    assert main(["asuka", "assemble", "--flux", str(not_flux), "--asuka-flux", str(release),
                 "--out", str(tmp_path / "x")]) == 2
    assert "not a diffusers FLUX.1-Fill folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["asuka", "assemble", "--flux", str(not_flux), "--asuka-flux", str(empty),
                 "--out", str(tmp_path / "y")]) == 2
    assert "asuka_decoder.ckpt" in capsys.readouterr().err
    assert main(["asuka", "assemble", "--flux", str(not_flux), "--out", str(tmp_path / "z")]) == 2
    assert "--asuka-flux" in capsys.readouterr().err


def test_a_transformer_folder_holding_another_network_is_one_line_naming_it(tmp_path, assembled, capsys):
    import shutil

    out, release = assembled
    flux = shutil.copytree(out.parent / "flux-fill", tmp_path / "flux-fill")
    for weights in (flux / "transformer").glob("*.safetensors"):
        weights.unlink()
    shutil.copy(flux / "vae" / "diffusion_pytorch_model.safetensors", flux / "transformer")
    assert main(["asuka", "assemble", "--flux", str(flux), "--asuka-flux", str(release),
                 "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"misato asuka assemble: error: --flux {flux}/transformer: "
                                                    "not the expected weights"), err
    assert "FluxTransformer2DModel" in err and not (tmp_path / "x").exists()


def test_assembly_records_provenance_and_follows_the_output_policy(assembled, tmp_path, capsys):
    out, release = assembled
    record = json.loads((out / "assembly.json").read_text())
    assert record["provenance"]["weights_sha256"] == {c: f["sha256"] for c, f in sorted(record["files"].items())}
    assert set(record["provenance"]["packages"]) >= {"diffusers", "torch", "transformers"}
    flux = tmp_path / "flux-fill"
    write_dummy_flux_fill_folder(flux)
    args = ["asuka", "assemble", "--flux", str(flux), "--asuka-flux", str(release)]
    assert main([*args, "--out", str(release / "inside")]) == 2  # inputs are never written
    assert "lies inside the input folder" in capsys.readouterr().err and not (release / "inside").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main([*args, "--out", str(foreign), "--overwrite"]) == 2  # not an assembly: never touched
    assert "holds no assembly.json" in capsys.readouterr().err and (foreign / "notes.txt").exists()
    again = tmp_path / "again"
    assert main([*args, "--out", str(again)]) == 0
    (again / "notes.txt").write_text("mine")
    (again / "transformer" / "stale.bin").write_bytes(b"old")
    assert main([*args, "--out", str(again)]) == 2
    assert "holds an ASUKA-FLUX model folder recorded as complete; pass --overwrite to replace it" in capsys.readouterr().err
    assert main([*args, "--out", str(again), "--overwrite"]) == 0  # replaces only what an assembly writes
    assert (again / "notes.txt").read_text() == "mine" and not (again / "transformer" / "stale.bin").exists()
    assert json.loads((again / "assembly.json").read_text())["files"] == record["files"]
