"""Build one ``from_pretrained``-able ASUKA folder from separately obtained pieces.

Users get SD inpainting (a diffusers folder), the MAE (``mae_300.pth``), the alignment module and the decoder from
different places; :func:`assemble` reads every dimension from the SD folder's configs, loads each file with a strict
key check and writes ``ASUKAInpaintPipeline.save_pretrained(out)`` plus ``assembly.json`` recording each source
file's sha256 and what was freshly initialised.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from misato.errors import MisatoError

ASSEMBLY_FILE = "assembly.json"
FRESH = "none"
KL_VAE = "kl-vae"


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
        out: the new folder (must not exist or be empty, unless ``overwrite``).
        mae: an MAE-FAR checkpoint, or ``"none"`` (fresh ViT-B initialisation, for training or tests).
        alignment: an alignment state-dict file, or ``"none"`` (fresh ASUKA alignment).
        decoder: an Asymmetric-VQGAN/ASUKA decoder checkpoint (or a diffusers ``AsymmetricAutoencoderKL`` folder),
            ``"kl-vae"`` (no inpainting decoder: plain SD
            decoding) or ``"none"`` (an inpainting decoder initialised from the SD VAE decoder, fresh condition
            encoder).
        seed: torch seed for the fresh initialisations.
    Returns:
        The assembly record (also written to ``out/assembly.json``).
    """
    import torch

    from asuka import convert
    from asuka.models import InpaintingDecoder, MAEPrior, PriorAlignment
    from asuka.models.alignment import default_num_heads
    from asuka.pipeline import ASUKAInpaintPipeline
    from misato.weights import file_sha256

    sd, out = Path(sd), Path(out)
    missing = [p for p in ("unet", "vae", "scheduler") if not (sd / p).is_dir()]
    if missing:
        raise MisatoError(f"{sd} is not a diffusers SD-inpainting folder: missing {', '.join(p + '/' for p in missing)}")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise MisatoError(f"{out} exists and is not empty; choose another folder or pass --overwrite")
    mae_source = _source(mae, (FRESH,), "--mae")
    alignment_source = _source(alignment, (FRESH,), "--alignment")
    decoder_source = _source(decoder, (FRESH, KL_VAE), "--decoder", folder_ok=True)

    try:
        pipe = ASUKAInpaintPipeline.from_sd_inpaint(sd)
    except (OSError, ValueError) as error:
        raise MisatoError(f"cannot load the SD inpainting parts of {sd}: {error}") from None
    if pipe.unet.config.in_channels != 9:
        raise MisatoError(f"{sd}/unet has {pipe.unet.config.in_channels} input channels; ASUKA needs an SD "
                          "*inpainting* UNet (9 channels)")
    torch.manual_seed(seed)
    record: dict[str, Any] = {"sd": str(sd.resolve()), "seed": seed, "components": {}}

    mae_model = MAEPrior() if mae_source == FRESH else convert.load_mae_checkpoint(mae_source)
    prior_dim = mae_model.config.decoder_embed_dim
    cross_dim = pipe.unet.config.cross_attention_dim
    if alignment_source == FRESH:
        alignment_model = PriorAlignment(prior_dim=prior_dim, cross_attention_dim=cross_dim,
                                         num_heads=default_num_heads(cross_dim))
    else:
        alignment_model = convert.load_alignment_checkpoint(alignment_source, cross_dim, prior_dim)
    if decoder_source == KL_VAE:
        decoder_model = None
    elif decoder_source == FRESH:
        decoder_model = InpaintingDecoder.from_vae(pipe.vae)
    else:
        decoder_model = convert.load_decoder_checkpoint(decoder_source, vae=pipe.vae)
    if decoder_model is not None and decoder_model.config.latent_channels != pipe.vae.config.latent_channels:
        raise MisatoError(f"--decoder {decoder}: decodes {decoder_model.config.latent_channels}-channel latents but "
                          f"the SD VAE has {pipe.vae.config.latent_channels}")
    pipe.register_modules(mae=mae_model, alignment=alignment_model, decoder=decoder_model)
    for name, source in (("mae", mae_source), ("alignment", alignment_source), ("decoder", decoder_source)):
        entry: dict[str, Any] = {"source": str(source)}
        if isinstance(source, Path) and source.is_dir():
            files = sorted(p for p in source.rglob("*") if p.is_file())
            entry["sha256"] = {str(p.relative_to(source)): file_sha256(p) for p in files}
        elif isinstance(source, Path):
            entry["sha256"] = file_sha256(source)
        record["components"][name] = entry
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out, safe_serialization=True)
    (out / ASSEMBLY_FILE).write_text(json.dumps(record, indent=2))
    return record
