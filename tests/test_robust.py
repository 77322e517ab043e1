"""CIFAR-10-C-style corruptions (each does what its name says, at its severity) and `vislab robust`."""

from __future__ import annotations

import colorsys
import io
import json

import numpy as np
import pytest
import torch

from vislab.augment import CORRUPTIONS, SEVERITIES, corrupt
from vislab.augment import _corrupt as C


def _grey(n: int = 64, size: int = 32, value: int = 128) -> torch.Tensor:
    return torch.full((n, 3, size, size), value, dtype=torch.uint8)


def _smooth(n: int = 16, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Natural-ish images: smooth colour gradients plus a few edges (random noise would hide blur)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    x = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    x[:, :, size // 3 : size // 2, :] *= 0.3  # a dark band: edges for the blurs
    return (x * 255).to(torch.uint8)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_gaussian_noise_has_the_severitys_standard_deviation(severity):
    y = corrupt(_grey(), "gaussian_noise", severity, _gen()).float()
    # Truncation to uint8 lowers the mean by half a level; the spread is the severity's std on [0, 1].
    assert (y - 128).std().item() / 255 == pytest.approx(C.GAUSSIAN_NOISE_STD[severity - 1], rel=0.03)
    assert (y - 128).mean().item() == pytest.approx(-0.5, abs=0.3)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_shot_noise_is_poisson_with_the_severitys_photon_count(severity):
    c = C.SHOT_NOISE_PHOTONS[severity - 1]
    y = corrupt(_grey(value=102), "shot_noise", severity, _gen()).float() / 255
    x = 102 / 255
    assert y.std().item() == pytest.approx((x / c) ** 0.5, rel=0.05)  # Poisson(x c) / c: variance x / c


@pytest.mark.parametrize("severity", SEVERITIES)
def test_impulse_noise_flips_the_severitys_share_of_values_half_to_black_half_to_white(severity):
    y = corrupt(_grey(), "impulse_noise", severity, _gen())
    amount = C.IMPULSE_NOISE_AMOUNT[severity - 1]
    white, black = (y == 255).float().mean().item(), (y == 0).float().mean().item()
    assert white + black == pytest.approx(amount, rel=0.08)
    assert white == pytest.approx(black, rel=0.15)
    assert ((y == 128) | (y == 0) | (y == 255)).all()


@pytest.mark.parametrize("severity", SEVERITIES)
def test_gaussian_blur_matches_scipys_gaussian_filter(severity):
    from scipy.ndimage import gaussian_filter

    x = _smooth(4)
    sigma = C.GAUSSIAN_BLUR_SIGMA[severity - 1]
    ours = corrupt(x, "gaussian_blur", severity).numpy().astype(int)
    # skimage.filters.gaussian, which the generator calls, is scipy's filter per channel (edge mode nearest).
    ref = gaussian_filter(x.numpy() / 255.0, sigma=(0, 0, sigma, sigma), mode="nearest", truncate=4.0)
    ref = (np.clip(ref, 0, 1) * 255).astype(np.uint8).astype(int)
    assert np.abs(ours - ref).max() <= 1


@pytest.mark.parametrize("severity", SEVERITIES)
def test_defocus_blur_matches_the_generators_disk_filter_in_opencv(severity):
    import cv2

    radius, alias = C.DEFOCUS_BLUR_DISK[severity - 1]
    # The generator's kernel, whole (17x17), and its per-channel cv2.filter2D.
    t = np.arange(-8, 9)
    xx, yy = np.meshgrid(t, t)
    disk = ((xx**2 + yy**2) <= radius**2).astype(np.float32)
    kernel = cv2.GaussianBlur(disk / disk.sum(), ksize=(3, 3), sigmaX=alias)
    x = _smooth(3)
    ours = corrupt(x, "defocus_blur", severity).numpy().astype(int)
    for i in range(3):
        img = x[i].permute(1, 2, 0).numpy() / 255.0
        ref = np.stack([cv2.filter2D(img[:, :, d], -1, kernel) for d in range(3)], 0)
        ref = (np.clip(ref, 0, 1) * 255).astype(np.uint8).astype(int)
        assert np.abs(ours[i] - ref).max() <= 1


@pytest.mark.parametrize("severity", SEVERITIES)
def test_contrast_scales_each_channels_spread_around_its_mean(severity):
    x = _smooth(4)
    y = corrupt(x, "contrast", severity).float()
    xf = x.float()
    c = C.CONTRAST_FACTOR[severity - 1]
    ratio = y.std(dim=(2, 3)) / xf.std(dim=(2, 3))
    assert ratio.mean().item() == pytest.approx(c, abs=0.02)
    assert (y.mean(dim=(2, 3)) - xf.mean(dim=(2, 3))).abs().max().item() < 1.0  # the mean stays (truncation: < 1)


def _hsv(img: torch.Tensor) -> np.ndarray:
    px = img.permute(0, 2, 3, 1).reshape(-1, 3).numpy() / 255.0
    return np.array([colorsys.rgb_to_hsv(*p) for p in px])


@pytest.mark.parametrize("severity", SEVERITIES)
def test_brightness_adds_the_severitys_shift_to_the_hsv_value(severity):
    x = (_smooth(2).float() * 0.6).to(torch.uint8)  # V <= 0.6: no clipping at 1
    before, after = _hsv(x), _hsv(corrupt(x, "brightness", severity))
    shift = C.BRIGHTNESS_SHIFT[severity - 1]
    assert np.median(after[:, 2] - before[:, 2]) == pytest.approx(shift, abs=2 / 255)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_saturate_scales_and_shifts_the_hsv_saturation(severity):
    x = _smooth(2)
    before, after = _hsv(x), _hsv(corrupt(x, "saturate", severity))
    a, b = C.SATURATE[severity - 1]
    expected = np.clip(before[:, 1] * a + b, 0, 1)
    bright = before[:, 2] > 0.3  # dark pixels' saturation is ill-defined after uint8 rounding
    assert np.median(np.abs(after[bright, 1] - expected[bright])) < 0.02


@pytest.mark.parametrize("severity", SEVERITIES)
def test_jpeg_compression_encodes_at_the_severitys_quality_measured_back(severity):
    from PIL import Image

    # The IJG base luminance table, natural order (ITU T.81 Annex K); libjpeg scales it by the quality.
    base = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]  # fmt: skip

    def table(q: int) -> list[int]:
        scale = 5000 // q if q < 50 else 200 - 2 * q
        return [min(max((v * scale + 50) // 100, 1), 255) for v in base]

    x = _smooth(2)
    data = C.jpeg_encode(x[0].permute(1, 2, 0).numpy(), C.JPEG_QUALITY[severity - 1])
    luminance = list(Image.open(io.BytesIO(data)).quantization[0])
    measured = [q for q in range(1, 101) if table(q) == luminance]
    assert C.JPEG_QUALITY[severity - 1] in measured
    # and the corruption's output is that JPEG, decoded
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    ours = corrupt(x[:1], "jpeg_compression", severity)[0].permute(1, 2, 0).numpy().astype(int)
    assert np.abs(ours - decoded).max() <= 2  # two JPEG decoders (OpenCV, PIL) may round the IDCT differently


@pytest.mark.parametrize("severity", SEVERITIES)
def test_pixelate_is_pils_box_resize_down_and_up(severity):
    from PIL import Image

    c = C.PIXELATE_FACTOR[severity - 1]
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=_gen())
    ours = corrupt(x, "pixelate", severity)
    for i in range(2):
        img = Image.fromarray(x[i].permute(1, 2, 0).numpy())
        ref = img.resize((int(32 * c), int(32 * c)), Image.BOX).resize((32, 32), Image.BOX)
        assert np.abs(np.asarray(ref).astype(int) - ours[i].permute(1, 2, 0).numpy().astype(int)).max() <= 1


def test_every_corruption_grows_with_severity_and_is_seeded():
    smooth, noise = _smooth(32), torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8, generator=_gen(3))
    for name in CORRUPTIONS:
        # Pixelation removes fine detail, so it is measured on fine detail: on smooth images how much a
        # block boundary moves depends on where the 30-, 28-, 27-, 24- and 20-pixel grids happen to fall.
        x = noise if name == "pixelate" else smooth
        dist = [(corrupt(x, name, s, _gen()).float() - x.float()).abs().mean().item() for s in SEVERITIES]
        if name == "saturate":  # CIFAR-10-C's saturate desaturates at 1-2 and over-saturates at 3-5
            assert dist[1] > dist[0] and dist[4] > dist[3] > dist[2]
        else:
            assert all(b > a for a, b in zip(dist, dist[1:])), (name, dist)
        a, b = corrupt(x, name, 3, _gen(5)), corrupt(x, name, 3, _gen(5))
        assert torch.equal(a, b), name


def test_bad_names_and_severities_are_config_errors():
    from vislab.errors import ConfigError

    with pytest.raises(ConfigError, match="fog.*choose from"):
        corrupt(_grey(2), "fog", 1)
    with pytest.raises(ConfigError, match="severities = 6"):
        corrupt(_grey(2), "contrast", 6)


def test_the_cli_help_lists_every_corruption():
    from vislab.report import commands

    assert commands.CORRUPTION_NAMES == tuple(CORRUPTIONS)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, one_thread):
    import vislab
    from conftest import make_imagefolder, tiny_config

    tmp = tmp_path_factory.mktemp("robust")
    root = make_imagefolder(tmp / "data", train_per_class=40, test_per_class=10)
    overrides = tiny_config(root, tmp / "cache", **{"trainer.epochs": 5, "sched.peak_epoch": 1})
    vislab.train("quick", overrides, out=tmp / "run")
    return tmp / "run"


def test_accuracy_of_a_trained_model_falls_with_severity_on_average(trained_run):
    from vislab.report import robust

    res = robust(trained_run, device="cpu", save=False)
    assert res.clean_acc >= 90
    # Saturate is left out of the average: CIFAR-10-C defines it to desaturate most at severity 2 (S x 0.1) and
    # over-saturate from 3 on, and the synthetic classes are told apart by colour, so severity 2 is its worst.
    ordered = [n for n in res.corruptions if n != "saturate"]
    by_severity = [np.mean([res.accuracy[n][i] for n in ordered]) for i in range(5)]
    assert all(b <= a for a, b in zip(by_severity, by_severity[1:])), by_severity
    assert by_severity[-1] < by_severity[0] < res.clean_acc + 1e-9
    assert res.mean_corruption_acc == pytest.approx(np.mean([a for accs in res.accuracy.values() for a in accs]))
    assert res.relative_drop == pytest.approx((res.clean_acc - res.mean_corruption_acc) / res.clean_acc)


def test_robust_command_prints_the_table_caches_it_and_the_report_shows_it(trained_run, capsys):
    from vislab.cli import main
    from vislab.rundir import ROBUSTNESS_FILE

    args = ["robust", str(trained_run), "--device", "cpu", "--corruptions", "contrast,pixelate", "--severities", "1,5"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "contrast" in out and "pixelate" in out and "sev 5" in out and "mean corruption accuracy" in out
    stored = json.loads((trained_run / ROBUSTNESS_FILE).read_text())
    assert stored["corruptions"] == ["contrast", "pixelate"] and stored["severities"] == [1, 5]
    assert main([*args[:-1], "5"]) == 0  # a subset of what is cached: no recomputation
    assert "from the cache" in capsys.readouterr().out

    from vislab.report import make_report

    text = make_report(trained_run, n=2, preview=0).markdown.read_text()
    assert "## Robustness to corruptions" in text and "robustness.png" in text
    assert "| contrast |" in text and "gaussian noise" not in text  # the cached table, not a new default one


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--corruptions", "fog"], "fog"),
        (["--severities", "0,2"], "severities = 0"),
        (["--severities", "a"], "whole numbers"),
        (["--images", "0"], "--images = 0"),
    ],
)
def test_robust_command_refuses_bad_options_in_one_paragraph(trained_run, capsys, args, message):
    from vislab.cli import main

    assert main(["robust", str(trained_run), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_published_cifar10c_files_are_read_per_severity(trained_run, tmp_path):
    from vislab.data import ImageDataset
    from vislab.errors import ConfigError, DataError
    from vislab.explain import predict
    from vislab.report import load_run, robustness_run

    run16 = load_run(trained_run, device="cpu")
    (tmp_path / "c").mkdir()
    np.save(tmp_path / "c" / "labels.npy", np.zeros(5, np.uint8))
    np.save(tmp_path / "c" / "contrast.npy", np.zeros((5, 32, 32, 3), np.uint8))
    with pytest.raises(ConfigError, match="32x32"):  # the synthetic run's images are 16x16
        robustness_run(run16, corruptions=["contrast"], cifar10c=tmp_path / "c", save=False)
    # The same model on the test images at 32x32 (nearest-neighbour 2x): CIFAR-10-C's size.
    d = run16.dataset
    up = lambda x: x.repeat_interleave(2, 2).repeat_interleave(2, 3).contiguous()  # noqa: E731
    ds = ImageDataset(d.name, up(d.train_x), d.train_y, up(d.test_x), d.test_y, d.classes, d.mean, d.std)
    run = load_run(trained_run, device="cpu", dataset=ds)
    # A stand-in for the published files: "severity" s holds the test images darkened by (s - 1) * 40 levels.
    x = ds.test_x.permute(0, 2, 3, 1).numpy().astype(int)
    stack = np.concatenate([np.clip(x - 40 * s, 0, 255).astype(np.uint8) for s in range(5)])
    np.save(tmp_path / "c" / "contrast.npy", stack)
    np.save(tmp_path / "c" / "labels.npy", np.tile(ds.test_y.numpy().astype(np.uint8), 5))
    res = robustness_run(run, corruptions=["contrast"], cifar10c=tmp_path / "c", save=False)
    n = ds.test_y.numel()
    expected = []
    for s in range(5):
        imgs = torch.from_numpy(stack[s * n : (s + 1) * n]).permute(0, 3, 1, 2).contiguous()
        pred = predict(run.model, imgs, run.normalize).argmax(1)
        expected.append(100.0 * float((pred == ds.test_y).double().mean()))
    assert res.accuracy["contrast"] == pytest.approx(expected)
    assert res.accuracy["contrast"][0] == pytest.approx(res.clean_acc)  # "severity 1" here is the clean images
    assert "CIFAR-10-C files" in res.source
    with pytest.raises(DataError, match="pixelate.npy is missing"):
        robustness_run(run, corruptions=["pixelate"], cifar10c=tmp_path / "c", save=False)


def test_compare_sets_runs_side_by_side_on_calibration_and_robustness(trained_run, tmp_path, capsys):
    from vislab.cli import main
    from vislab.report import robust

    res = robust(trained_run, device="cpu", corruptions=["contrast", "impulse_noise"], severities=[5], refresh=True)
    assert main(["compare", str(trained_run), str(trained_run), "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert f"mean corruption accuracy {res.mean_corruption_acc:.2f}%" in out
    text = (tmp_path / "cmp" / "compare.md").read_text()
    assert "## Calibration and robustness" in text
    assert f"| {res.mean_corruption_acc:.2f} |" in text and "| impulse noise |" in text
