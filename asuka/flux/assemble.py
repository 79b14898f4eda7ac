"""One ``from_pretrained``-able ASUKA-FLUX folder from a FLUX.1-Fill folder and the released ASUKA-FLUX files.

``assemble_flux(flux_dir, asuka_flux_dir, out)`` loads ``transformer/``, ``vae/`` and ``scheduler/`` of a diffusers
FLUX.1-Fill folder (its text encoders are not read), finds the six released files through the weights registry
(``--asuka-flux`` folder first, then the usual search order, download only when online), loads each strictly,
copies the AE encoder weights of ``asuka_decoder.ckpt`` into the VAE as the official code does, checks every width
against the transformer's config and writes ``ASUKAFluxFillPipeline.save_pretrained(out)`` plus ``assembly.json``
(sources, sha256, load reports, :func:`misato.provenance.provenance`). The output folder follows the one policy of
:mod:`misato.outputs` (:data:`FLUX_ASSEMBLY_POLICY`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from asuka.assemble import ASSEMBLY_FILE
from misato.errors import MisatoError
from misato.io import atomic_write_text
from misato.outputs import OutputPolicy, prepare_output
from misato.provenance import provenance

REGISTRY_PREFIX = "asuka-flux-"
FLUX_ASSEMBLY_POLICY = OutputPolicy(
    what="ASUKA-FLUX model folder", markers=(ASSEMBLY_FILE,), can_resume=False,
    owned=("model_index.json", "scheduler", "vae", "transformer", "mae", "alignment_t5", "alignment_clip",
           "none_features", "decoder", ASSEMBLY_FILE))
"""``overwrite`` deletes only what :func:`assemble_flux` writes (the pipeline's folders and files,
``assembly.json``)."""


def load_flux_fill_parts(flux: Path, option: str = "--flux", torch_dtype=None):
    """``(transformer, vae, scheduler)`` of a diffusers FLUX.1-Fill folder, offline and strictly
    (:func:`asuka.convert.load_pretrained_strict`); text encoders are not read. Errors name ``option`` and the part."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    from asuka.assemble import loading_from
    from asuka.convert import load_pretrained_strict, load_scheduler

    missing = [p for p in ("transformer", "vae", "scheduler") if not (flux / p).is_dir()]
    if missing:
        raise MisatoError(f"{option} {flux}: not a diffusers FLUX.1-Fill folder, missing "
                          f"{', '.join(p + '/' for p in missing)}")
    with loading_from(option):
        scheduler = load_scheduler(flux / "scheduler" / "scheduler_config.json", FlowMatchEulerDiscreteScheduler)
        transformer = load_pretrained_strict(FluxTransformer2DModel, flux / "transformer", torch_dtype)
        vae = load_pretrained_strict(AutoencoderKL, flux / "vae", torch_dtype)
    return transformer, vae, scheduler


def assemble_flux(
    flux: str | os.PathLike, asuka_flux: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False
) -> dict[str, Any]:
    """Assemble an ASUKA-FLUX folder.

    Args:
        flux: a diffusers FLUX.1-Fill-dev folder (``transformer/``, ``vae/``, ``scheduler/``).
        asuka_flux: the folder holding the release (``asuka_decoder.ckpt``, ``asuka_alignment_t5.pt``,
            ``asuka_alignment_clip.pt``, ``txt_256.pt``, ``vec.pt``, ``mae_300.pth``).
        out: the new folder (missing or empty; ``overwrite`` replaces an earlier ASUKA-FLUX assembly there, deleting
            only what :func:`assemble_flux` writes); it must not lie inside ``flux`` or ``asuka_flux``.
    Returns:
        The assembly record (also written to ``out/assembly.json``).
    """
    from asuka import convert
    from asuka.flux import loaders
    from asuka.flux.pipeline import ASUKAFluxFillPipeline
    from misato.weights import resolve

    flux, asuka_flux, out = Path(flux), Path(asuka_flux), Path(out)
    if not asuka_flux.is_dir():
        raise MisatoError(f"--asuka-flux {asuka_flux}: no such folder")
    prepare_output(out, FLUX_ASSEMBLY_POLICY, overwrite=overwrite, inputs=[flux, asuka_flux])
    files = {component: resolve(REGISTRY_PREFIX + component.replace("_", "-"), weights_dir=asuka_flux)
             for component in loaders.RELEASE_FILES}
    transformer, vae, scheduler = load_flux_fill_parts(flux)

    alignment_t5, t5_report = loaders.load_flux_alignment(files["alignment_t5"].path)
    alignment_clip, clip_report = loaders.load_flux_alignment(files["alignment_clip"].path)
    expected = {"alignment_t5": (alignment_t5, transformer.config.joint_attention_dim),
                "alignment_clip": (alignment_clip, transformer.config.pooled_projection_dim)}
    for component, (module, width) in expected.items():
        if module.config.dim != width:
            raise MisatoError(f"{files[component].path}: outputs {module.config.dim} channels but the transformer "
                              f"expects {width}")
    mae = convert.load_mae_checkpoint(files["mae"].path)
    if mae.config.decoder_embed_dim != alignment_t5.config.prior_dim:
        raise MisatoError(f"{files['mae'].path}: prior width {mae.config.decoder_embed_dim} but the alignment "
                          f"modules take {alignment_t5.config.prior_dim}")
    none_features = loaders.load_none_features(files["none_txt"].path, files["none_vec"].path,
                                               txt_dim=alignment_t5.config.dim, vec_dim=alignment_clip.config.dim)
    decoder, decoder_report, encoder_report = loaders.load_flux_decoder_checkpoint(files["decoder"].path, vae)
    pipe = ASUKAFluxFillPipeline(scheduler=scheduler, vae=vae, transformer=transformer, mae=mae,
                                 alignment_t5=alignment_t5, alignment_clip=alignment_clip,
                                 none_features=none_features, decoder=decoder)
    try:
        pipe.check_components()
    except ValueError as error:
        raise MisatoError(f"--flux {flux}: {error}") from None
    reports = {"alignment_t5": t5_report, "alignment_clip": clip_report, "decoder": decoder_report,
               "ae_encoder": encoder_report}
    record: dict[str, Any] = {
        "flux": str(flux.resolve()),
        "release": loaders.RELEASE_REPO,
        "files": {c: {"path": str(r.path.resolve()), "sha256": r.sha256, "origin": r.origin}
                  for c, r in files.items()},
        "load_reports": {name: str(report) if report is not None else "no encoder.* keys: FLUX.1-Fill's kept"
                         for name, report in reports.items()},
        "provenance": provenance(("diffusers", "safetensors", "transformers"),
                                 weights={component: found.sha256 for component, found in files.items()}),
    }
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out, safe_serialization=True)
    atomic_write_text(out / ASSEMBLY_FILE, json.dumps(record, indent=2))
    return record
