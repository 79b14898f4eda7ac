"""ASUKA-FLUX (the released ASUKA on FLUX.1-Fill) through diffusers.

- :mod:`asuka.flux.pipeline`: :class:`~asuka.flux.pipeline.ASUKAFluxFillPipeline` and the none features.
- :mod:`asuka.flux.loaders`: the released files as they are (alignment state dicts, Lightning decoder checkpoint
  with the AE encoder, none-feature tensors).
- :mod:`asuka.flux.assemble`: one ``from_pretrained`` folder from a FLUX.1-Fill folder and the release.

The alignment module itself is :class:`asuka.models.flux_alignment.FluxPriorAlignment`.
"""
