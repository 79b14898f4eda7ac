"""Image grids like the paper's Figure 8: one row per image, columns = masked input, each method's output, truth.

Inputs are a MISATO folder (:func:`misato.layout.open_pairs`) and prediction folders written by ``misato inpaint``
(``PRED/<name>.png`` beside ``PRED/run.json``, :mod:`baselines.runner`). Rows are chosen by position in the sorted
names (``indices``), evenly through each domain (``per_domain``), or as the images where an evaluation run scored
worst on a per-image metric (``worst`` with ``eval_run``, read by :func:`evaluate.compare.load_run`).

Every tile is ``tile × tile`` pixels: the image is fitted into it keeping its aspect ratio (LANCZOS when shrinking,
NEAREST when enlarging, so an image at its own size is copied exactly and an enlarged one shows its pixels). The
masked input keeps the known pixels and tints the hole: ``(1 - TINT_ALPHA)·image + TINT_ALPHA·HOLE_TINT``. With
``zoom``, each image gets a second tile row: the same columns cropped to the square of side ``1/ZOOM_FRACTION`` of
the image where the hole's boundary (hole pixels with a known 4-neighbour) is densest, where colour shifts and
seams show; a yellow frame on the masked input marks the crop.

Outputs (:func:`grid`):

- ``OUT.png``: the whole grid, column labels on top, image names on the left (at most :data:`MAX_PNG_ROWS` images);
- a folder ``OUT/``: ``index.html`` (self-contained: inline CSS, no script, relative references only) with one
  lazily loaded JPEG strip per image in ``OUT/rows/`` and ``OUT/grid.json`` (settings, rows, provenance). Strips,
  not single tiles, keep 2,000 images × 8 methods at 2,000 files; JPEG at quality :data:`JPEG_QUALITY` without
  chroma subsampling keeps colour shifts visible at a fraction of PNG's encoding time.
"""
from __future__ import annotations

import html
import io
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from baselines.runner import RUN_FILE
from misato.cli_choices import SIDE_RANGE
from misato.errors import MisatoError
from misato.io import atomic_write_bytes, atomic_write_text, encode_png, list_images, preview_names, read_image, \
    read_mask
from misato.labels import check_given_labels, check_unique_labels
from misato.layout import DOMAINS, PairedFolder, open_pairs
from misato.outputs import OutputPolicy, check_output_location, prepare_output, read_record
from misato.provenance import provenance
from misato.resources import check_memory

HOLE_TINT = (255, 0, 170)
"""Colour mixed into the hole of the masked input (magenta: rare in photographs)."""
TINT_ALPHA = 0.6
"""Weight of :data:`HOLE_TINT` inside the hole; the faint image behind it shows what the hole covers."""
FRAME_COLOUR = (255, 220, 0)
"""The frame marking the zoomed crop on the masked input."""
BACKGROUND = 255
"""Grey level of the space between and around tiles (white; one level, so that filling is a fast ``np.full``)."""
TEXT_COLOUR = (0, 0, 0)
DEFAULT_TILE = 256
DEFAULT_COUNT = 8
"""Images shown by ``worst`` when no count is given."""
ZOOM_FRACTION = 4
"""The zoomed crop's side is the image's shorter side divided by this."""
GAP = 4
"""Pixels between tiles."""
HEADER = 20
"""Height of the column-label band of the PNG."""
LABEL_WIDTH = 80
"""Width of the image-name band on the left of the PNG."""
MAX_PNG_ROWS = 64
"""More images than this go to an HTML page (a PNG of 2,000 rows would be half a million pixels tall)."""
JPEG_QUALITY = 92
INPUT_LABEL = "input"
TRUTH_LABEL = "ground truth"
ZOOM_LABEL = "zoom"
GRID_FILE = "grid.json"
INDEX_FILE = "index.html"
ROWS_DIR = "rows"
GRID_POLICY = OutputPolicy(what="grid", markers=(GRID_FILE,), can_resume=False, owned=(INDEX_FILE, f"{ROWS_DIR}/*.jpg", GRID_FILE))


# ----------------------------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class PredictionRun:
    """A ``misato inpaint`` output folder: its column label and ``{name: prediction file}``."""

    path: Path
    label: str
    images: dict[str, Path]


def open_prediction_run(path: str | os.PathLike, label: str | None = None) -> PredictionRun:
    """Open a prediction folder; ``label`` defaults to the method recorded in its ``run.json``.

    Raises:
        MisatoError: a missing folder, or one without ``run.json`` (an evaluation run folder is named as such).
    """
    path = Path(path)
    if not path.is_dir():
        raise MisatoError(f"--runs {path}: folder not found (give folders written by `misato inpaint --out`)")
    record_file = path / RUN_FILE
    if not record_file.is_file():
        if (path / "summary.json").is_file():
            raise MisatoError(f"--runs {path} is an evaluation run (summary.json); give the prediction folder it "
                              "scored (`misato inpaint --out`)")
        raise MisatoError(f"--runs {path} holds no {RUN_FILE}: not a `misato inpaint --out` folder")
    record = read_record(record_file)
    name = label or str(record.get("method") or path.resolve().name)
    return PredictionRun(path, name, list_images(path, f"prediction ({name})"))


def open_prediction_runs(paths: Sequence[str | os.PathLike],
                         labels: Sequence[str] | None = None) -> list[PredictionRun]:
    """Open several prediction folders; the labels (given or from ``run.json``) must be unique."""
    check_given_labels(labels, len(paths), "prediction folder")
    runs = [open_prediction_run(p, labels[i] if labels else None) for i, p in enumerate(paths)]
    check_unique_labels([run.label for run in runs], "prediction folder")
    return runs


def check_runs_cover(runs: Sequence[PredictionRun], pairs: PairedFolder, names: Sequence[str]) -> None:
    """Every run must hold a prediction for each of ``names`` and none for an image ``pairs`` lacks.

    Raises:
        MisatoError: listing, per folder, the missing (or foreign) image names.
    """
    problems = []
    known = set(pairs.names)
    for run in runs:
        missing = [n for n in names if n not in run.images]
        extra = [n for n in run.images if n not in known]
        if missing:
            problems.append(f"{run.label} ({run.path}) lacks {len(missing)} image(s): {preview_names(missing)}")
        if extra:
            problems.append(f"{run.label} ({run.path}) holds {len(extra)} image(s) the data lacks: "
                            f"{preview_names(extra)}")
    if problems:
        raise MisatoError("the methods do not cover the same images: " + "; ".join(problems))


# ----------------------------------------------------------------------------------------------------------------
# Choosing rows


@dataclass(frozen=True)
class GridRow:
    """One image of the grid: its name, domain and an optional note (the metric value for ``worst``)."""

    name: str
    domain: str
    note: str = ""


def parse_indices(text: str) -> list[int]:
    """``"0,517,1003"`` → ``[0, 517, 1003]``; anything else is a MisatoError naming ``--indices``."""
    try:
        indices = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise MisatoError(f"--indices must be comma-separated integers, got {text!r}") from None
    if not indices:
        raise MisatoError("--indices is empty")
    return indices


def _domain_order(domains: set[str]) -> list[str]:
    known = [d.name for d in DOMAINS if d.name in domains]
    return known + sorted(domains - set(known))


def check_selection(indices: Sequence[int] | None, per_domain: int | None, worst: str | None,
                    eval_run: str | os.PathLike | None, count: int | None) -> None:
    """Refuse a row selection (:func:`select_rows`) whose options contradict each other or are out of range,
    before any folder is opened."""
    chosen = [option for option, value in (("--indices", indices), ("--per-domain", per_domain),
                                           ("--worst", worst)) if value is not None]
    if len(chosen) > 1:
        raise MisatoError(f"choose one of {', '.join(chosen)}")
    if (worst is None) != (eval_run is None):
        raise MisatoError("--worst METRIC and --eval RUN go together")
    if count is not None and worst is None:
        raise MisatoError("--count applies to --worst only")
    if per_domain is not None and per_domain < 1:
        raise MisatoError(f"--per-domain must be at least 1, got {per_domain}")
    if count is not None and count < 1:
        raise MisatoError(f"--count must be at least 1, got {count}")


def select_rows(pairs: PairedFolder, indices: Sequence[int] | None = None, per_domain: int | None = None,
                worst: str | None = None, eval_run: str | os.PathLike | None = None,
                count: int | None = None) -> list[GridRow]:
    """The grid's rows, in display order; with no selection every image of ``pairs``.

    Args:
        indices: positions in the sorted image names (``0`` is the first image; the full release's names are
            their own positions).
        per_domain: this many images per domain, evenly spaced through the domain's sorted names.
        worst: a per-image metric of ``eval_run``'s ``per_image.csv``; the ``count`` (default
            :data:`DEFAULT_COUNT`) images where it is worst (lowest when higher is better), worst first.
    Raises:
        MisatoError: several selections, indices out of range, a count below 1, an unknown metric, or an
        evaluation run holding images the data lacks.
    """
    check_selection(indices, per_domain, worst, eval_run, count)
    names = pairs.names
    if indices is not None:
        bad = [i for i in indices if not 0 <= i < len(names)]
        if bad:
            raise MisatoError(f"--indices {', '.join(map(str, bad))} out of range: the data has {len(names)} images "
                              f"(positions 0–{len(names) - 1})")
        return [GridRow(names[i], pairs.domains[names[i]]) for i in indices]
    if per_domain is not None:
        rows = []
        for domain in _domain_order(set(pairs.domains.values())):
            members = [n for n in names if pairs.domains[n] == domain]
            picks = np.unique(np.linspace(0, len(members) - 1, min(per_domain, len(members))).round().astype(int))
            rows.extend(GridRow(members[i], domain) for i in picks)
        return rows
    if worst is not None:
        return _worst_rows(pairs, worst, eval_run, DEFAULT_COUNT if count is None else count)
    return [GridRow(n, pairs.domains[n]) for n in names]


def image_sizes(pairs: PairedFolder) -> set[tuple[int, int]]:
    """The distinct ``(height, width)`` in pixels of the ground-truth images of ``pairs``, from their headers."""
    sizes = set()
    for name in pairs.names:
        try:
            with Image.open(pairs.images[name]) as image:
                sizes.add((image.height, image.width))
        except (OSError, ValueError) as error:
            raise MisatoError(f"{pairs.images[name]}: cannot read ({error})") from None
    return sizes


def check_eval_of_data(run, pairs: PairedFolder) -> None:
    """Refuse an evaluation run (:class:`evaluate.compare.Run`) whose ``summary.json`` says it scored other images
    than ``pairs``: another image count (``n``) or other image sizes (``image_sizes``, checked when recorded). Equal
    names are not enough: the same names at another size are other data, and their worst images are not these."""
    from results.tables import sizes_text  # pandas, through results.reported: only when an eval is given

    differences = []
    if run.n != len(pairs):
        differences.append(f"{run.n} image(s), the data has {len(pairs)}")
    if run.image_sizes is not None:
        data_sizes = image_sizes(pairs)
        if set(run.image_sizes) != data_sizes:
            differences.append(f"images of {sizes_text(run.image_sizes)}, the data's are {sizes_text(data_sizes)}")
    if differences:
        raise MisatoError(f"--eval {run.path} is an evaluation of other data ({'; '.join(differences)}); "
                          "pass the run that evaluated --data's images")


def _worst_rows(pairs: PairedFolder, metric: str, eval_run: str | os.PathLike, count: int) -> list[GridRow]:
    from evaluate.compare import load_run
    from evaluate.metric_info import METRICS

    run = load_run(eval_run)
    columns = [m for m in METRICS if METRICS[m].per_image and m in run.per_image.columns]
    if metric not in columns:
        raise MisatoError(f"--worst {metric!r}: not a per-image metric of {run.path} (it has "
                          f"{', '.join(columns) or 'none'})")
    foreign = [n for n in run.per_image.index if n not in pairs.domains]
    if foreign:
        raise MisatoError(f"--eval {run.path} scored {len(foreign)} image(s) the data lacks: {preview_names(foreign)}")
    check_eval_of_data(run, pairs)
    values = run.per_image[metric]
    ordered = sorted(values.index, key=lambda n: (values[n] if METRICS[metric].higher_is_better else -values[n], n))
    label = METRICS[metric].label
    return [GridRow(n, pairs.domains[n], f"{label}: {values[n]:.3f}") for n in ordered[:count]]


# ----------------------------------------------------------------------------------------------------------------
# Tiles


def tint_hole(image: np.ndarray, hole: np.ndarray, tint: Sequence[int] = HOLE_TINT,
              alpha: float = TINT_ALPHA) -> np.ndarray:
    """The masked input: ``image`` (``uint8 [H, W, 3]``) with the hole (``bool [H, W]``, True = hole) mixed with
    ``tint``; pixels outside the hole are unchanged. Returns ``uint8 [H, W, 3]``."""
    out = image.copy()
    mixed = (1 - alpha) * image[hole].astype(np.float64) + alpha * np.asarray(tint, dtype=np.float64)
    out[hole] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return out


def fit_tile(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` (``uint8 [H, W, 3]``) fitted into a ``size × size`` tile, aspect kept, centred on
    :data:`BACKGROUND`; LANCZOS when shrinking, NEAREST when enlarging, a plain copy at the same size."""
    height, width = image.shape[:2]
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    if (new_h, new_w) != (height, width):
        method = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST
        image = np.asarray(Image.fromarray(image).resize((new_w, new_h), method, reducing_gap=3.0))
    if (new_h, new_w) == (size, size):
        return np.ascontiguousarray(image)
    tile = np.full((size, size, 3), BACKGROUND, np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    tile[top : top + new_h, left : left + new_w] = image
    return tile


def hole_boundary(hole: np.ndarray) -> np.ndarray:
    """Hole pixels with at least one known 4-neighbour (``bool [H, W]``); the image border counts as hole."""
    padded = np.pad(hole, 1, mode="edge")
    known_neighbour = ~padded[:-2, 1:-1] | ~padded[2:, 1:-1] | ~padded[1:-1, :-2] | ~padded[1:-1, 2:]
    return hole & known_neighbour


def zoom_window(hole: np.ndarray, side: int) -> tuple[int, int]:
    """Top-left ``(y, x)`` of the ``side × side`` window holding the most hole-boundary pixels (the first in raster
    order on ties; the image centre when there is no boundary)."""
    height, width = hole.shape
    side = min(side, height, width)
    boundary = hole_boundary(hole)
    if not boundary.any():
        return (height - side) // 2, (width - side) // 2
    integral = np.pad(boundary.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    counts = (integral[side:, side:] - integral[:-side, side:] - integral[side:, :-side] + integral[:-side, :-side])
    y, x = np.unravel_index(int(np.argmax(counts)), counts.shape)
    return int(y), int(x)


def _frame(tile: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """``tile`` with a 2-pixel :data:`FRAME_COLOUR` rectangle on ``box`` = (y0, x0, y1, x1), exclusive ends."""
    y0, x0, y1, x1 = box
    out = tile.copy()
    for rows, cols in (((y0, y0 + 2), (x0, x1)), ((y1 - 2, y1), (x0, x1)), ((y0, y1), (x0, x0 + 2)),
                       ((y0, y1), (x1 - 2, x1))):
        out[max(rows[0], 0) : rows[1], max(cols[0], 0) : cols[1]] = FRAME_COLOUR
    return out


def row_tiles(truth: np.ndarray, hole: np.ndarray, predictions: Sequence[np.ndarray], tile: int,
              zoom: bool = False) -> list[list[np.ndarray]]:
    """Tiles of one image: ``[[input, *predictions, truth]]``, plus the same columns zoomed with ``zoom``.

    Args:
        truth: ``uint8 [H, W, 3]``; hole: ``bool [H, W]``; predictions: ``uint8 [H, W, 3]`` each.
    Returns:
        one or two lists of ``uint8 [tile, tile, 3]``.
    """
    masked = tint_hole(truth, hole)
    columns = [masked, *predictions, truth]
    tiles = [fit_tile(image, tile) for image in columns]
    if not zoom:
        return [tiles]
    side = max(1, min(hole.shape) // ZOOM_FRACTION)
    y, x = zoom_window(hole, side)
    scale = tile / max(hole.shape)
    top, left = (tile - round(hole.shape[0] * scale)) // 2, (tile - round(hole.shape[1] * scale)) // 2
    tiles[0] = _frame(tiles[0], (top + round(y * scale), left + round(x * scale),
                                 top + round((y + side) * scale), left + round((x + side) * scale)))
    return [tiles, [fit_tile(image[y : y + side, x : x + side], tile) for image in columns]]


def strip(tile_rows: Sequence[Sequence[np.ndarray]], gap: int = GAP) -> np.ndarray:
    """Tile rows joined with ``gap`` pixels of :data:`BACKGROUND` between tiles: ``uint8 [rows·t + (rows-1)·gap,
    cols·t + (cols-1)·gap, 3]``."""
    size = tile_rows[0][0].shape[0]
    n_cols = len(tile_rows[0])
    out = np.full((len(tile_rows) * (size + gap) - gap, n_cols * (size + gap) - gap, 3), BACKGROUND, np.uint8)
    for r, tiles in enumerate(tile_rows):
        for c, image in enumerate(tiles):
            out[r * (size + gap) : r * (size + gap) + size, c * (size + gap) : c * (size + gap) + size] = image
    return out


@dataclass(frozen=True)
class GridLayout:
    """Where each tile of the PNG grid lies: ``n_rows`` images × ``n_cols`` columns of ``tile`` pixels."""

    n_rows: int
    n_cols: int
    tile: int
    zoom: bool = False
    gap: int = GAP
    header: int = HEADER
    label_width: int = LABEL_WIDTH

    @property
    def tiles_per_image(self) -> int:
        return 2 if self.zoom else 1

    @property
    def row_height(self) -> int:
        """Height of one image's strip (its tile rows and the gaps between them)."""
        return self.tiles_per_image * (self.tile + self.gap) - self.gap

    @property
    def strip_size(self) -> tuple[int, int]:
        """``(height, width)`` of one image's strip (:func:`strip`)."""
        return self.row_height, self.n_cols * (self.tile + self.gap) - self.gap

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the PNG."""
        return (self.header + self.n_rows * (self.row_height + self.gap),
                self.label_width + self.n_cols * (self.tile + self.gap))

    def peak_bytes(self, as_png: bool) -> int:
        """Memory the grid needs at its peak: for the PNG every strip, the canvas and its PIL copy (3 × the
        picture); for the HTML page one strip, its tiles and its JPEG encoding (3 × a strip)."""
        height, width = self.size if as_png else self.strip_size
        return 3 * height * width * 3

    def row_origin(self, row: int) -> tuple[int, int]:
        """Top-left ``(y, x)`` of image ``row``'s strip."""
        return self.header + row * (self.row_height + self.gap), self.label_width

    def tile_box(self, row: int, col: int, zoomed: bool = False) -> tuple[int, int, int, int]:
        """``(y0, x0, y1, x1)`` (ends exclusive) of image ``row``'s tile in column ``col`` (its zoom tile with
        ``zoomed``)."""
        y, x = self.row_origin(row)
        y += (self.tile + self.gap) if zoomed else 0
        x += col * (self.tile + self.gap)
        return y, x, y + self.tile, x + self.tile


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def _fitted_text(draw: ImageDraw.ImageDraw, text: str, width: int) -> str:
    """``text`` cut with an ellipsis to fit ``width`` pixels."""
    if draw.textlength(text, font=_font()) <= width:
        return text
    while text and draw.textlength(text + "…", font=_font()) > width:
        text = text[:-1]
    return text + "…"


def compose_png(strips: Sequence[np.ndarray], rows: Sequence[GridRow], columns: Sequence[str],
                layout: GridLayout) -> np.ndarray:
    """The PNG grid ``uint8 [H, W, 3]`` (``layout.size``): column labels, image names, the strips."""
    canvas = np.full((*layout.size, 3), BACKGROUND, np.uint8)
    for index, image in enumerate(strips):
        y, x = layout.row_origin(index)
        canvas[y : y + image.shape[0], x : x + image.shape[1]] = image
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    for col, label in enumerate(columns):
        _, x0, _, _ = layout.tile_box(0, col)
        text = _fitted_text(draw, label, layout.tile)
        draw.text((x0 + (layout.tile - draw.textlength(text, font=_font())) / 2, 4), text, fill=TEXT_COLOUR,
                  font=_font())
    for index, row in enumerate(rows):
        y, _ = layout.row_origin(index)
        for line, text in enumerate(t for t in (row.name, row.domain, row.note) if t):
            draw.text((4, y + 2 + 14 * line), _fitted_text(draw, text, layout.label_width - 8), fill=TEXT_COLOUR,
                      font=_font())
        if layout.zoom:
            draw.text((4, layout.tile_box(index, 0, zoomed=True)[0] + 2), ZOOM_LABEL, fill=TEXT_COLOUR, font=_font())
    return np.asarray(picture)


# ----------------------------------------------------------------------------------------------------------------
# The page


def encode_jpeg(image: np.ndarray) -> bytes:
    """JPEG bytes of ``uint8 [H, W, 3]`` at :data:`JPEG_QUALITY`, 4:4:4 (no chroma subsampling)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buffer.getvalue()


PAGE_STYLE = """
body { font-family: sans-serif; margin: 1em; background: #fff; color: #000; }
.head, .row { display: flex; gap: 8px; align-items: flex-start; margin-bottom: 8px; }
.head { position: sticky; top: 0; background: #fff; padding: 4px 0; z-index: 1; }
.label { width: 9em; flex: none; font-size: 0.85em; word-break: break-all; }
.cols { display: flex; gap: GAPpx; }
.cols span { width: TILEpx; text-align: center; font-size: 0.85em; overflow: hidden; white-space: nowrap; }
img { display: block; image-rendering: pixelated; }
"""


def render_page(rows: Sequence[GridRow], columns: Sequence[str], strip_files: Sequence[str],
                strip_size: tuple[int, int], tile: int, title: str) -> str:
    """The HTML page: a sticky row of column labels, then one ``<img loading="lazy">`` strip per image
    (``strip_files`` relative to the page, ``strip_size`` = (height, width))."""
    style = PAGE_STYLE.replace("GAP", str(GAP)).replace("TILE", str(tile))
    heads = "".join(f"<span>{html.escape(label)}</span>" for label in columns)
    lines = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{html.escape(title)}</title>", f"<style>{style}</style>", "</head>", "<body>",
             f"<h1>{html.escape(title)}</h1>", f'<div class="head"><div class="label">image</div>'
             f'<div class="cols">{heads}</div></div>']
    height, width = strip_size
    for row, file in zip(rows, strip_files):
        label = "<br>".join(html.escape(t) for t in (row.name, row.domain, row.note) if t)
        lines.append(f'<div class="row" id="{html.escape(row.name)}"><div class="label">{label}</div>'
                     f'<img src="{quote(file)}" loading="lazy" decoding="async" width="{width}" height="{height}" '
                     f'alt="{html.escape(row.name)}"></div>')
    lines += ["</body>", "</html>", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# The command


def _read_row(pairs: PairedFolder, runs: Sequence[PredictionRun], name: str) -> tuple[np.ndarray, np.ndarray,
                                                                                       list[np.ndarray]]:
    truth = read_image(pairs.images[name])
    hole = read_mask(pairs.masks[name])
    if hole.shape != truth.shape[:2]:
        raise MisatoError(f"{pairs.masks[name]}: mask is {hole.shape[1]}x{hole.shape[0]} but its image is "
                          f"{truth.shape[1]}x{truth.shape[0]}")
    predictions = []
    for run in runs:
        prediction = read_image(run.images[name])
        if prediction.shape != truth.shape:
            raise MisatoError(f"{run.images[name]}: prediction is {prediction.shape[1]}x{prediction.shape[0]} but "
                              f"the ground truth is {truth.shape[1]}x{truth.shape[0]}")
        predictions.append(prediction)
    return truth, hole, predictions


def grid(data: str | os.PathLike, runs: Sequence[str | os.PathLike], out: str | os.PathLike,
         labels: Sequence[str] | None = None, indices: Sequence[int] | None = None, per_domain: int | None = None,
         worst: str | None = None, eval_run: str | os.PathLike | None = None, count: int | None = None,
         tile: int = DEFAULT_TILE, zoom: bool = False, overwrite: bool = False) -> dict:
    """Write the grid of ``runs`` (prediction folders) over ``data`` to ``out`` (see the module docstring).

    Args:
        out: a ``.png`` file (at most :data:`MAX_PNG_ROWS` images) or a folder (the HTML page).
        labels: column labels, one per run (default: each ``run.json``'s method).
        indices, per_domain, worst, eval_run, count: the row selection (:func:`select_rows`).
        tile: tile side in pixels.
        zoom: add a zoomed crop of the hole boundary under each image.
        overwrite: replace an existing PNG file, or a folder holding an earlier grid (only what a grid writes).
    Returns:
        ``{"rows": [...], "columns": [...], "files": [paths written]}``.
    Raises:
        MisatoError: bad options, inputs that are not prediction folders, methods not covering the chosen
        images, images of different sizes, an output inside an input or already there.
    """
    if not SIDE_RANGE[0] <= tile <= SIDE_RANGE[1]:
        raise MisatoError(f"--tile must be at least {SIDE_RANGE[0]} and at most {SIDE_RANGE[1]} pixels, got {tile}")
    check_selection(indices, per_domain, worst, eval_run, count)
    pairs = open_pairs(data)
    predictions = open_prediction_runs(runs, labels)
    rows = select_rows(pairs, indices, per_domain, worst, eval_run, count)
    check_runs_cover(predictions, pairs, [row.name for row in rows])
    out = Path(out)
    inputs = [pairs.images[pairs.names[0]].parent, pairs.masks[pairs.names[0]].parent, *(r.path for r in predictions)]
    as_png = out.suffix.lower() == ".png"
    columns = [INPUT_LABEL, *(run.label for run in predictions), TRUTH_LABEL]
    layout = GridLayout(len(rows), len(columns), tile, zoom)
    check_memory(layout.peak_bytes(as_png), f"--tile {tile} grid of {len(rows)} images × {len(columns)} columns"
                 + (" in one PNG" if as_png else ""))
    if as_png:
        check_output_location(out, inputs)
        if len(rows) > MAX_PNG_ROWS:
            raise MisatoError(f"--out {out}: {len(rows)} images do not fit one PNG (at most {MAX_PNG_ROWS}); give a "
                              "folder for the HTML page, or fewer images (--indices, --per-domain, --worst)")
        if out.exists() and not overwrite:
            raise MisatoError(f"--out {out} exists; pass --overwrite to replace it")
    else:
        prepare_output(out, GRID_POLICY, overwrite=overwrite, inputs=inputs)
    strips, files = [], []
    for row in rows:
        truth, hole, images = _read_row(pairs, predictions, row.name)
        image = strip(row_tiles(truth, hole, images, tile, zoom))
        if as_png:
            strips.append(image)
        else:
            file = f"{ROWS_DIR}/{row.name}.jpg"
            atomic_write_bytes(out / file, encode_jpeg(image))
            files.append(file)
    record = {"rows": [asdict(row) for row in rows], "columns": columns}
    if as_png:
        atomic_write_bytes(out, encode_png(compose_png(strips, rows, columns, layout)))
        written = [out]
    else:
        title = f"{len(rows)} images × {len(predictions)} methods — {Path(data).resolve().name}"
        atomic_write_text(out / INDEX_FILE, render_page(rows, columns, files, layout.strip_size, tile, title))
        settings = {"data": str(Path(data).resolve()), "runs": [str(r.path.resolve()) for r in predictions],
                    "tile": tile, "zoom": zoom, "selection": {"indices": indices, "per_domain": per_domain,
                                                             "worst": worst, "eval": eval_run and str(eval_run),
                                                             "count": count}}
        atomic_write_text(out / GRID_FILE, json.dumps({**settings, **record, "complete": True,
                                                       "provenance": provenance()}, indent=2))
        written = [out / INDEX_FILE, out / GRID_FILE]
    return {**record, "files": written}
