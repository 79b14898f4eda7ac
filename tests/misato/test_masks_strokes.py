"""LaMa and Co-Mod-GAN/MAT generators against REFERENCE.md section 3, via independent checks."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy import ndimage, stats

from misato.masks import make_generator
from misato.masks.comod import brush_strokes, random_boxes as comod_boxes
from misato.masks.lama import LAMA_CONFIGS, LamaConfig, irregular_strokes, random_boxes
from tests.misato.mask_simulation import comod_mask, lama_mask, sample_ratios


def library_ratios(preset: str, size: int, n: int, ratio_range=(0.0, 1.0)) -> np.ndarray:
    # Compared untruncated by default: LaMa's (0, 0.5) cut would hide a change of scale of thin masks.
    generator = make_generator(preset, size, ratio_range=ratio_range)
    return np.array([generator.sample(np.random.default_rng([99, i]))[0].mean() for i in range(n)])


def test_opencv_thick_line_width_assumed_by_the_simulation():
    # The simulation models cv2.line(thickness=t) as a capsule of radius (t + 1) // 2 + 0.5: cross-sections
    # of a horizontal line are then 2 * ((t + 1) // 2) + 1 pixels.
    for t in (5, 6, 10, 11, 24):
        canvas = np.zeros((80, 120), np.uint8)
        cv2.line(canvas, (20, 40), (100, 40), 1, t)
        assert canvas[:, 60].sum() == 2 * ((t + 1) // 2) + 1


LAMA_SIM = {
    "lama-thin-256": dict(strokes=(4, 50), max_width=10, max_len=40),
    "lama-medium-256": dict(strokes=(4, 5), max_width=50, max_len=100, box_prob=0.3, margin=0, box_side=(10, 50),
                            box_times=(1, 5)),
    "lama-thick-256": dict(strokes=(1, 5), max_width=100, max_len=200, box_prob=0.3, margin=10,
                           box_side=(30, 150), box_times=(1, 3)),
}


@pytest.mark.parametrize("preset", sorted(LAMA_SIM))
def test_lama_hole_ratio_distribution_matches_independent_simulation(preset):
    simulated = sample_ratios(lambda rs: lama_mask(rs, 256, **LAMA_SIM[preset]), 300, 0.0, 1.0)
    ours = library_ratios(preset, 256, 300)
    assert abs(ours.mean() - simulated.mean()) < 0.025
    for q in (0.25, 0.5, 0.75):
        assert abs(np.quantile(ours, q) - np.quantile(simulated, q)) < 0.05
    assert stats.ks_2samp(ours, simulated).pvalue > 0.01


def test_lama_default_range_drops_masks_over_half():
    ours = library_ratios("lama-thick-256", 256, 100, ratio_range=None)
    assert ours.max() < 0.5 and ours.min() > 0


def test_lama_simulation_detects_a_wrong_width():
    # Guard against a comparison that cannot fail: max_width 14 instead of 10 is rejected.
    wider = sample_ratios(lambda rs: lama_mask(rs, 256, strokes=(4, 50), max_width=14, max_len=40), 300, 0, 1)
    assert stats.ks_2samp(library_ratios("lama-thin-256", 256, 300), wider).pvalue < 0.01


def test_lama_stroke_count_is_min_to_max_plus_one():
    # Tiny strokes (length 10, width 5) on a huge canvas rarely touch: components ≈ strokes.
    config = LamaConfig(size=2048, min_strokes=4, max_strokes=6, max_width=1, max_len=1)
    counts = [ndimage.label(irregular_strokes(np.random.default_rng(i), config), np.ones((3, 3)))[1] for i in range(200)]
    assert max(counts) == 7
    assert set(range(4, 8)) <= set(counts)
    assert np.mean([c < 4 for c in counts]) < 0.05  # only merges go below the minimum


def test_lama_stroke_blob_areas_respect_width_and_length():
    # width 5 and length 10 exactly, 1–5 segments: a stroke covers at least one 10 x 5 capsule and at most
    # five of them (cv2 draws thickness 5 as ~7 px).
    config = LamaConfig(size=1024, min_strokes=0, max_strokes=0, max_width=1, max_len=1)
    areas = [m.sum() for m in (irregular_strokes(np.random.default_rng(i), config) for i in range(200)) if m.any()]
    assert len(areas) > 50
    assert min(areas) >= 10 * 5 and max(areas) <= 5 * (10 + 7) * 7


def test_lama_boxes_sides_positions_and_counts():
    config = LamaConfig(size=64, min_strokes=0, max_strokes=0, max_width=1, max_len=1, box_margin=3,
                        box_min_side=10, box_max_side=12, box_min_times=1, box_max_times=1)
    sides, starts = set(), []
    for i in range(300):
        mask = random_boxes(np.random.default_rng(i), config)
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert mask.sum() == rows.size * cols.size  # one filled rectangle
        sides |= {rows.size, cols.size}
        starts += [rows[0], cols[0]]
        assert rows[-1] <= 64 - 3 - 1 and cols[-1] <= 64 - 3 - 1
    assert sides == {10, 11, 12}  # inclusive range
    assert min(starts) == 3
    clamped = LamaConfig(size=64, min_strokes=0, max_strokes=0, max_width=1, max_len=1, box_margin=10,
                         box_min_side=40, box_max_side=300, box_min_times=1, box_max_times=1)
    assert all(random_boxes(np.random.default_rng(i), clamped).any(1).sum() <= 44 for i in range(50))
    tiny = LamaConfig(size=2048, min_strokes=0, max_strokes=0, max_width=1, max_len=1, box_min_side=1,
                      box_max_side=1, box_min_times=2, box_max_times=4)
    counts = {int(random_boxes(np.random.default_rng(i), tiny).sum()) for i in range(100)}
    assert counts == {2, 3, 4}


def test_lama_box_share_is_0_3_over_1_3():
    # Box masks at medium-256 are unions of axis-aligned boxes: every hole component fills its bounding box.
    generator = make_generator("lama-medium-256", 256, ratio_range=(0.0, 1.0))
    n, boxes = 600, 0
    for i in range(n):
        mask, _ = generator.sample(np.random.default_rng([5, i]))
        labels, count = ndimage.label(mask)
        boxes += all(s.sum() == (sl[0].stop - sl[0].start) * (sl[1].stop - sl[1].start)
                     for s, sl in ((labels[obj] == k + 1, obj) for k, obj in enumerate(ndimage.find_objects(labels))))
    expected = 0.3 / 1.3
    assert abs(boxes / n - expected) < 4 * np.sqrt(expected * (1 - expected) / n) + 0.01


def test_lama_512_configs_match_reference_table():
    table = {"thin-512": (4, 70, 20, 100, 0.0), "medium-512": (4, 10, 100, 200, 0.3), "thick-512": (1, 5, 250, 450, 0.3),
             "thin-256": (4, 50, 10, 40, 0.0), "medium-256": (4, 5, 50, 100, 0.3), "thick-256": (1, 5, 100, 200, 0.3)}
    for name, (lo, hi, width, length, box) in table.items():
        c = LAMA_CONFIGS[name]
        assert (c.min_strokes, c.max_strokes, c.max_width, c.max_len, c.box_prob, c.max_angle) == (lo, hi, width, length, box, 4)


@pytest.mark.parametrize(("preset", "counts"), [("comod-512", (10, 5, 20)), ("mat-256", (4, 2, 8)),
                                                ("mat-512-small", (3, 2, 4))])
def test_comod_hole_ratio_distribution_matches_independent_simulation(preset, counts):
    simulated = sample_ratios(lambda rs: comod_mask(rs, 128, counts), 300, 0.0, 1.0)
    ours = library_ratios(preset, 128, 300)
    assert abs(ours.mean() - simulated.mean()) < 0.03
    assert stats.ks_2samp(ours, simulated).pvalue > 0.01


def test_comod_simulation_distinguishes_mat_counts_from_comod_counts():
    ours = library_ratios("comod-512", 128, 300)
    mat = sample_ratios(lambda rs: comod_mask(rs, 128, (5, 3, 9)), 300, 0.0, 1.0)
    assert stats.ks_2samp(ours, mat).pvalue < 1e-6


def test_comod_boxes_overhang_and_sizes():
    # randint(max_side) sides and starts in [-w//2, s - w + w//2): clipped boxes touch the border often.
    touching, sizes = 0, []
    for i in range(400):
        mask = np.zeros((100, 100), bool)
        rng = np.random.default_rng(i)
        comod_boxes(rng, mask, 2, 50)  # exactly 0 or 1 box of side < 50
        if mask.any():
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            assert mask.sum() == rows.size * cols.size and rows.size < 50 and cols.size < 50
            touching += rows[0] == 0 or cols[0] == 0 or rows[-1] == 99 or cols[-1] == 99
            sizes.append(max(rows.size, cols.size))
    assert touching > 0.1 * len(sizes) and max(sizes) >= 45


def test_brush_stroke_widths_and_count():
    # One stroke at most (randint(2)); the widest inscribed disc is at least the stroke radius (6..24 px),
    # so 2 * distance-transform max spans roughly the 12..48 width range over many strokes.
    radii = []
    for i in range(200):
        mask = brush_strokes(np.random.default_rng(i), 512, 2)
        if mask.any():
            assert ndimage.label(mask)[1] == 1
            radii.append(cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5).max())
    assert 60 < len(radii) < 140
    assert min(radii) >= 5 and max(radii) >= 22
    assert not any(brush_strokes(np.random.default_rng(i), 64, 1).any() for i in range(20))  # randint(1) == 0


def test_comod_hole_range_sets_counts_and_rejection():
    small = make_generator("comod-512", 128, ratio_range=(0.0, 0.3))  # coef 0.3 → (3, 1, 6) tries
    assert small.sampler.inner.max_counts == (3, 1, 6)
    ratios = [small.sample(np.random.default_rng(i))[0].mean() for i in range(50)]
    assert all(0 < r < 0.3 for r in ratios)
