"""Tests for vislab.augment: the spec, each batched op, both backends' distributions, and reproducibility."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from vislab.augment import (
    BACKENDS,
    AlbumentationsDataset,
    AugmentSpec,
    TensorAugment,
    albumentations_loader,
    batch_crop,
    batch_cutout,
    batch_flip,
    batch_rotate,
    build_albumentations,
    check_backend,
    normalize,
)
from vislab.errors import ConfigError, DataError

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no PyPI version check when tests import albumentations

ZERO, ONE = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # normalize to x / 255, so pixels can be read back
MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
N_DIST = 400  # images per backend in the distribution tests
P_MIN = 1e-3  # chi-square / KS p-value below which two samples count as differently distributed


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def id_images(n: int, h: int = 16, w: int = 16) -> torch.Tensor:
    """Channel 0 = row + 1, channel 1 = column + 1, channel 2 = 20 + index % 200: 0 only in padding or holes."""
    rows = torch.arange(1, h + 1, dtype=torch.uint8).view(1, h, 1).expand(n, h, w)
    cols = torch.arange(1, w + 1, dtype=torch.uint8).view(1, 1, w).expand(n, h, w)
    index = (torch.arange(n) % 200 + 20).to(torch.uint8).view(n, 1, 1).expand(n, h, w)
    return torch.stack([rows, cols, index], dim=1).contiguous()  # (N, 3, H, W)


def ramp_images(n: int, h: int = 16, w: int = 16) -> torch.Tensor:
    """Channel 0 = 8 * row + 4, channel 1 = 8 * column + 4: linear, so a rotation's angle can be fitted."""
    rows = (torch.arange(h) * 8 + 4).to(torch.uint8).view(1, h, 1).expand(n, h, w)
    cols = (torch.arange(w) * 8 + 4).to(torch.uint8).view(1, 1, w).expand(n, h, w)
    return torch.stack([rows, cols, torch.full_like(rows, 128)], dim=1).contiguous()


def tensor_pixels(spec: AugmentSpec, x: torch.Tensor, seed: int) -> np.ndarray:
    out = TensorAugment(spec, ZERO, ONE)(x, gen(seed))
    return (out * 255).numpy()


def albu_pixels(spec: AugmentSpec, x: torch.Tensor, seed: int) -> np.ndarray:
    loader = albumentations_loader(
        x,
        torch.zeros(len(x), dtype=torch.long),
        spec,
        ZERO,
        ONE,
        batch_size=len(x),
        shuffle=False,
        num_workers=0,
        seed=seed,
    )
    images, _ = next(iter(loader))
    return (images * 255).numpy()


BOTH = {"tensor": tensor_pixels, "albumentations": albu_pixels}


def fitted_angles(pixels: np.ndarray) -> np.ndarray:
    """Rotation angle (degrees, counter-clockwise positive) fitted to the interior of rotated ramp images."""
    h, w = pixels.shape[2:]
    ys, xs = np.mgrid[4 : h - 4, 4 : w - 4]
    design = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)], axis=1)
    angles = []
    for img in pixels:
        # ramp_x(out) = 8 * (cos * x - sin * y) + c: the fitted slopes give cos and sin.
        (a, b, _), *_ = np.linalg.lstsq(design, img[1, 4 : h - 4, 4 : w - 4].ravel(), rcond=None)
        angles.append(math.degrees(math.atan2(-b, a)))
    return np.array(angles)


def hole_boxes(pixels: np.ndarray) -> list[tuple[int, int, int, int] | None]:
    """(y0, x0, height, width) of the zero-filled hole in each id image, None if it has none; asserts it is a box."""
    boxes = []
    for img in pixels:
        mask = np.abs(img[2]) < 0.5
        if not mask.any():
            boxes.append(None)
            continue
        ys, xs = np.nonzero(mask)
        y0, x0, hh, ww = ys.min(), xs.min(), ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        assert mask.sum() == hh * ww, "the hole is not one filled rectangle"
        assert np.allclose(img[:, mask], 0.0), "every channel of the hole holds the fill"
        boxes.append((int(y0), int(x0), int(hh), int(ww)))
    return boxes


def same_distribution(a: np.ndarray, b: np.ndarray, support: range) -> float:
    """Chi-square p-value that two samples of integers come from one distribution over `support`."""
    table = np.array([[np.sum(a == v) for v in support], [np.sum(b == v) for v in support]])
    return stats.chi2_contingency(table).pvalue


# --- the spec ---------------------------------------------------------------------------------------------


def test_spec_identity_and_normalisation():
    assert AugmentSpec().is_identity()
    assert AugmentSpec(cutout_size=(8, 8), cutout_p=0.0).is_identity()
    assert not AugmentSpec(flip_p=0.5).is_identity()
    assert not AugmentSpec(crop_pad=4).is_identity()
    assert not AugmentSpec(rotate_deg=1).is_identity()
    assert not AugmentSpec(cutout_size=(8, 8)).is_identity()
    # YAML hands over lists and ints; the spec stores tuples and floats so equal specs compare equal.
    spec = AugmentSpec(cutout_size=[8, 4], flip_p=1, cutout_fill=0)
    assert spec.cutout_size == (8, 4) and isinstance(spec.flip_p, float) and spec.cutout_fill == 0.0
    assert spec == AugmentSpec(cutout_size=(8, 4), flip_p=1.0, cutout_fill=0.0)
    assert BACKENDS == ("tensor", "albumentations")
    assert check_backend("tensor") == "tensor"
    with pytest.raises(ConfigError, match="augment.backend.*tensor, albumentations"):
        check_backend("kornia")


@pytest.mark.parametrize(
    "field, value",
    [
        ("crop_pad", -1),
        ("crop_pad", 2.5),
        ("crop_pad", True),
        ("pad_mode", "wrap"),
        ("flip_p", 1.5),
        ("flip_p", -0.1),
        ("flip_p", "0.5"),
        ("rotate_deg", -1.0),
        ("rotate_deg", 181.0),
        ("rotate_deg", float("nan")),
        ("cutout_size", (0, 4)),
        ("cutout_size", (4,)),
        ("cutout_size", (-2, -2)),
        ("cutout_size", "16"),
        ("cutout_p", 2.0),
        ("cutout_fill", "median"),
        ("cutout_fill", 300),
        ("cutout_fill", -1),
    ],
)
def test_bad_spec_values_raise_config_error_naming_the_field(field, value):
    with pytest.raises(ConfigError) as err:
        AugmentSpec(**{field: value})
    message = str(err.value)
    assert f"augment.{field}" in message and repr(value) in message


def test_bad_inputs_raise_readable_errors():
    x = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ConfigError, match="augment.crop_pad = 8 .* 8x8 .*reflect"):
        TensorAugment(AugmentSpec(crop_pad=8), MEAN, STD)(x, gen(0))
    TensorAugment(AugmentSpec(crop_pad=8, pad_mode="constant"), MEAN, STD)(x, gen(0))  # zeros need no reflection
    with pytest.raises(DataError, match="uint8"):
        TensorAugment(AugmentSpec(), MEAN, STD)(x.float(), gen(0))
    with pytest.raises(ConfigError, match="one per channel"):
        TensorAugment(AugmentSpec(), (0.5, 0.5), STD)
    with pytest.raises(ConfigError, match="std"):
        normalize(x, MEAN, (0.2, 0.0, 0.2))
    with pytest.raises(ConfigError, match="fill = 'mean'"):
        batch_cutout(x, (2, 2), "mean", 1.0, gen(0))
    with pytest.raises(ConfigError, match="augment.workers"):
        albumentations_loader(x, torch.zeros(2), AugmentSpec(), MEAN, STD, batch_size=2, shuffle=False, num_workers=-1)


# --- identity and normalize ---------------------------------------------------------------------------------


def test_identity_spec_only_normalizes_in_both_backends():
    x = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8, generator=gen(0))
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    expected = (x.float() / 255 - mean) / std
    aug = TensorAugment(AugmentSpec(), MEAN, STD)
    torch.testing.assert_close(aug(x, gen(1)), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(aug.normalize_only(x), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(normalize(x, MEAN, STD), expected, atol=1e-5, rtol=0)
    for train in (True, False):
        loader = albumentations_loader(
            x, torch.arange(6), AugmentSpec(), MEAN, STD, batch_size=6, shuffle=False, train=train, num_workers=0
        )
        images, labels = next(iter(loader))
        torch.testing.assert_close(images, expected, atol=1e-5, rtol=0)
        assert labels.tolist() == list(range(6))


def test_eval_paths_do_not_augment():
    spec = AugmentSpec(crop_pad=4, flip_p=1.0, rotate_deg=30, cutout_size=(8, 8))
    x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=gen(0))
    expected = normalize(x, MEAN, STD)
    torch.testing.assert_close(TensorAugment(spec, MEAN, STD).normalize_only(x), expected)
    loader = albumentations_loader(
        x, torch.arange(4), spec, MEAN, STD, batch_size=4, shuffle=False, train=False, num_workers=0
    )
    torch.testing.assert_close(next(iter(loader))[0], expected, atol=1e-5, rtol=0)


def test_normalize_dtype_and_memory_format():
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8, generator=gen(0))
    out = normalize(x, MEAN, STD, dtype=torch.bfloat16, channels_last=True)
    assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out.float(), normalize(x, MEAN, STD), atol=0.02, rtol=0.01)
    spec = AugmentSpec(crop_pad=2, flip_p=0.5, rotate_deg=5)
    aug = TensorAugment(spec, MEAN, STD, channels_last=True, dtype=torch.float16)
    out = aug(x, gen(0))
    assert out.dtype == torch.float16 and out.is_contiguous(memory_format=torch.channels_last)
    xf = x.float()
    normalize(xf, MEAN, STD)
    assert torch.equal(xf, x.float())  # float input is not normalized in place


# --- each tensor op on its own ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["reflect", "constant"])
def test_crop_is_the_padded_window_at_the_drawn_offset(mode):
    pad = 3
    x = torch.randint(0, 256, (120, 3, 10, 12), dtype=torch.uint8, generator=gen(0))
    out, offsets = batch_crop(x, pad, mode, gen(1), return_params=True)
    padded = F.pad(x, (pad, pad, pad, pad), mode=mode)  # torch "reflect" is cv2 BORDER_REFLECT_101
    assert out.shape == x.shape and out.dtype == torch.uint8
    for i, (dy, dx) in enumerate(offsets.tolist()):
        assert torch.equal(out[i], padded[i, :, dy : dy + 10, dx : dx + 12])
    assert set(offsets[:, 0].tolist()) == set(range(2 * pad + 1)) == set(offsets[:, 1].tolist())
    assert torch.equal(batch_crop(x, 0, mode, gen(1)), x)


def test_flip_is_torch_flip_on_the_drawn_images():
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=gen(0))
    out, flipped = batch_flip(x, 0.5, gen(1), return_params=True)
    assert 0 < flipped.sum() < 64
    assert torch.equal(out[flipped], x[flipped].flip(3))
    assert torch.equal(out[~flipped], x[~flipped])
    assert torch.equal(batch_flip(x, 1.0, gen(1)), x.flip(3))
    assert torch.equal(batch_flip(x, 0.0, gen(1)), x)


def test_rotate_zero_is_identity_and_angles_stay_within_the_limit():
    x = ramp_images(200)
    assert torch.equal(batch_rotate(x, 0.0, gen(0)), x)
    out, angles = batch_rotate(x.float(), 10.0, gen(0), return_params=True)
    assert angles.abs().max() <= 10.0 and angles.min() < -9.0 and angles.max() > 9.0
    # The angle read back from the rotated ramps is the one reported: the params are the ones applied.
    np.testing.assert_allclose(fitted_angles(out.numpy()), angles.numpy(), atol=0.3)
    u8 = batch_rotate(x, 10.0, gen(0))
    assert u8.dtype == torch.uint8 and (u8.float() - out.round()).abs().max() <= 1


@pytest.mark.parametrize("size", [(16, 16), (12, 20)])
def test_rotate_matches_albumentations_at_the_same_angle(size):
    import albumentations as A
    import cv2

    h, w = size
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    smooth = torch.stack([xs * 200 / w, ys * 200 / h, 100 + 80 * torch.sin(xs / 3.0) * torch.cos(ys / 4.0)])
    x = smooth.round().to(torch.uint8).expand(6, 3, h, w).contiguous()
    out, angles = batch_rotate(x, 40.0, gen(3), return_params=True)
    for img, angle in zip(out, angles.tolist()):
        rotate = A.Rotate(
            limit=(angle, angle), interpolation=cv2.INTER_LINEAR, border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0
        )
        ref = rotate(image=x[0].permute(1, 2, 0).numpy())["image"]
        diff = (img.permute(1, 2, 0).int() - torch.from_numpy(ref).int()).abs()
        # cv2 interpolates in fixed point (1/32 pixel), so a few pixel units apart at most; a wrong direction,
        # centre or aspect handling is off by tens.
        assert diff.float().mean() < 0.5 and diff.max() <= 4, (angle, diff.max())


def test_cutout_holes_have_the_size_lie_inside_and_hold_the_fill():
    x = id_images(300, 12, 14)
    out, boxes = batch_cutout(x, (5, 7), (0, 0, 0), 0.7, gen(0), return_params=True)
    found = hole_boxes(out.float().numpy())
    applied = boxes[:, 2] > boxes[:, 0]
    assert 0.6 < applied.float().mean() < 0.8
    for (y0, x0, y1, _x1), box, img, src in zip(boxes.tolist(), found, out, x):
        if y1 == y0:
            assert box is None and torch.equal(img, src)
        else:
            assert box == (y0, x0, 5, 7) and 0 <= y0 <= 12 - 5 and 0 <= x0 <= 14 - 7
    assert {b[0] for b in found if b} == set(range(12 - 5 + 1)) and {b[1] for b in found if b} == set(range(14 - 7 + 1))
    # Per-channel fill, rounded for uint8, and a hole bigger than the image is clipped to it (as CoarseDropout does).
    filled = batch_cutout(x[:2], (40, 40), (9.6, 20, 255), 1.0, gen(0))
    assert filled[:, 0].eq(10).all() and filled[:, 1].eq(20).all() and filled[:, 2].eq(255).all()


def test_fused_pipeline_equals_the_composed_ops():
    x = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8, generator=gen(0))
    for mode, fill in (("reflect", "mean"), ("constant", 200.0)):
        spec = AugmentSpec(
            crop_pad=3, pad_mode=mode, flip_p=0.5, rotate_deg=15, cutout_size=(6, 5), cutout_p=0.5, cutout_fill=fill
        )
        fused = TensorAugment(spec, MEAN, STD)(x, gen(7))
        g = gen(7)
        y = batch_crop(x, 3, mode, g)
        y = batch_flip(y, 0.5, g)
        y = batch_rotate(y.float(), 15, g)
        pixel_fill = [m * 255 for m in MEAN] if fill == "mean" else fill
        y = batch_cutout(y, (6, 5), pixel_fill, 0.5, g)
        torch.testing.assert_close(fused, normalize(y, MEAN, STD), atol=1e-4, rtol=0)
        if fill == "mean":
            zeros = (fused == 0).all(dim=1).sum(dim=(1, 2))  # (N,) pixels that are 0 in every channel
            assert set(zeros.tolist()) == {0, 6 * 5}  # holes land on exactly 0, and nothing else does


# --- the two backends draw from the same distributions ------------------------------------------------------


@pytest.mark.parametrize("backend", BOTH)
def test_crop_offsets_are_uniform_over_all_offsets(backend):
    pixels = BOTH[backend](AugmentSpec(crop_pad=4, pad_mode="constant"), id_images(N_DIST), seed=1)
    # The centre pixel always comes from inside the 16x16 source: its ids give the offset.
    dy = np.rint(pixels[:, 0, 8, 8]).astype(int) - 1 - 8 + 4
    dx = np.rint(pixels[:, 1, 8, 8]).astype(int) - 1 - 8 + 4
    for offsets in (dy, dx):
        counts = np.bincount(offsets, minlength=9)
        assert len(counts) == 9 and counts.min() > 0  # all of 0..2 * pad, nothing outside
        assert stats.chisquare(counts).pvalue > P_MIN


def test_crop_offsets_agree_between_backends():
    x = id_images(N_DIST)
    spec = AugmentSpec(crop_pad=4, pad_mode="constant")
    t, a = tensor_pixels(spec, x, 2), albu_pixels(spec, x, 2)
    for ch in (0, 1):
        assert same_distribution(np.rint(t[:, ch, 8, 8]), np.rint(a[:, ch, 8, 8]), range(5, 14)) > P_MIN
    # Constant padding is zeros in both: output pixel (0, 0) is padding exactly when dy < pad or dx < pad.
    for pixels in (t, a):
        centre = np.rint(pixels[:, :2, 8, 8])
        assert ((np.rint(pixels[:, 0, 0, 0]) == 0) == (centre < 9).any(axis=1)).all()


def test_flip_fraction_agrees_between_backends():
    x = id_images(N_DIST)
    spec = AugmentSpec(flip_p=0.3)
    flipped = {}
    for name, run in BOTH.items():
        first_col = np.rint(run(spec, x, 3)[:, 1, :, 0])
        assert np.isin(first_col, (1, 16)).all()
        flipped[name] = first_col[:, 0] == 16
        assert abs(flipped[name].mean() - 0.3) < 4 * math.sqrt(0.3 * 0.7 / N_DIST)
    assert same_distribution(flipped["tensor"], flipped["albumentations"], range(2)) > P_MIN


def test_rotation_angles_agree_between_backends():
    x = ramp_images(N_DIST)
    spec = AugmentSpec(rotate_deg=10)
    angles = {name: fitted_angles(run(spec, x, 4)) for name, run in BOTH.items()}
    for a in angles.values():
        assert np.abs(a).max() < 10.5 and a.min() < -9 and a.max() > 9
        assert stats.kstest(a, stats.uniform(-10, 20).cdf).pvalue > P_MIN
    assert stats.ks_2samp(angles["tensor"], angles["albumentations"]).pvalue > P_MIN


def test_cutout_sizes_and_positions_agree_between_backends():
    x = id_images(N_DIST)
    spec = AugmentSpec(cutout_size=(5, 7), cutout_p=0.6)  # "mean" fill with mean 0: holes read back as 0
    boxes = {}
    for name, run in BOTH.items():
        found = hole_boxes(run(spec, x, 5))
        holes = np.array([b for b in found if b is not None])
        assert abs(len(holes) / N_DIST - 0.6) < 4 * math.sqrt(0.6 * 0.4 / N_DIST)
        assert (holes[:, 2] == 5).all() and (holes[:, 3] == 7).all()
        assert set(holes[:, 0]) == set(range(16 - 5 + 1)) and set(holes[:, 1]) == set(range(16 - 7 + 1))
        boxes[name] = holes
    assert same_distribution(boxes["tensor"][:, 0], boxes["albumentations"][:, 0], range(12)) > P_MIN
    assert same_distribution(boxes["tensor"][:, 1], boxes["albumentations"][:, 1], range(10)) > P_MIN


@pytest.mark.parametrize("backend", BOTH)
def test_flip_is_independent_of_the_crop_offset(backend):
    # albumentations 2.0.8 seeds each transform of a Compose with the same number; reseeding that way per
    # sample would flip exactly the images cropped high. Both backends must draw them independently.
    pixels = BOTH[backend](AugmentSpec(crop_pad=4, pad_mode="constant", flip_p=0.5), id_images(N_DIST), seed=6)
    dy = np.rint(pixels[:, 0, 8, 8]).astype(int) - 1 - 8 + 4
    flipped = pixels[:, 1, 8, 9] < pixels[:, 1, 8, 7]  # column ids run backwards
    table = np.array([[np.sum((dy == d) & (flipped == f)) for d in range(9)] for f in (False, True)])
    assert stats.chi2_contingency(table).pvalue > P_MIN


def test_build_albumentations_uses_the_2x_api():
    import albumentations as A

    spec = AugmentSpec(crop_pad=4, flip_p=0.5, rotate_deg=5, cutout_size=(8, 8), cutout_fill=10.0)
    compose = build_albumentations(spec, MEAN, STD, image_size=(32, 32))
    names = [type(t).__name__ for t in compose.transforms]
    assert names == [
        "PadIfNeeded",
        "RandomCrop",
        "HorizontalFlip",
        "Rotate",
        "Normalize",
        "CoarseDropout",
        "ToTensorV2",
    ]
    rotate = compose.transforms[3]
    assert rotate.p == 1.0 and tuple(rotate.limit) == (-5.0, 5.0)
    dropout = compose.transforms[5]
    assert dropout.hole_height_range == (8, 8) and dropout.num_holes_range == (1, 1)
    np.testing.assert_allclose(dropout.fill, [(10 / 255 - m) / s for m, s in zip(MEAN, STD)])
    assert isinstance(compose, A.Compose)
    with pytest.raises(TypeError, match="image_size"):
        build_albumentations(spec, MEAN, STD)


# --- reproducibility ----------------------------------------------------------------------------------------


def test_tensor_backend_is_reproducible_from_the_generator():
    spec = AugmentSpec(crop_pad=4, flip_p=0.5, rotate_deg=10, cutout_size=(8, 8), cutout_p=0.5)
    aug = TensorAugment(spec, MEAN, STD)
    x = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8, generator=gen(0))
    assert torch.equal(aug(x, gen(5)), aug(x, gen(5)))
    assert not torch.equal(aug(x, gen(5)), aug(x, gen(6)))
    g = gen(5)
    first, second = aug(x, g), aug(x, g)
    assert not torch.equal(first, second)  # the generator advances
    torch.manual_seed(3)
    a = aug(x, None)
    torch.manual_seed(3)
    assert torch.equal(a, aug(x, None))  # no generator: the global RNG


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tensor_backend_on_cuda_with_cpu_or_cuda_generator():
    spec = AugmentSpec(crop_pad=4, flip_p=0.5, rotate_deg=10, cutout_size=(8, 8), cutout_p=0.5)
    aug = TensorAugment(spec, MEAN, STD)
    x = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8, generator=gen(0))
    on_cpu = aug(x, gen(5))
    with_cpu_gen = aug(x.cuda(), gen(5))
    assert with_cpu_gen.is_cuda
    torch.testing.assert_close(with_cpu_gen.cpu(), on_cpu, atol=1e-4, rtol=0)  # same draws, same result
    cuda_gen = torch.Generator(device="cuda").manual_seed(5)
    a = aug(x.cuda(), cuda_gen)
    assert torch.equal(a, aug(x.cuda(), torch.Generator(device="cuda").manual_seed(5)))
    assert torch.equal(batch_crop(x.cuda(), 2, "reflect", gen(1)).cpu(), batch_crop(x, 2, "reflect", gen(1)))


def _epochs(loader, n: int) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    return [list(loader) for _ in range(n)]


def _assert_same(a, b) -> None:
    """Two runs (lists of epochs of batches) hold identical batches."""
    assert [len(epoch) for epoch in a] == [len(epoch) for epoch in b]
    for epoch_a, epoch_b in zip(a, b):
        for (xa, ya), (xb, yb) in zip(epoch_a, epoch_b):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_albumentations_loader_batches_labels_and_reproducibility():
    n = 24
    x = id_images(n)  # channel 2 of image i is i + 20 everywhere
    y = (torch.arange(n) * 7) % 10
    spec = AugmentSpec(crop_pad=2, flip_p=0.5, rotate_deg=5, cutout_size=(4, 4), cutout_p=0.5)
    kw = dict(batch_size=8, shuffle=True)
    loader = albumentations_loader(x, y, spec, MEAN, STD, num_workers=0, seed=11, **kw)
    run = _epochs(loader, 3)
    seen = []
    for images, labels in run[0]:
        assert images.shape == (8, 3, 16, 16) and images.dtype == torch.float32 and labels.dtype == torch.int64
        # Undo normalize: channel 2 at the centre (away from the rotation's borders) names the image unless a
        # hole covers it.
        centre = images[:, 2, 8, 8] * STD[2] + MEAN[2]
        index = torch.round(centre * 255).long() - 20
        hit = (index >= 0) & (index < n)
        assert hit.sum() >= 5 and torch.equal(labels[hit], y[index[hit]])
        seen += labels.tolist()
    assert sorted(seen) == sorted(y.tolist())  # each image once per epoch
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(run[0], run[1]))  # epochs differ

    _assert_same(run, _epochs(albumentations_loader(x, y, spec, MEAN, STD, num_workers=0, seed=11, **kw), 3))
    other = _epochs(albumentations_loader(x, y, spec, MEAN, STD, num_workers=0, seed=12, **kw), 1)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(run[0], other[0]))

    # Two persistent worker processes give the very same batches, epoch after epoch: each sample's seed comes
    # from the loader's generator, which advances the same way whether or not workers are (re)started.
    workers = albumentations_loader(x, y, spec, MEAN, STD, num_workers=2, seed=11, **kw)
    assert workers.persistent_workers
    first = _epochs(workers, 1)
    state = workers.generator.get_state()
    _assert_same(run, first + _epochs(workers, 2))

    # Exact resume: a fresh loader given the generator state saved after epoch 1 replays epochs 2 and 3.
    fresh = albumentations_loader(x, y, spec, MEAN, STD, num_workers=0, seed=999, **kw)
    fresh.generator.set_state(state)
    _assert_same(run[1:], _epochs(fresh, 2))


def test_albumentations_dataset_items():
    x = id_images(4)
    ds = AlbumentationsDataset(x, torch.tensor([3, 1, 4, 1]), build_albumentations(AugmentSpec(), ZERO, ONE))
    image, label = ds[2]
    assert len(ds) == 4 and image.shape == (3, 16, 16) and image.dtype == torch.float32
    assert label.dtype == torch.int64 and label.item() == 4
    torch.testing.assert_close(image, x[2].float() / 255)
    with pytest.raises(DataError, match="labels"):
        AlbumentationsDataset(x, torch.zeros(3), build_albumentations(AugmentSpec(), ZERO, ONE))
