"""ASUKA-FLUX pipeline vs diffusers' FluxFillPipeline: wall-time ratio on CPU, same components.

Both pipelines share one randomly initialised FLUX.1-Fill-layout transformer of medium size (the real one, 12 B
parameters, does not fit a CPU benchmark), the full-size 16-channel FLUX VAE, the same image, mask, step count and
generator seed. diffusers gets fixed random prompt embeddings (no text encoder); ASUKA-FLUX adds the full-size
ViT-B MAE prior, the two alignment modules (widths matched to the medium transformer) and the conditional decoder
(the VAE decoder plus its condition encoder). The runs alternate ``--repeats`` times in one process so that load
from other processes affects both alike; the best wall of each is compared.

    python benchmarks/bench_flux.py [--size 256] [--steps 10] [--repeats 2]

The ratio shrinks as the transformer's share grows: with the real 12 B transformer and 50 steps the MAE, the
alignment and the decoder's condition encoder run once against 50 transformer passes.
"""
from __future__ import annotations

import argparse
import json
import time

MEDIUM_TRANSFORMER = {
    "num_layers": 2, "num_single_layers": 4, "attention_head_dim": 64, "num_attention_heads": 4,
    "joint_attention_dim": 256, "pooled_projection_dim": 128, "axes_dims_rope": (8, 28, 28),
}


def build(size: int, steps: int) -> dict:
    """``name -> run(generator)`` for ``asuka-flux`` and ``flux-fill`` sharing one transformer and VAE."""
    import numpy as np
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxFillPipeline, FluxTransformer2DModel

    from asuka.flux.pipeline import ASUKAFluxFillPipeline
    from asuka.models import InpaintingDecoder, MAEPrior
    from asuka.models.flux_alignment import FluxPriorAlignment, NoneFeatures
    from asuka.testing import FLUX_FILL_TRANSFORMER, FLUX_SCHEDULER, FLUX_VAE

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(**{**FLUX_FILL_TRANSFORMER, **MEDIUM_TRANSFORMER}).eval()
    vae = AutoencoderKL(**FLUX_VAE).eval()
    txt_dim, vec_dim = MEDIUM_TRANSFORMER["joint_attention_dim"], MEDIUM_TRANSFORMER["pooled_projection_dim"]
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.random((1, 3, size, size), dtype=np.float32))
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 4 : 3 * size // 4, size // 8 : size // 2] = 1
    prompt, pooled = torch.randn(1, 256, txt_dim), torch.randn(1, vec_dim)
    asuka = ASUKAFluxFillPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER), vae=vae, transformer=transformer,
        mae=MAEPrior().eval(), alignment_t5=FluxPriorAlignment(dim=txt_dim).eval(),
        alignment_clip=FluxPriorAlignment(dim=vec_dim).eval(),
        none_features=NoneFeatures.from_tensors(torch.randn(1, 256, txt_dim), torch.randn(1, vec_dim)),
        decoder=InpaintingDecoder.from_vae(vae).eval())
    reference = FluxFillPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER), vae=vae,
                                 text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                                 transformer=transformer)
    for pipe in (asuka, reference):
        pipe.set_progress_bar_config(disable=True)
    return {
        "asuka-flux": lambda g: asuka(image, mask, num_inference_steps=steps, generator=g, output_type="pt"),
        "flux-fill": lambda g: reference(image=image, mask_image=mask, height=size, width=size,
                                         num_inference_steps=steps, prompt_embeds=prompt,
                                         pooled_prompt_embeds=pooled, generator=g, output_type="pt"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    import torch

    calls = build(args.size, args.steps)
    walls: dict[str, list[float]] = {name: [] for name in calls}
    with torch.no_grad():
        for _ in range(args.repeats):
            for name, call in calls.items():
                started = time.perf_counter()
                call(torch.Generator().manual_seed(0))
                walls[name].append(time.perf_counter() - started)
    best = {name: min(values) for name, values in walls.items()}
    print(json.dumps({
        "size": args.size, "steps": args.steps, "repeats": args.repeats, "threads": torch.get_num_threads(),
        "wall_s": {name: round(value, 3) for name, value in best.items()},
        "asuka_over_flux_fill": round(best["asuka-flux"] / best["flux-fill"], 3),
    }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
