"""Each metric against an independent route: skimage, scipy, sklearn, or a hand computation."""
import cv2
import numpy as np
import pytest
import scipy.linalg
from scipy.ndimage import uniform_filter
from skimage.metrics import peak_signal_noise_ratio
from sklearn.decomposition import PCA
from sklearn.svm import LinearSVC

from evaluate.functional import (
    composite,
    fid,
    frechet_distance,
    grad_error,
    inception_discriminative_scores,
    mask_ratio,
    psnr,
    ssim,
)
from misato.errors import MisatoError
from tests.helpers import box_mask, smooth_image


@pytest.fixture
def pair():
    rng = np.random.default_rng(3)
    gt = smooth_image(rng, 40)
    pred = np.clip(gt.astype(int) + rng.integers(-30, 31, gt.shape), 0, 255).astype(np.uint8)
    mask = box_mask(rng, 40)
    return pred, gt, mask


def test_composite_takes_prediction_only_in_the_hole(pair):
    pred, gt, mask = pair
    out = composite(pred, gt, mask.astype(np.uint8) * 255)
    np.testing.assert_array_equal(out[mask], pred[mask])
    np.testing.assert_array_equal(out[~mask], gt[~mask])


def test_psnr_hand_values():
    gt = np.zeros((4, 4, 3), np.uint8)
    assert psnr(gt, gt) == pytest.approx(70.0)  # -10 log10(1e-7)
    pred = np.full((4, 4, 3), 51, np.uint8)  # every value off by 0.2
    assert psnr(pred, gt) == pytest.approx(-10 * np.log10(0.04 + 1e-7), abs=1e-12)


def test_psnr_matches_skimage(pair):
    pred, gt, _ = pair
    reference = peak_signal_noise_ratio(gt / 255.0, pred / 255.0, data_range=1.0)
    assert psnr(pred, gt) == pytest.approx(reference, abs=1e-4)  # differs only by the 1e-7 guard


def _ssim_by_hand(x, y):
    """Wang et al. SSIM with a 7x7 box window, sample covariance, border cropped (skimage defaults)."""
    window, c1, c2 = 7, (0.01 * 1.0) ** 2, (0.03 * 1.0) ** 2
    norm = window * window / (window * window - 1)
    mx, my = uniform_filter(x, window), uniform_filter(y, window)
    vx = norm * (uniform_filter(x * x, window) - mx * mx)
    vy = norm * (uniform_filter(y * y, window) - my * my)
    cxy = norm * (uniform_filter(x * y, window) - mx * my)
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    pad = (window - 1) // 2
    return s[pad:-pad, pad:-pad].mean()


def test_ssim_is_grayscale_skimage_ssim(pair):
    pred, gt, _ = pair
    weights = np.array([0.2989, 0.587, 0.114])
    gray = lambda im: (im / 255.0) @ weights  # noqa: E731
    assert ssim(pred, gt) == pytest.approx(_ssim_by_hand(gray(pred), gray(gt)), abs=1e-10)
    assert ssim(gt, gt) == pytest.approx(1.0)


def _grad_by_hand(pred, gt, mask_u8):
    """Gradients of composite and ground truth taken separately (no linearity shortcut)."""
    m = mask_u8[..., None] / 255.0
    comp = pred * m + gt * (1 - m)
    edges = cv2.Canny(mask_u8, 100, 200) > 0
    values = []
    for c in range(3):
        gx = cv2.Sobel(comp[..., c], cv2.CV_64F, 1, 0, ksize=3) - cv2.Sobel(gt[..., c].astype(float), cv2.CV_64F, 1, 0, ksize=3)
        gy = cv2.Sobel(comp[..., c], cv2.CV_64F, 0, 1, ksize=3) - cv2.Sobel(gt[..., c].astype(float), cv2.CV_64F, 0, 1, ksize=3)
        values.append(np.sqrt(gx**2 + gy**2)[edges].mean())
    return np.mean(values)


def test_grad_matches_two_gradient_route(pair):
    pred, gt, mask = pair
    mask_u8 = mask.astype(np.uint8) * 255
    assert grad_error(pred, gt, mask_u8) == pytest.approx(_grad_by_hand(pred, gt, mask_u8), rel=1e-12)
    soft = cv2.GaussianBlur(mask_u8, (5, 5), 0)
    assert grad_error(pred, gt, soft) == pytest.approx(_grad_by_hand(pred, gt, soft), rel=1e-12)


def _grad_whole_image(pred, gt, mask_u8):
    """The Grad route filtering the whole image (what grad_error's bounding box must reproduce bit for bit)."""
    edges = cv2.Canny(mask_u8, 100, 200) > 0
    difference = (pred.astype(np.float64) - gt.astype(np.float64)) * (mask_u8.astype(np.float64)[..., None] / 255.0)
    values = []
    for c in range(3):
        dx = cv2.Sobel(difference[..., c], cv2.CV_64F, 1, 0, ksize=3)
        dy = cv2.Sobel(difference[..., c], cv2.CV_64F, 0, 1, ksize=3)
        values.append(float(np.hypot(dx, dy)[edges].mean()))
    return float(np.mean(values))


def test_grad_on_the_boundary_box_equals_the_whole_image_bit_for_bit():
    rng = np.random.default_rng(11)
    masks = []
    for height, width in ((37, 53), (64, 64), (129, 97)):
        touching = np.zeros((height, width), np.uint8)
        touching[: height // 2, width // 3 :] = 255  # a box against the top and right edges
        corner = np.zeros((height, width), np.uint8)
        corner[-5:, :4] = 255
        speckle = (rng.random((height, width)) < 0.3).astype(np.uint8) * 255  # boundary everywhere
        masks += [touching, corner, speckle, cv2.GaussianBlur(touching, (7, 7), 0),
                  box_mask(rng, min(height, width)).astype(np.uint8) * 255]
    for mask in masks:
        gt = smooth_image(rng, max(mask.shape))[: mask.shape[0], : mask.shape[1]]
        pred = rng.integers(0, 256, gt.shape, dtype=np.uint8)
        assert grad_error(pred, gt, mask) == _grad_whole_image(pred, gt, mask) > 0


def test_grad_zero_cases(pair):
    pred, gt, mask = pair
    assert grad_error(gt, gt, mask.astype(np.uint8) * 255) == 0.0
    assert grad_error(pred, gt, np.zeros(mask.shape, np.uint8)) == 0.0  # no boundary


def test_mask_ratio():
    mask = np.zeros((10, 10), np.uint8)
    mask[:3] = 255
    assert mask_ratio(mask) == pytest.approx(0.3)


def test_frechet_distance_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 64))
    b = rng.normal(size=(300, 64)) @ rng.normal(scale=0.3, size=(64, 64)) + 0.5
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    reference = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference, rel=1e-8)
    assert fid(a, b) == pytest.approx(reference, rel=1e-8)


def test_fid_low_rank_route_matches_scipy_sqrtm():
    """Fewer images than dimensions: the N x M singular-value route against sqrtm of the D x D product."""
    rng = np.random.default_rng(4)
    a = rng.normal(size=(20, 64))
    b = rng.normal(size=(30, 64)) * 1.5 + 0.2
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    reference = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)
    assert fid(a, b) == pytest.approx(reference, rel=1e-7)
    with pytest.raises(MisatoError, match="equal width"):
        fid(a, b[:, :32])


def test_fid_of_identical_sets_is_zero_and_needs_two_images():
    a = np.random.default_rng(1).normal(size=(50, 8))
    assert fid(a, a) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(MisatoError, match="at least 2"):
        fid(a[:1], a[:1])


def test_ids_matches_sklearn_directly():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(200, 32))
    fake = real + rng.normal(scale=0.8, size=real.shape) + 0.05
    with pytest.warns(UserWarning, match="optimistic"):
        u_ids, p_ids = inception_discriminative_scores(real, fake, pca_dim=16)
    x = PCA(16, svd_solver="full").fit_transform(np.vstack([real, fake]))
    y = np.r_[np.ones(200), np.zeros(200)]
    svm = LinearSVC(dual=False).fit(x, y)
    d = svm.decision_function(x)
    assert u_ids == pytest.approx(1 - svm.score(x, y))
    assert p_ids == pytest.approx(np.mean(d[200:] > d[:200]))


def test_ids_hand_cases():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(60, 4))
    with pytest.warns(UserWarning):
        far = inception_discriminative_scores(real, real + 100.0)
    assert far == (0.0, 0.0)  # perfectly separable: the fakes never fool the SVM
    with pytest.warns(UserWarning):
        same = inception_discriminative_scores(real, real.copy())
    assert same[1] == 0.0  # equal decisions never count as fooled
    assert same[0] == pytest.approx(0.5, abs=0.1)  # indistinguishable: about chance


def test_ids_pca_too_large_for_n():
    real = np.zeros((10, 64))
    with pytest.raises(MisatoError, match="--ids-pca"):
        inception_discriminative_scores(real, real, pca_dim=20)


def test_batched_wrappers_equal_the_per_image_metrics_for_every_input_form():
    """psnr_batch / ssim_batch / grad_batch / mask_ratio_batch / composite_batch on NCHW tensors: uint8 images
    equal the per-image float64 code on the same arrays; float images in [0, 1] are the same numbers after
    round(x·255); bool, uint8 (255 = hole) and float masks agree; a wrong shape is a MisatoError."""
    import torch

    from evaluate.functional import composite_batch, grad_batch, mask_ratio_batch, psnr_batch, ssim_batch

    rng = np.random.default_rng(8)
    gts = [smooth_image(rng, 32) for _ in range(3)]
    preds = [np.clip(g.astype(int) + rng.integers(-40, 41, g.shape), 0, 255).astype(np.uint8) for g in gts]
    holes = [box_mask(rng, 32) for _ in range(3)]
    merged = [composite(p, g, m.astype(np.uint8) * 255) for p, g, m in zip(preds, gts, holes)]
    expected = {
        "psnr": [psnr(c, g) for c, g in zip(merged, gts)],
        "ssim": [ssim(c, g) for c, g in zip(merged, gts)],
        "grad": [grad_error(p, g, m.astype(np.uint8) * 255) for p, g, m in zip(preds, gts, holes)],
    }
    nchw = lambda images: torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)  # noqa: E731
    hole_bool = torch.from_numpy(np.stack(holes))[:, None]
    forms = [(nchw(preds), nchw(gts), hole_bool),
             (nchw(preds).float() / 255, nchw(gts).float() / 255, hole_bool.to(torch.uint8) * 255),
             (nchw(preds), nchw(gts), hole_bool.float())]
    for pred, gt, mask in forms:
        np.testing.assert_array_equal(psnr_batch(pred, gt, mask), expected["psnr"])
        np.testing.assert_array_equal(ssim_batch(pred, gt, mask), expected["ssim"])
        np.testing.assert_array_equal(grad_batch(pred, gt, mask), expected["grad"])
        np.testing.assert_array_equal(mask_ratio_batch(mask), [mask_ratio(m) for m in holes])
        assert torch.equal(composite_batch(pred, gt, mask), nchw(merged))
    np.testing.assert_array_equal(psnr_batch(nchw(preds), nchw(gts)), [psnr(p, g) for p, g in zip(preds, gts)])
    with pytest.raises(MisatoError, match=r"pred: expected an \[N, 3, H, W\] tensor"):
        psnr_batch(nchw(preds)[:, :2], nchw(gts), hole_bool)
    with pytest.raises(MisatoError, match="must agree in N, H and W"):
        psnr_batch(nchw(preds), nchw(gts), hole_bool[:2])
