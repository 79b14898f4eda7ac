"""`misato grid`: the pixel layout of the PNG, the HTML page's references, row selection and bad input."""
from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from baselines import create_method, run_method
from misato.cli import main
from misato.errors import MisatoError
from misato.io import read_image, read_mask
from results import grid as grid_module
from results.grid import (GAP, HEADER, HOLE_TINT, LABEL_WIDTH, TINT_ALPHA, GridLayout, fit_tile, grid,
                          hole_boundary, tint_hole, zoom_window)
from tests.evaluate.test_compare import write_run
from tests.helpers import write_misato_folder
from tests.results.cli_errors import assert_one_line_error

SIZE = 32
NAMES = ["0000", "0100", "0499", "0500", "0700", "1000"]
WHITE = (255, 255, 255)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    """A MISATO folder over three domains and two real `misato inpaint` runs (Telea, Navier–Stokes)."""
    root = tmp_path_factory.mktemp("grid")
    data = write_misato_folder(root / "data", size=SIZE, names=NAMES)
    runs = []
    for method in ("telea", "navier-stokes"):
        run_method(create_method(method), data, root / method, progress=False)
        runs.append(root / method)
    return {"data": data, "runs": runs}


def _tile(picture: np.ndarray, row: int, col: int, tile: int = SIZE, zoom: bool = False,
          zoomed: bool = False) -> np.ndarray:
    """The tile at (row, col) (its zoom tile with ``zoomed``, in a grid drawn with ``zoom``), located by arithmetic
    independent of GridLayout: header band, label band, 4-px gaps."""
    y = HEADER + row * (2 if zoom else 1) * (tile + GAP) + (tile + GAP if zoomed else 0)
    x = LABEL_WIDTH + col * (tile + GAP)
    return picture[y : y + tile, x : x + tile]


def test_png_tile_r_c_holds_exactly_that_image_and_the_tint_stays_in_the_hole(study, tmp_path):
    order = [3, 0, 5]
    out = tmp_path / "g.png"
    result = grid(study["data"], study["runs"], out, indices=order, tile=SIZE)
    picture = read_image(out)
    assert picture.shape == (HEADER + 3 * (SIZE + GAP), LABEL_WIDTH + 4 * (SIZE + GAP), 3)
    assert result["columns"] == ["input", "telea", "navier-stokes", "ground truth"]
    assert [row["name"] for row in result["rows"]] == [NAMES[i] for i in order]
    layout = GridLayout(3, 4, SIZE)
    for r, index in enumerate(order):
        name = NAMES[index]
        truth = read_image(study["data"] / "image" / f"{name}.png")
        hole = read_mask(study["data"] / "mask" / f"{name}.png")
        expected = [None, read_image(study["runs"][0] / f"{name}.png"), read_image(study["runs"][1] / f"{name}.png"),
                    truth]
        for c in (1, 2, 3):
            np.testing.assert_array_equal(_tile(picture, r, c), expected[c])
            y0, x0, y1, x1 = layout.tile_box(r, c)
            np.testing.assert_array_equal(picture[y0:y1, x0:x1], expected[c])
        masked = _tile(picture, r, 0)
        np.testing.assert_array_equal(masked[~hole], truth[~hole])
        tinted = np.clip(np.rint(0.4 * truth[hole] + 0.6 * np.array(HOLE_TINT)), 0, 255)
        np.testing.assert_array_equal(masked[hole], tinted)
        assert (masked[hole] != truth[hole]).any(axis=-1).all()
    gap_x = LABEL_WIDTH + SIZE  # the gap column right of the first tile
    assert (picture[HEADER:, gap_x : gap_x + GAP] == WHITE).all()


def test_tint_hole_mixes_only_hole_pixels():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    hole = rng.random((9, 7)) < 0.4
    out = tint_hole(image, hole)
    np.testing.assert_array_equal(out[~hole], image[~hole])
    by_hand = (1 - TINT_ALPHA) * image[hole].astype(float) + TINT_ALPHA * np.array(HOLE_TINT, float)
    np.testing.assert_array_equal(out[hole], np.rint(by_hand).astype(np.uint8))


def test_enlarged_tiles_repeat_pixels_and_the_layout_scales(study, tmp_path):
    out = tmp_path / "big.png"
    grid(study["data"], study["runs"][:1], out, indices=[1], tile=2 * SIZE)
    picture = read_image(out)
    truth = read_image(study["data"] / "image" / f"{NAMES[1]}.png")
    doubled = truth.repeat(2, axis=0).repeat(2, axis=1)
    np.testing.assert_array_equal(_tile(picture, 0, 2, tile=2 * SIZE), doubled)
    assert picture.shape[:2] == GridLayout(1, 3, 2 * SIZE).size


def test_a_wide_image_is_letterboxed_with_its_aspect_kept():
    rng = np.random.default_rng(2)
    wide = rng.integers(0, 256, (20, 40, 3), dtype=np.uint8)
    tile = fit_tile(wide, 20)
    assert (tile[:5] == 255).all() and (tile[15:] == 255).all()
    shrunk = np.asarray(Image.fromarray(wide).resize((20, 10), Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(tile[5:15], shrunk)
    np.testing.assert_array_equal(fit_tile(wide, 80)[20:60], wide.repeat(2, 0).repeat(2, 1))


def test_zoom_window_is_where_the_boundary_is_densest():
    rng = np.random.default_rng(1)
    hole = ndimage.binary_dilation(rng.random((24, 20)) < 0.05, iterations=2)
    # Reference: boundary = hole minus its 4-connected erosion (pixels outside the image count as hole).
    boundary = hole & ~ndimage.binary_erosion(hole, border_value=1)
    np.testing.assert_array_equal(hole_boundary(hole), boundary)
    side = 6
    counts = np.array([[boundary[y : y + side, x : x + side].sum() for x in range(20 - side + 1)]
                       for y in range(24 - side + 1)])
    y, x = zoom_window(hole, side)
    assert counts[y, x] == counts.max()
    assert (y, x) == np.unravel_index(np.argmax(counts), counts.shape)
    assert zoom_window(np.zeros((10, 10), bool), 4) == (3, 3)


def test_zoom_rows_hold_the_nearest_neighbour_crop(study, tmp_path):
    out = tmp_path / "zoom.png"
    grid(study["data"], study["runs"], out, indices=[2, 4], tile=SIZE, zoom=True)
    picture = read_image(out)
    assert picture.shape[0] == HEADER + 2 * 2 * (SIZE + GAP)
    side = SIZE // grid_module.ZOOM_FRACTION
    factor = SIZE // side
    for r, name in enumerate((NAMES[2], NAMES[4])):
        hole = read_mask(study["data"] / "mask" / f"{name}.png")
        y, x = zoom_window(hole, side)
        for c, folder in ((1, study["runs"][0]), (3, study["data"] / "image")):
            image = read_image(folder / f"{name}.png")
            crop = image[y : y + side, x : x + side].repeat(factor, 0).repeat(factor, 1)
            np.testing.assert_array_equal(_tile(picture, r, c, zoom=True, zoomed=True), crop)
            np.testing.assert_array_equal(_tile(picture, r, c, zoom=True), image)
        frame = _tile(picture, r, 0, zoom=True)[y : y + side, x : x + side]
        assert (frame[0] == grid_module.FRAME_COLOUR).all() and (frame[:, 0] == grid_module.FRAME_COLOUR).all()


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images: list[dict] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        for key in ("href", "src"):
            if key in attrs and tag != "img":
                self.links.append(attrs[key])


def test_html_page_references_one_relative_lazy_strip_per_image(study, tmp_path):
    out = tmp_path / "page"
    result = grid(study["data"], study["runs"], out, labels=["A", "B"], tile=16)
    page = (out / "index.html").read_text(encoding="utf-8")
    parser = _Images()
    parser.feed(page)
    assert parser.links == []  # no stylesheet, script or other outside reference
    assert [img["alt"] for img in parser.images] == NAMES
    for img in parser.images:
        src = img["src"]
        assert not Path(src).is_absolute() and ":" not in src and ".." not in src
        assert img["loading"] == "lazy" and (out / src).is_file()
        strip = read_image(out / src)
        assert strip.shape == (16, 4 * 16 + 3 * GAP, 3) == (int(img["height"]), int(img["width"]), 3)
    truth = read_image(study["data"] / "image" / "0700.png")
    reduced = np.asarray(Image.fromarray(truth).resize((16, 16), Image.Resampling.LANCZOS))
    strip = read_image(out / "rows" / "0700.jpg").astype(int)
    assert np.abs(strip[:, 3 * (16 + GAP):] - reduced).mean() < 4  # JPEG q92, 4:4:4 of the LANCZOS tile
    assert "<span>A</span><span>B</span>" in page
    assert {path.name for path in result["files"]} == {"index.html", "grid.json"}
    with pytest.raises(MisatoError, match="--overwrite"):
        grid(study["data"], study["runs"], out, tile=16)
    (out / "notes.txt").write_text("mine")
    (out / "rows" / "mine.txt").write_text("mine")
    grid(study["data"], study["runs"][:1], out, tile=16, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and "navier" not in (out / "index.html").read_text()
    assert (out / "rows" / "mine.txt").read_text() == "mine"


def test_same_inputs_give_the_same_bytes(study, tmp_path):
    for name in ("a", "b"):
        grid(study["data"], study["runs"], tmp_path / f"{name}.png", per_domain=1, zoom=True)
        grid(study["data"], study["runs"], tmp_path / name, per_domain=1)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert (tmp_path / "a" / "rows" / "0000.jpg").read_bytes() == (tmp_path / "b" / "rows" / "0000.jpg").read_bytes()


def test_per_domain_spreads_evenly_through_each_domain(study, tmp_path):
    result = grid(study["data"], study["runs"], tmp_path / "d.png", per_domain=2)
    assert [(row["name"], row["domain"]) for row in result["rows"]] == [
        ("0000", "landscape"), ("0499", "landscape"), ("0500", "indoor"), ("0700", "indoor"), ("1000", "building")]


def test_worst_orders_images_by_the_evaluation_runs_metric(study, tmp_path):
    psnr = np.array([30.0, 18.0, 25.0, 12.0, 40.0, 22.0])
    lpips = np.array([0.1, 0.5, 0.2, 0.3, 0.05, 0.4])
    run = write_run(tmp_path, "eval", {"psnr": psnr, "lpips": lpips}, names=NAMES)
    worst_psnr = grid(study["data"], study["runs"], tmp_path / "p.png", worst="psnr", eval_run=run, count=3)
    assert [row["name"] for row in worst_psnr["rows"]] == ["0500", "0100", "1000"]
    assert worst_psnr["rows"][0]["note"] == "PSNR: 12.000"
    worst_lpips = grid(study["data"], study["runs"], tmp_path / "l.png", worst="lpips", eval_run=run)
    assert [row["name"] for row in worst_lpips["rows"]] == ["0100", "1000", "0500", "0499", "0000", "0700"]


def test_bad_input_is_one_line_naming_the_problem(study, tmp_path, capsys):
    data, (telea, ns) = str(study["data"]), map(str, study["runs"])
    out = str(tmp_path / "g.png")
    base = ["grid", "--data", data, "--out", out, "--runs", telea]
    evaluation = write_run(tmp_path, "eval", {"psnr": np.arange(6.0)}, names=NAMES)
    assert_one_line_error(capsys, [*base, str(evaluation)], "is an evaluation run")
    assert_one_line_error(capsys, [*base, str(study["data"] / "image")], "not a `misato inpaint --out` folder")
    assert_one_line_error(capsys, [*base, "--indices", "0,6"], "--indices 6 out of range", "6 images")
    assert_one_line_error(capsys, [*base, "--indices", "0,x"], "--indices must be comma-separated integers")
    assert_one_line_error(capsys, [*base, "--worst", "fid", "--eval", str(evaluation)], "--worst 'fid'", "psnr")
    assert_one_line_error(capsys, [*base, "--worst", "psnr"], "--worst METRIC and --eval RUN go together")
    assert_one_line_error(capsys, [*base, "--per-domain", "0"], "--per-domain must be at least 1")
    assert_one_line_error(capsys, [*base, "--count", "3"], "--count applies to --worst only")
    assert_one_line_error(capsys, [*base, "--worst", "psnr", "--eval", str(evaluation), "--count", "0"],
                          "--count must be at least 1")
    assert_one_line_error(capsys, [*base, "--tile", "4"], "--tile must be at least 8")
    assert_one_line_error(capsys, [*base, ns, "--labels", "only-one"], "--labels has 1 label(s) for 2")
    assert_one_line_error(capsys, [*base, ns, "--labels", "a,"], "--labels contains an empty label")
    assert_one_line_error(capsys, [*base, telea], "share the label 'telea'")
    assert_one_line_error(capsys, ["grid", "--data", data, "--runs", telea, "--out", str(Path(telea) / "g.png")],
                    "lies inside the input folder")
    assert not (tmp_path / "g.png").exists()


def test_methods_with_different_image_sets_are_refused_naming_the_missing_images(study, tmp_path, capsys):
    partial = tmp_path / "partial"
    run_method(create_method("telea"), study["data"], partial, limit=4, progress=False)
    argv = ["grid", "--data", str(study["data"]), "--runs", str(study["runs"][1]), str(partial), "--labels", "ns,cut",
            "--out", str(tmp_path / "g.png")]
    assert_one_line_error(capsys, argv, "cut (", "lacks 2 image(s): 0700, 1000")
    assert main([*argv, "--indices", "0,3"]) == 0  # the shown images exist in both
    (partial / "9999.png").write_bytes((partial / "0000.png").read_bytes())
    with pytest.raises(MisatoError, match="holds 1 image.s. the data lacks: 9999"):
        grid(study["data"], [partial], tmp_path / "h.png", indices=[0])


def test_a_png_refuses_more_rows_than_fit_and_an_existing_file(study, tmp_path, monkeypatch):
    monkeypatch.setattr(grid_module, "MAX_PNG_ROWS", 4)
    with pytest.raises(MisatoError, match="6 images do not fit one PNG"):
        grid(study["data"], study["runs"], tmp_path / "g.png")
    grid(study["data"], study["runs"], tmp_path / "g.png", indices=[0])
    with pytest.raises(MisatoError, match="exists; pass --overwrite"):
        grid(study["data"], study["runs"], tmp_path / "g.png", indices=[1])
    grid(study["data"], study["runs"], tmp_path / "g.png", indices=[1], overwrite=True)
