"""ASUKA's trainable parts: the MAE prior, the alignment module and the inpainting decoder."""
from asuka.models.alignment import ALIGNMENT_VARIANTS, PriorAlignment
from asuka.models.decoder import InpaintingDecoder
from asuka.models.mae import MAEPrior

__all__ = ["ALIGNMENT_VARIANTS", "InpaintingDecoder", "MAEPrior", "PriorAlignment"]
