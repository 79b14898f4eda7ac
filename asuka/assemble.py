"""Build one ``from_pretrained``-able ASUKA folder from separately obtained pieces.

Users get SD inpainting (a diffusers folder), the MAE (``mae_300.pth``), the alignment module and the decoder from
different places; :func:`assemble` reads every dimension from the SD folder's configs, loads each file with a strict
key check and writes ``ASUKAInpaintPipeline.save_pretrained(out)`` plus ``assembly.json`` recording each source
file's sha256 and what was freshly initialised.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from misato.errors import MisatoError
from misato.hashing import tree_sha256
from misato.io import atomic_write_text
from misato.outputs import OutputPolicy, prepare_output
from misato.provenance import provenance
from misato.reproducibility import seeded

ASSEMBLY_FILE = "assembly.json"
FRESH = "none"
KL_VAE = "kl-vae"
ASSEMBLY_POLICY = OutputPolicy(
    what="ASUKA model folder", markers=(ASSEMBLY_FILE,), can_resume=False,
    owned=("model_index.json", "unet", "vae", "scheduler", "mae", "alignment", "decoder", "text_encoder", "tokenizer",
           "feature_extractor", "safety_checker", "image_encoder", ASSEMBLY_FILE))
"""``overwrite`` deletes only what :func:`assemble` writes (the pipeline's folders and files, ``assembly.json``)."""


TRAIN_FILE = "train.json"
"""The record a training stage (``asuka.train``) writes in its output folder: ``component`` says what it holds,
``outputs`` where (``{"mae": "mae"}``: the ``save_pretrained`` folder ``OUT/mae``)."""


def component_folder(value: str | os.PathLike, component: str, option: str) -> Path | None:
    """Where a component's ``save_pretrained`` folder is, when ``value`` names one.

    ``value`` may be a training output folder (``train.json``; the component must be ``component``) or a
    ``save_pretrained`` folder (``config.json``). Returns None for anything else (a file for the checkpoint
    loaders).

    Raises:
        MisatoError: a training output of another component or an unfinished one, or a folder that is neither.
    """
    from misato.outputs import read_record

    path = Path(value).expanduser()
    if not path.is_dir():
        return None
    if (path / TRAIN_FILE).is_file():
        record = read_record(path / TRAIN_FILE)
        if record.get("component") != component:
            raise MisatoError(f"{option} {path}: a training output of {record.get('component')}, not {component}")
        if not record.get("complete") or component not in record.get("outputs", {}):
            raise MisatoError(f"{option} {path}: the training run is unfinished (resume it with --resume)")
        path = path / record["outputs"][component]
    if not (path / "config.json").is_file():
        raise MisatoError(f"{option} {path}: not a {component} folder (no config.json or {TRAIN_FILE})")
    return path


def check_sd_inpaint_folder(sd: str | os.PathLike) -> Path:
    """``sd`` as a Path when it holds ``unet/``, ``vae/`` and ``scheduler/``; else a MisatoError naming what is
    missing."""
    sd = Path(sd)
    missing = [p for p in ("unet", "vae", "scheduler") if not (sd / p).is_dir()]
    if missing:
        parts = ", ".join(p + "/" for p in missing)
        raise MisatoError(f"{sd} is not a diffusers SD-inpainting folder: missing {parts}")
    return sd


@contextlib.contextmanager
def loading_from(option: str):
    """A MisatoError raised in the block (its message starts with the file it read) names the option the file
    came from: ``--mae zeros.pth: not an MAE-FAR checkpoint …``."""
    try:
        yield
    except MisatoError as error:
        raise MisatoError(f"{option} {error}") from None


def load_sd_inpaint(sd: str | os.PathLike):
    """An :class:`~asuka.pipeline.ASUKAInpaintPipeline` holding the SD-inpainting folder's VAE, UNet and scheduler
    (the UNet must take 9 input channels), each loaded strictly (a MisatoError naming the part otherwise)."""
    from asuka.pipeline import ASUKAInpaintPipeline

    sd = check_sd_inpaint_folder(sd)
    with loading_from("--sd"):
        pipe = ASUKAInpaintPipeline.from_sd_inpaint(sd)
    if pipe.unet.config.in_channels != 9:
        raise MisatoError(f"--sd {sd}/unet has {pipe.unet.config.in_channels} input channels; ASUKA needs an SD "
                          "*inpainting* UNet (9 channels)")
    return pipe


def _source(
    value: str | os.PathLike | None, allowed: tuple[str, ...], option: str, folder_ok: bool = False
) -> str | Path:
    value = FRESH if value is None else str(value)
    if value in allowed:
        return value
    path = Path(value).expanduser()
    if not (path.is_file() or (folder_ok and path.is_dir())):
        raise MisatoError(f"{option} {value}: no such file (or use {' / '.join(allowed)})")
    return path


def assemble(
    sd: str | os.PathLike,
    out: str | os.PathLike,
    mae: str | os.PathLike | None = None,
    alignment: str | os.PathLike | None = None,
    decoder: str | os.PathLike | None = KL_VAE,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Assemble an ASUKA model folder.

    Args:
        sd: a diffusers SD-inpainting folder (``unet/``, ``vae/``, ``scheduler/``).
        out: the new folder (missing or empty; ``overwrite`` replaces an earlier assembly there, deleting only
            what :func:`assemble` writes).
        mae: an MAE-FAR checkpoint, an MAE folder (``save_pretrained``, or the output folder of
            ``misato train mae``), or ``"none"`` (fresh ViT-B initialisation, for training or tests).
        alignment: an alignment state-dict file, an alignment folder (``save_pretrained``, or the output of
            ``misato train alignment``), or ``"none"`` (fresh ASUKA alignment).
        decoder: an Asymmetric-VQGAN/ASUKA decoder checkpoint (or a diffusers ``AsymmetricAutoencoderKL`` folder, an
            ``InpaintingDecoder`` folder, or the output folder of ``misato train decoder``),
            ``"kl-vae"`` (no inpainting decoder: plain SD
            decoding) or ``"none"`` (an inpainting decoder initialised from the SD VAE decoder, fresh condition
            encoder).
        seed: seed of the fresh initialisations (torch's default generator is restored afterwards).
    Returns:
        The assembly record (also written to ``out/assembly.json``).
    """
    from asuka import convert
    from asuka.models import InpaintingDecoder, MAEPrior, PriorAlignment
    from asuka.models.alignment import default_num_heads

    sd, out = check_sd_inpaint_folder(sd), Path(out)
    mae_source = _source(mae, (FRESH,), "--mae", folder_ok=True)
    alignment_source = _source(alignment, (FRESH,), "--alignment", folder_ok=True)
    decoder_source = _source(decoder, (FRESH, KL_VAE), "--decoder", folder_ok=True)
    mae_folder = None if mae_source == FRESH else component_folder(mae_source, "mae", "--mae")
    alignment_folder = (None if alignment_source == FRESH
                        else component_folder(alignment_source, "alignment", "--alignment"))
    trained_decoder = isinstance(decoder_source, Path) and (decoder_source / TRAIN_FILE).is_file()
    decoder_folder = component_folder(decoder_source, "decoder", "--decoder") if trained_decoder else None
    folders = [source for source in (sd, mae_source, alignment_source, decoder_source)
               if isinstance(source, Path) and source.is_dir()]
    prepare_output(out, ASSEMBLY_POLICY, overwrite=overwrite, inputs=folders)

    pipe = load_sd_inpaint(sd)
    record: dict[str, Any] = {"sd": str(sd.resolve()), "seed": seed, "components": {}}
    with seeded(seed):  # fresh initialisations draw from torch's default generator; the caller's stream is restored
        if mae_source == FRESH:
            mae_model = MAEPrior()
        else:
            with loading_from("--mae"):
                mae_model = (convert.load_mae_checkpoint(mae_source) if mae_folder is None
                             else convert.load_pretrained_strict(MAEPrior, mae_folder))
        prior_dim = mae_model.config.decoder_embed_dim
        cross_dim = pipe.unet.config.cross_attention_dim
        if alignment_source == FRESH:
            alignment_model = PriorAlignment(prior_dim=prior_dim, cross_attention_dim=cross_dim,
                                             num_heads=default_num_heads(cross_dim))
        elif alignment_folder is not None:
            with loading_from("--alignment"):
                alignment_model = convert.load_pretrained_strict(PriorAlignment, alignment_folder)
            if (alignment_model.config.prior_dim, alignment_model.config.cross_attention_dim) != (prior_dim, cross_dim):
                raise MisatoError(f"--alignment {alignment}: maps {alignment_model.config.prior_dim}-d priors to "
                                  f"{alignment_model.config.cross_attention_dim}-d conditions; this MAE gives "
                                  f"{prior_dim}-d and the UNet takes {cross_dim}-d")
        else:
            with loading_from("--alignment"):
                alignment_model = convert.load_alignment_checkpoint(alignment_source, cross_dim, prior_dim)
        if decoder_source == KL_VAE:
            decoder_model = None
        elif decoder_source == FRESH:
            decoder_model = InpaintingDecoder.from_vae(pipe.vae)
        else:
            with loading_from("--decoder"):
                decoder_model = (convert.load_decoder_checkpoint(decoder_source, vae=pipe.vae) if decoder_folder is None
                                 else convert.load_pretrained_strict(InpaintingDecoder, decoder_folder))
    if decoder_model is not None and decoder_model.config.latent_channels != pipe.vae.config.latent_channels:
        raise MisatoError(f"--decoder {decoder}: decodes {decoder_model.config.latent_channels}-channel latents but "
                          f"the SD VAE has {pipe.vae.config.latent_channels}")
    pipe.register_modules(mae=mae_model, alignment=alignment_model, decoder=decoder_model)
    weights = {}
    for name, source in (("mae", mae_source), ("alignment", alignment_source), ("decoder", decoder_source)):
        entry: dict[str, Any] = {"source": str(source)}
        if isinstance(source, Path):
            entry["sha256"] = weights[name] = tree_sha256(source)
        record["components"][name] = entry
    record["provenance"] = provenance(("diffusers", "safetensors", "transformers"), weights=weights)
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out, safe_serialization=True)
    atomic_write_text(out / ASSEMBLY_FILE, json.dumps(record, indent=2))
    return record
