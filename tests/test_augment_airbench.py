"""Tests for issue 14's augmentations: alternating flip, airbench's translate, TrivialAugment, MixUp and CutMix."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from vislab.augment import (
    TRIVIAL_OPS,
    AugmentSpec,
    TensorAugment,
    albumentations_loader,
    alternate_flips,
    apply_trivial,
    batch_alternate_flip,
    batch_crop,
    batch_flip,
    build_albumentations,
    cutmix,
    mixup,
    normalize,
    sample_beta,
    trivial_augment,
)
from vislab.augment._trivial import NUM_BINS, SIGNED, draw_trivial, magnitude_table
from vislab.config import load_config
from vislab.engine import DeviceLoader
from vislab.errors import ConfigError, DataError

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
pytestmark = pytest.mark.usefixtures("one_thread")

ZERO, ONE = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # normalize to x / 255, so pixels can be read back
MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
P_MIN = 1e-3  # chi-square / KS p-value below which a sample counts as not from the stated distribution


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def id_images(n: int, h: int = 16, w: int = 16) -> torch.Tensor:
    """Channel 0 = row + 1, channel 1 = column + 1, channel 2 = 20 + index % 200."""
    rows = torch.arange(1, h + 1, dtype=torch.uint8).view(1, h, 1).expand(n, h, w)
    cols = torch.arange(1, w + 1, dtype=torch.uint8).view(1, 1, w).expand(n, h, w)
    index = (torch.arange(n) % 200 + 20).to(torch.uint8).view(n, 1, 1).expand(n, h, w)
    return torch.stack([rows, cols, index], dim=1).contiguous()


def within(count: float, n: int, p: float) -> bool:
    """A binomial count within 4 standard deviations of n * p."""
    return abs(count - n * p) <= 4 * math.sqrt(n * p * (1 - p))


# --- alternating flip ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.5, 0.3])
def test_alternate_flips_start_at_flip_p_and_invert_every_epoch(p):
    n = 4000
    index = torch.arange(n)
    epochs = [alternate_flips(index, e, p, seed=3) for e in range(4)]
    assert within(epochs[0].sum().item(), n, p)
    for before, after in zip(epochs, epochs[1:]):
        assert torch.equal(after, ~before)  # every image is seen both ways in any two consecutive epochs
    assert torch.equal(epochs[2], epochs[0])
    # A hash of the index, not a pattern in it: independent of the index's parity and of which half it is in.
    for group in (index % 2, index < n // 2):
        table = np.array([[((group == g) & (epochs[0] == f)).sum().item() for f in (False, True)] for g in (0, 1)])
        assert stats.chi2_contingency(table).pvalue > P_MIN
    other_seed = alternate_flips(index, 0, p, seed=4)
    assert within((other_seed == epochs[0]).sum().item(), n, p * p + (1 - p) * (1 - p))  # seeds draw independently
    # Pure: any order, any subset, any device of the indices gives each image its own decision.
    perm = torch.randperm(n, generator=gen(0))[:100]
    assert torch.equal(alternate_flips(perm, 1, p, seed=3), epochs[1][perm])
    with pytest.raises(ValueError, match="epoch"):
        alternate_flips(index, -1)


def test_batch_alternate_flip_flips_the_named_images():
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=gen(0))
    index = torch.randperm(1000, generator=gen(1))[:64]
    out, flipped = batch_alternate_flip(x, index, 5, return_params=True)
    assert torch.equal(flipped, alternate_flips(index, 5))
    assert 0 < flipped.sum() < 64
    assert torch.equal(out[flipped], x[flipped].flip(3)) and torch.equal(out[~flipped], x[~flipped])
    with pytest.raises(DataError, match="index"):
        batch_alternate_flip(x, index[:10], 0)


def _flips_by_image(batches, n: int) -> torch.Tensor:
    """(n,) bool from one epoch of id-image batches (normalized with mean 0, std 1): was image i mirrored."""
    flipped = torch.full((n,), -1)
    for images, labels in batches:
        cols = torch.round(images[:, 1, 8, :] * 255)  # column ids of the middle row
        flipped[labels] = (cols[:, 0] > cols[:, -1]).long()
    assert (flipped >= 0).all()  # every image once
    return flipped.bool()


def test_device_loader_gives_alternate_flip_the_index_and_epoch():
    n = 48
    x, y = id_images(n), torch.arange(n)
    spec = AugmentSpec(crop_pad=2, flip_p=0.5, flip="alternate")
    aug = TensorAugment(spec, ZERO, ONE, seed=9)
    assert aug.needs_index and not TensorAugment(AugmentSpec(flip_p=0.5), ZERO, ONE).needs_index
    loader = DeviceLoader(x, y, 8, aug, shuffle=True, generator=gen(1))
    epochs = [_flips_by_image(list(loader), n) for _ in range(3)]
    assert torch.equal(epochs[0], alternate_flips(torch.arange(n), 0, 0.5, seed=9))
    assert torch.equal(epochs[1], ~epochs[0]) and torch.equal(epochs[2], epochs[0])
    assert loader.epoch == 3
    # A resumed run sets the epoch: a fresh loader at epoch 1 flips as the first loader's epoch 1 did.
    fresh = DeviceLoader(x, y, 8, aug, shuffle=True, generator=gen(2), epoch=1)
    assert torch.equal(_flips_by_image(list(fresh), n), epochs[1])
    fresh.set_epoch(0)
    assert torch.equal(_flips_by_image(list(fresh), n), epochs[0])
    # Alternating flips draw nothing, so the crops stay where a random-flip run with the same generator puts them.
    random_flip = TensorAugment(AugmentSpec(crop_pad=2, flip_p=1.0), ZERO, ONE)
    a = aug(x, gen(3), index=y, epoch=0)
    b = random_flip(x, gen(3))
    torch.testing.assert_close(a[:, 0], b[:, 0])  # rows: crop only
    # Without index and epoch (a preview) the flips are drawn like random ones; one without the other is a mistake.
    assert within(_flips_by_image([(aug(id_images(400), gen(4)), torch.arange(400))], 400).sum().item(), 400, 0.5)
    with pytest.raises(ValueError, match="together"):
        aug(x, gen(0), index=y)


def test_alternate_flip_shards_carry_the_one_process_flips():
    spec = AugmentSpec(crop_pad=2, flip_p=0.5, flip="alternate", rotate_deg=10.0, trivial_augment=True)
    x, y = torch.randint(0, 256, (40, 3, 12, 12), dtype=torch.uint8, generator=gen(0)), torch.arange(40)
    aug = TensorAugment(spec, (0.5,) * 3, (0.25,) * 3)

    def epochs(rank: int, world: int) -> list:
        loader = DeviceLoader(x, y, 8, aug, shuffle=True, drop_last=True, generator=gen(7), rank=rank, world_size=world)
        return [list(loader) for _ in range(2)]

    one, r0, r1 = epochs(0, 1), epochs(0, 2), epochs(1, 2)
    for e in range(2):
        for (xo, yo), (x0, y0), (x1, y1) in zip(one[e], r0[e], r1[e]):
            assert torch.equal(torch.stack([y0, y1], 1).flatten(), yo)
            assert torch.equal(torch.stack([x0, x1], 1).flatten(0, 1), xo)


def test_flip_mode_is_validated_and_refused_by_albumentations():
    with pytest.raises(ConfigError, match=r"augment\.flip = 'mirror'.*'random'.*'alternate'"):
        AugmentSpec(flip="mirror")
    with pytest.raises(ConfigError, match=r"augment\.flip = 'alternate' with augment\.flip_p = 0\.0"):
        AugmentSpec(flip="alternate")
    with pytest.raises(ConfigError, match="augment.trivial_augment"):
        AugmentSpec(trivial_augment=1)
    assert not AugmentSpec(trivial_augment=True).is_identity()
    x = id_images(4)
    for spec, field in (
        (AugmentSpec(flip_p=0.5, flip="alternate"), "augment.flip"),
        (AugmentSpec(trivial_augment=True), "augment.trivial_augment"),
    ):
        with pytest.raises(ConfigError, match=f"{field}.*backend=tensor"):
            build_albumentations(spec, MEAN, STD)
        with pytest.raises(ConfigError, match=field):
            albumentations_loader(x, torch.arange(4), spec, MEAN, STD, batch_size=2, shuffle=True, num_workers=0)
        build_albumentations(spec, MEAN, STD, train=False)  # evaluation only normalizes: nothing to refuse


@pytest.mark.parametrize(
    "overrides, needles",
    [
        (["augment.flip=mirror"], ["augment.flip", "mirror", "alternate"]),
        (["augment.flip=alternate", "augment.flip_p=0"], ["augment.flip = alternate", "flip_p"]),
        (["augment.flip=alternate", "augment.backend=albumentations"], ["augment.flip = alternate", "backend=tensor"]),
        (["augment.trivial_augment=true", "augment.backend=albumentations"], ["augment.trivial_augment", "tensor"]),
        (["augment.mixup_alpha=-1"], ["augment.mixup_alpha", "-1"]),
        (["augment.cutmix_alpha=inf"], ["augment.cutmix_alpha", "inf"]),
        (["augment.mix_off_epochs=-2"], ["augment.mix_off_epochs", "-2"]),
    ],
)
def test_config_refuses_bad_values_in_one_paragraph(overrides, needles):
    with pytest.raises(ConfigError) as e:
        load_config("quick", overrides)
    msg = str(e.value)
    assert all(needle in msg for needle in needles), msg
    assert "\n" not in msg


def test_config_reaches_the_spec():
    from vislab.build import augment_spec

    _, cfg = load_config("quick", ["augment.flip=alternate", "augment.trivial_augment=true", "augment.mixup_alpha=0.2"])
    spec = augment_spec(cfg)
    assert spec.flip == "alternate" and spec.trivial_augment
    assert (cfg.augment.mixup_alpha, cfg.augment.cutmix_alpha, cfg.augment.mix_off_epochs) == (0.2, 0.0, 0)
    _, default = load_config("quick", [])
    assert augment_spec(default).flip == "random" and not augment_spec(default).trivial_augment


# --- translate: airbench's is pad-reflect + crop -------------------------------------------------------------


def test_airbench_translate_is_reflect_pad_2_and_crop():
    # airbench94: F.pad(images, (2,) * 4, "reflect"), then a 32x32 window at shifts uniform in -2..2 per axis.
    x = torch.randint(0, 256, (900, 3, 32, 32), dtype=torch.uint8, generator=gen(0))
    out, offsets = batch_crop(x, 2, "reflect", gen(1), return_params=True)
    padded = F.pad(x, (2, 2, 2, 2), mode="reflect")
    for i in range(0, 900, 97):
        dy, dx = offsets[i].tolist()
        assert torch.equal(out[i], padded[i, :, dy : dy + 32, dx : dx + 32])
    for axis in (0, 1):
        counts = torch.bincount(offsets[:, axis], minlength=5).numpy()
        assert len(counts) == 5 and stats.chisquare(counts).pvalue > P_MIN
    table = np.histogram2d(offsets[:, 0].numpy(), offsets[:, 1].numpy(), bins=5)[0]
    assert stats.chi2_contingency(table).pvalue > P_MIN  # the two shifts are independent


# --- TrivialAugment ------------------------------------------------------------------------------------------


def smooth_images(n: int, h: int = 16, w: int = 16) -> torch.Tensor:
    """Random images plus one smooth one (gradients and waves), uint8 (n + 1, 3, H, W)."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    wave = 120 + 60 * torch.sin(xs / 2.0) * torch.cos(ys / 3.0)
    smooth = torch.stack([xs * 13 + 20, ys * 9 + 40, wave]).round().clamp(0, 255).to(torch.uint8)
    noise = torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=gen(0))
    return torch.cat([noise, smooth[None]])


def pil_reference(img: torch.Tensor, name: str, m: float) -> torch.Tensor:
    """The op as TrivialAugment's reference code computes it with PIL: (3, H, W) uint8 -> (3, H, W) uint8."""
    from PIL import Image, ImageEnhance, ImageOps

    im = Image.fromarray(img.permute(1, 2, 0).contiguous().numpy())
    black = (0, 0, 0)
    affine = {
        "shear_x": (1, m, 0, 0, 1, 0),
        "shear_y": (1, 0, 0, m, 1, 0),
        "translate_x": (1, 0, -m, 0, 1, 0),
        "translate_y": (1, 0, 0, 0, 1, -m),
    }
    enhance = {
        "brightness": ImageEnhance.Brightness,
        "color": ImageEnhance.Color,
        "contrast": ImageEnhance.Contrast,
        "sharpness": ImageEnhance.Sharpness,
    }
    if name in affine:
        out = im.transform(im.size, Image.Transform.AFFINE, affine[name], Image.Resampling.NEAREST, fillcolor=black)
    elif name == "rotate":
        out = im.rotate(m, Image.Resampling.NEAREST, fillcolor=black)
    elif name in enhance:
        out = enhance[name](im).enhance(1 + m)
    elif name == "posterize":
        out = ImageOps.posterize(im, int(m))
    elif name == "solarize":
        out = ImageOps.solarize(im, m)
    elif name == "autocontrast":
        out = ImageOps.autocontrast(im)
    elif name == "equalize":
        out = ImageOps.equalize(im)
    else:
        out = im
    return torch.from_numpy(np.array(out)).permute(2, 0, 1)


def apply_one(x: torch.Tensor, name: str, m: float) -> torch.Tensor:
    n = x.shape[0]
    return apply_trivial(x, torch.full((n,), TRIVIAL_OPS.index(name)), torch.full((n,), float(m)))


PIL_CASES = [
    ("identity", 0),
    ("shear_x", 0.3),
    ("shear_x", -0.99),
    ("shear_y", -0.5),
    ("translate_x", 5),
    ("translate_x", -16),
    ("translate_y", -7),
    ("rotate", 30),
    ("rotate", -120),
    ("brightness", -0.5),
    ("brightness", 0.7),
    ("color", -0.9),
    ("color", 0.6),
    ("contrast", -0.4),
    ("contrast", 0.99),
    ("sharpness", -0.99),
    ("sharpness", 0.9),
    ("posterize", 2),
    ("posterize", 5),
    ("solarize", 128),
    ("solarize", 246.5),
    ("equalize", 0),
]


@pytest.mark.parametrize("name, m", PIL_CASES)
def test_each_op_equals_the_pil_reference(name, m):
    x = smooth_images(3)
    ref = torch.stack([pil_reference(img, name, m) for img in x])
    out = apply_one(x, name, m)
    assert out.dtype == torch.uint8
    assert torch.equal(out, ref), (out.int() - ref.int()).abs().max()


def test_autocontrast_stretches_each_channel_exactly():
    x = smooth_images(3)
    x[0, 1] = 77  # a flat channel stays as it is
    out = apply_one(x, "autocontrast", 0).long()
    v = x.long().flatten(2)
    lo, hi = v.amin(2)[..., None], v.amax(2)[..., None]
    exact = torch.where(hi > lo, (v - lo) * 255 // (hi - lo).clamp(min=1), v).view_as(out)
    assert torch.equal(out, exact)
    assert torch.equal(out.flatten(2).amax(2)[hi[..., 0] > lo[..., 0]], torch.full((11,), 255))
    # PIL computes the table in floating point and lands one below where (v - lo) * 255 / (hi - lo) is whole.
    ref = torch.stack([pil_reference(img, "autocontrast", 0) for img in x]).long()
    assert (out - ref).abs().max() <= 1


def test_ops_do_what_their_names_say():
    x = smooth_images(5)
    assert torch.equal(apply_one(x, "identity", 0), x)
    for bits in range(2, 9):
        out = apply_one(x, "posterize", bits)
        assert (out % 2 ** (8 - bits) == 0).all() and (x.long() - out.long()).max() < 2 ** (8 - bits)
    for threshold in (0, 100, 255):
        out = apply_one(x, "solarize", threshold)
        above = x >= threshold
        assert torch.equal(out[above], 255 - x[above]) and torch.equal(out[~above], x[~above])
    square = x[:, :, :, :16]
    # Whole-pixel rotations and shifts are exact under nearest-neighbour sampling.
    assert torch.equal(apply_one(square, "rotate", 90), torch.rot90(square, 1, dims=(2, 3)))  # counter-clockwise
    assert torch.equal(apply_one(square, "rotate", -90), torch.rot90(square, -1, dims=(2, 3)))
    shifted = apply_one(x, "translate_x", 3)
    assert torch.equal(shifted[..., 3:], x[..., :-3]) and (shifted[..., :3] == 0).all()
    shifted = apply_one(x, "translate_y", -4)
    assert torch.equal(shifted[..., :-4, :], x[..., 4:, :]) and (shifted[..., -4:, :] == 0).all()
    sheared = apply_one(x, "shear_x", 0.5)  # row y moves left by round(0.5 * (y + 0.5)) pixels
    for row in (0, 5, 12):
        s = round(0.5 * (row + 0.5))
        assert torch.equal(sheared[..., row, : 16 - s], x[..., row, s:])
    assert torch.equal(apply_one(x, "brightness", -0.5), x // 2)  # factor 0.5, truncated as PIL does
    gray = apply_one(x, "color", -1.0)
    assert (gray[:, 0] == gray[:, 1]).all() and (gray[:, 1] == gray[:, 2]).all()  # saturation 0: gray
    flat = apply_one(x, "contrast", -1.0)
    assert (flat == flat[:, :1, :1, :1]).all()  # contrast 0: every pixel the image's mean gray
    blurred = apply_one(x, "sharpness", -1.0).float()
    assert blurred[..., 1:-1, 1:-1].diff(dim=-1).abs().mean() < x.float()[..., 1:-1, 1:-1].diff(dim=-1).abs().mean()


def test_equalize_flattens_the_histogram():
    # Values crowded into 100..139 (one eighth of the range): equalized, every eighth holds about an eighth (to
    # 40 input levels' granularity). 128x128: PIL's step, (pixels - top count) // 255, floors, which on small
    # images sends a sizeable top share to 255 (a fifth at 32x32); its reference equality is tested above.
    x = torch.randint(100, 140, (1, 3, 128, 128), dtype=torch.uint8, generator=gen(1))
    out = apply_one(x, "equalize", 0)
    for img in out.view(-1, 128 * 128).float():
        assert img.min() <= 8 and img.max() >= 240  # spread over the whole range
        eighths = torch.histc(img, bins=8, min=0, max=256) / img.numel()
        assert (eighths - 1 / 8).abs().max() < 0.04, eighths
    # Equalizing an equalized image changes little, and a one-value image stays as it is.
    again = apply_one(out, "equalize", 0)
    assert (again.float() - out.float()).abs().mean() < 2
    flat = torch.full((1, 3, 8, 8), 9, dtype=torch.uint8)
    assert torch.equal(apply_one(flat, "equalize", 0), flat)


def test_a_mixed_batch_equals_each_image_on_its_own():
    x = smooth_images(59)
    n = x.shape[0]
    ops = torch.arange(n) % len(TRIVIAL_OPS)
    ops = ops[torch.randperm(n, generator=gen(2))]
    table = magnitude_table(16, 16).float()
    bins = torch.randint(0, NUM_BINS, (n,), generator=gen(3))
    sign = torch.where(torch.tensor(SIGNED)[ops] & (torch.rand(n, generator=gen(4)) < 0.5), -1.0, 1.0)
    mags = table[ops, bins] * sign
    batch = apply_trivial(x, ops, mags)
    alone = torch.cat([apply_trivial(x[i : i + 1], ops[i : i + 1], mags[i : i + 1]) for i in range(n)])
    assert torch.equal(batch, alone)


def test_op_and_strength_are_drawn_uniformly():
    n = 14 * 31 * 20
    x = torch.zeros(1, 3, 32, 32)  # the draws need only the device and the size
    ops, mags = draw_trivial(n, 32, 32, x, gen(5))
    counts = torch.bincount(ops, minlength=len(TRIVIAL_OPS)).numpy()
    assert stats.chisquare(counts).pvalue > P_MIN
    table = magnitude_table(32, 32).float()
    for name in ("shear_x", "translate_y", "rotate", "contrast", "solarize"):
        k = TRIVIAL_OPS.index(name)
        assert len(table[k].unique()) == NUM_BINS
        m = mags[ops == k]
        bins = (m.abs()[:, None] - table[k][None]).abs().argmin(1)  # each image's bin, read back from its strength
        assert torch.equal(table[k][bins], m.abs())
        assert stats.chisquare(torch.bincount(bins, minlength=NUM_BINS).numpy()).pvalue > P_MIN
        if SIGNED[k]:
            assert within((m < 0).sum().item(), len(m), 0.5)
        else:
            assert (m >= 0).all()
    # Posterize: 31 bins over 7 bit depths, the end ones (8 and 2) 3 bins each, the others 5.
    bits = mags[ops == TRIVIAL_OPS.index("posterize")]
    observed = torch.stack([(bits == b).sum() for b in range(2, 9)]).numpy()
    expected = np.array([3, 5, 5, 5, 5, 5, 3]) / NUM_BINS * len(bits)
    assert stats.chisquare(observed, expected).pvalue > P_MIN
    assert (mags[ops == TRIVIAL_OPS.index("identity")] == 0).all()
    wide = {name: table[TRIVIAL_OPS.index(name)] for name in TRIVIAL_OPS}
    assert wide["rotate"].max() == 135 and wide["shear_x"].max() == pytest.approx(0.99)
    assert wide["translate_x"].max() == 32 and wide["translate_x"][15] == 16  # whole pixels, 32 at 32x32
    assert magnitude_table(16, 16)[TRIVIAL_OPS.index("translate_x")].max() == 16  # the side at any size
    assert wide["solarize"][0] == 255 and wide["solarize"][-1] == 0
    assert (wide["identity"] == 0).all() and (wide["equalize"] == 0).all()


def test_trivial_augment_applies_what_it_drew_and_is_reproducible():
    x = smooth_images(63)
    out, ops, mags = trivial_augment(x, gen(6), return_params=True)
    assert torch.equal(out, apply_trivial(x, ops, mags))
    assert torch.equal(trivial_augment(x, gen(6)), out)
    assert not torch.equal(trivial_augment(x, gen(7)), out)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    # Float input in pixel units: rounded first, same ops, the dtype kept.
    as_float = trivial_augment(x.float() + 0.2, gen(6))
    assert as_float.dtype == torch.float32 and torch.equal(as_float, out.float())
    with pytest.raises(DataError, match="1 or 3 channels"):
        trivial_augment(torch.zeros(2, 4, 8, 8, dtype=torch.uint8), gen(0))


def test_tensor_augment_runs_trivial_augment_first():
    x = smooth_images(31)
    spec = AugmentSpec(crop_pad=2, flip_p=0.5, cutout_size=(4, 4), trivial_augment=True)
    fused = TensorAugment(spec, MEAN, STD)(x, gen(8))
    g = gen(8)
    y = trivial_augment(x, g)
    y = batch_crop(y, 2, "reflect", g)
    y = batch_flip(y, 0.5, g)
    from vislab.augment import batch_cutout

    y = batch_cutout(y.float(), (4, 4), [m * 255 for m in MEAN], 1.0, g)
    torch.testing.assert_close(fused, normalize(y, MEAN, STD), atol=1e-4, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_trivial_augment_on_cuda_matches_cpu():
    x = smooth_images(63)
    cpu, ops, mags = trivial_augment(x, gen(6), return_params=True)
    on_cuda = trivial_augment(x.cuda(), gen(6))
    assert on_cuda.is_cuda and on_cuda.dtype == torch.uint8
    # Nearest-neighbour ties (pixel edges exactly on a sample point) may resolve differently between devices.
    assert (on_cuda.cpu() != cpu).float().mean() < 0.01


# --- MixUp and CutMix ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.2, 1.0, 2.0])
def test_beta_samples_follow_beta(alpha):
    lam = sample_beta(alpha, (4000,), gen(0))
    assert lam.dtype == torch.float32 and bool(((lam >= 0) & (lam <= 1)).all())
    assert stats.kstest(lam.numpy(), stats.beta(alpha, alpha).cdf).pvalue > P_MIN


def test_mixup_lam_is_beta_and_pixels_are_the_convex_combination():
    x = torch.randn(6, 3, 4, 4, generator=gen(0))
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    g = gen(1)
    lams = []
    for _ in range(600):
        mixed, y_a, y_b, lam = mixup(x, y, 0.4, g)
        lams.append(lam.item())
    assert stats.kstest(lams, stats.beta(0.4, 0.4).cdf).pvalue > P_MIN
    assert lam.ndim == 0 and lam.dtype == torch.float32
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x.flip(0))  # image i with image N - 1 - i
    assert torch.equal(y_a, y) and torch.equal(y_b, y.flip(0))
    # Reproducible from the generator, and the dtype of a bf16 batch is kept.
    assert torch.equal(mixup(x, y, 0.4, gen(2))[0], mixup(x, y, 0.4, gen(2))[0])
    assert mixup(x.bfloat16(), y, 0.4, gen(2))[0].dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="alpha"):
        mixup(x, y, 0.0, gen(0))


def timm_cutmix_lams(alpha: float, h: int, w: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """timm's rand_bbox + correct_lam in NumPy: the clipped box's lam, from an independent implementation."""
    lam = rng.beta(alpha, alpha, n)
    ratio = np.sqrt(1 - lam)
    cut_h, cut_w = (h * ratio).astype(int), (w * ratio).astype(int)
    cy, cx = rng.integers(0, h, n), rng.integers(0, w, n)
    y0, y1 = np.clip(cy - cut_h // 2, 0, h), np.clip(cy + cut_h // 2, 0, h)
    x0, x1 = np.clip(cx - cut_w // 2, 0, w), np.clip(cx + cut_w // 2, 0, w)
    return 1 - (y1 - y0) * (x1 - x0) / (h * w)


def test_cutmix_box_holds_the_partner_and_sets_lam():
    n, h, w = 5, 12, 16
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, h, w).contiguous()  # image i is all i
    y = torch.arange(n) * 10
    g = gen(3)
    lams = []
    for _ in range(1500):
        mixed, y_a, y_b, lam, box = cutmix(x, y, 1.0, g, return_box=True)
        y0, y1, x0, x1 = box.tolist()
        assert 0 <= y0 <= y1 <= h and 0 <= x0 <= x1 <= w
        inside = torch.zeros(h, w, dtype=torch.bool)
        inside[y0:y1, x0:x1] = True
        assert torch.equal(mixed[:, :, inside], x.flip(0)[:, :, inside])  # the box holds image N - 1 - i
        assert torch.equal(mixed[:, :, ~inside], x[:, :, ~inside])
        assert lam.item() == pytest.approx(1 - inside.sum().item() / (h * w))  # lam from the clipped box
        lams.append(lam.item())
    assert torch.equal(y_a, y) and torch.equal(y_b, y.flip(0))
    reference = timm_cutmix_lams(1.0, h, w, 20000, np.random.default_rng(0))
    assert stats.ks_2samp(lams, reference).pvalue > P_MIN
    assert torch.equal(cutmix(x, y, 1.0, gen(4))[0], cutmix(x, y, 1.0, gen(4))[0])
    with pytest.raises(DataError, match="one label"):
        cutmix(x, y[:3], 1.0, gen(0))
