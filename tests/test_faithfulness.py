"""Faithfulness curves: deletion / insertion, ROAD's noisy linear imputation and MoRF / LeRF, random baseline, plot.

The model under test reads one planted region: its class-0 logit is a multiple of the region's mean, so
the right map (the region) must beat a random order and an inverted map must lose to it, on every curve.
"""

from __future__ import annotations

import io
import json
import math
from collections import Counter

import numpy as np
import pytest
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy.ndimage import gaussian_filter
from torch import nn

from vislab.errors import ConfigError
from vislab.explain._faithfulness import (
    BLUR_SIGMA_FRACTION,
    DEFAULT_STEPS,
    ROAD_FRACTIONS,
    ROAD_NOISE,
    FaithfulnessCurves,
    baseline_canvas,
    curve_auc,
    deletion_insertion,
    faithfulness,
    gaussian_blur,
    noisy_linear_impute,
    pixel_order,
    random_order,
    road_curves,
)
from vislab.plots import PALETTE, plot_faithfulness

pytestmark = pytest.mark.usefixtures("one_thread")

H, W = 12, 12
P = H * W
REGION = (slice(2, 7), slice(4, 9))  # 25 of the 144 pixels
GAIN = 4.0


class RegionModel(nn.Module):
    """Two classes: logit 0 = GAIN * mean of the planted region over channels, logit 1 = 0.

    The input dropout makes train-mode outputs random: curves that match across runs and batch sizes show
    that the forwards ran in eval mode. `seen` records every input batch when `record` is set.
    """

    def __init__(self, record: bool = False):
        super().__init__()
        w = torch.zeros(H, W)
        w[REGION] = 1.0
        self.weight = nn.Parameter(w / w.sum() / 3, requires_grad=False)
        self.drop = nn.Dropout(0.5)
        self.record = record
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.record:
            self.seen.extend(x.detach().clone())
        s = (self.drop(x) * self.weight).sum(dim=(1, 2, 3))
        return torch.stack([GAIN * s, torch.zeros_like(s)], dim=1)


def planted_images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.randn(n, 3, H, W, generator=g)
    x[:, :, REGION[0], REGION[1]] += 1.0  # region mean about 1: p(class 0) about sigmoid(4) = 0.98
    return x


def region_maps(n: int, seed: int = 0) -> torch.Tensor:
    """The right map: 1 on the region, 0 elsewhere, plus small distinct noise (no ties)."""
    g = torch.Generator().manual_seed(seed)
    maps = 0.01 * torch.rand(n, H, W, generator=g)
    maps[:, REGION[0], REGION[1]] += 1.0
    return maps


def p_class0(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x).softmax(dim=1)[:, 0]


@pytest.fixture(scope="module")
def planted(one_thread):
    model = RegionModel().train()  # left in train mode on purpose: the curves must switch to eval
    x = planted_images(6)
    t = torch.zeros(6, dtype=torch.long)
    maps = region_maps(6)
    kw = {"baseline": "mean", "steps": 12, "road_fractions": (0.1, 0.3, 0.5, 0.7, 0.9), "repeats": 3}
    return {
        "model": model,
        "x": x,
        "t": t,
        "maps": maps,
        "right": faithfulness(model, x, maps, t, **kw),
        "inverted": faithfulness(model, x, -maps, t, **kw),
        "random": faithfulness(model, x, None, t, **kw),
    }


# ---- pixel orders ----


def test_pixel_order_is_descending_relevance_for_distinct_values_also_signed():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(3, 5, 7, generator=g)  # signed, distinct
    order = pixel_order(maps, torch.Generator().manual_seed(1))
    assert order.shape == (3, 35) and order.dtype == torch.long
    assert torch.equal(order, maps.reshape(3, -1).argsort(dim=1, descending=True))
    assert torch.equal(pixel_order(-maps), maps.reshape(3, -1).argsort(dim=1))


def test_pixel_order_breaks_ties_at_random_and_only_ties():
    maps = torch.zeros(1, 4, 4)
    maps[0, 0, :2] = 5.0  # two tied top pixels, then 14 tied zeros
    orders = [pixel_order(maps, torch.Generator().manual_seed(s))[0] for s in range(20)]
    for o in orders:
        assert set(o[:2].tolist()) == {0, 1}
    assert len({tuple(o.tolist()) for o in orders}) > 10  # the tied pixels come in varying orders
    assert torch.equal(pixel_order(maps, torch.Generator().manual_seed(3)), orders[3][None])


def test_random_order_is_a_seeded_permutation():
    a = random_order(4, 3, 5, torch.Generator().manual_seed(0))
    assert a.shape == (4, 15)
    assert torch.equal(a.sort(dim=1).values, torch.arange(15).expand(4, 15))
    assert torch.equal(a, random_order(4, 3, 5, torch.Generator().manual_seed(0)))
    assert not torch.equal(a, random_order(4, 3, 5, torch.Generator().manual_seed(1)))


# ---- canvas ----


def test_blur_canvas_matches_scipy_gaussian_filter():
    x = torch.randn(2, 3, 32, 24)
    sigma = BLUR_SIGMA_FRACTION * 24
    ref = gaussian_filter(x.double().numpy(), sigma=(0, 0, sigma, sigma), mode="mirror")  # torch's "reflect"
    np.testing.assert_allclose(baseline_canvas(x, "blur").double().numpy(), ref, atol=1e-5)
    np.testing.assert_allclose(
        gaussian_blur(x, 1.3).numpy(), gaussian_filter(x.numpy(), (0, 0, 1.3, 1.3), mode="mirror"), atol=1e-5
    )
    assert torch.equal(baseline_canvas(x, "mean"), torch.zeros_like(x))


# ---- deletion / insertion ----


def test_right_map_beats_random_and_random_beats_inverted(planted):
    right, inverted, rnd = planted["right"], planted["inverted"], planted["random"]
    # deletion falls faster, insertion rises faster, by clear margins (expected about 0.56 / 0.83 / 0.95)
    assert right.deletion_auc < rnd.deletion_auc - 0.1 < inverted.deletion_auc - 0.2
    assert right.insertion_auc > rnd.insertion_auc + 0.05 > inverted.insertion_auc + 0.1
    assert right.score > rnd.score > inverted.score
    # deleting a map's top k pixels is inserting its reverse's top H*W - k: the score changes sign exactly
    assert right.score == pytest.approx(-inverted.score, abs=1e-6) and abs(rnd.score) < 0.05
    # per image too, not only on average
    assert (curve_auc_rows(right.fractions, right.deletion) < curve_auc_rows(rnd.fractions, rnd.deletion)).all()
    assert right.random_order is False and rnd.random_order is True and rnd.repeats == 3
    assert planted["model"].training  # train mode restored after the eval-mode forwards


def curve_auc_rows(fractions: torch.Tensor, curves: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.tensor(curve_auc(fractions, c[None])) for c in curves])


@pytest.mark.parametrize("baseline", ["mean", "blur"])
def test_curve_endpoints_are_the_intact_image_and_the_canvas(planted, baseline):
    model, x, t, maps = planted["model"], planted["x"], planted["t"], planted["maps"]
    curves = deletion_insertion(model, x, maps, t, baseline=baseline, steps=4)
    intact, canvas = p_class0(model, x), p_class0(model, baseline_canvas(x, baseline))
    model.train()
    assert torch.equal(curves.fractions, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64))
    torch.testing.assert_close(curves.deletion[:, 0], intact)
    torch.testing.assert_close(curves.deletion[:, -1], canvas)
    torch.testing.assert_close(curves.insertion[:, 0], canvas)
    torch.testing.assert_close(curves.insertion[:, -1], intact)
    assert (canvas < intact - 0.02).all()  # the endpoints differ, so the check above can fail


def test_each_step_changes_exactly_the_top_round_f_hw_pixels():
    model = RegionModel(record=True)
    x = planted_images(2, seed=1)
    maps = torch.rand(2, H, W, generator=torch.Generator().manual_seed(2))  # distinct values: one order
    order = maps.reshape(2, -1).argsort(dim=1, descending=True)
    steps = 7  # s / 7 * 144 is never a whole number: the rounding is exercised
    ks = {round(s / steps * P) for s in range(steps + 1)}
    deletion_insertion(model, x, maps, torch.zeros(2, dtype=torch.long), baseline="mean", steps=steps)
    prefixes, suffixes, full = {0: set(), 1: set()}, {0: set(), 1: set()}, 0
    for v in model.seen:
        canvas = (v == 0).all(dim=0).reshape(-1)  # pixels set to the mean canvas
        if canvas.all():
            full += 1  # the pure canvas: no pixel tells which image it came from
            continue
        img = next(i for i in range(2) if torch.equal(v.reshape(3, -1)[:, ~canvas], x[i].reshape(3, -1)[:, ~canvas]))
        rank = torch.empty(P, dtype=torch.long)
        rank[order[img]] = torch.arange(P)
        z = int(canvas.sum())
        if torch.equal(canvas, rank < z):
            prefixes[img].add(z)  # deletion: the z most relevant pixels removed
        if torch.equal(canvas, rank >= P - z):
            suffixes[img].add(P - z)  # insertion: the P - z most relevant pixels revealed
        assert torch.equal(canvas, rank < z) or torch.equal(canvas, rank >= P - z)
    assert full == 4  # per image: deletion of all pixels, insertion of none
    for img in range(2):
        assert prefixes[img] == ks - {P} and suffixes[img] == ks - {0}


def test_each_road_step_imputes_exactly_round_f_hw_pixels_most_or_least_relevant():
    model = RegionModel(record=True)
    x = planted_images(2, seed=1)
    maps = torch.rand(2, H, W, generator=torch.Generator().manual_seed(2))
    order = maps.reshape(2, -1).argsort(dim=1, descending=True)
    fractions = (0.1, 0.35, 0.9)
    road_curves(model, x, maps, torch.zeros(2, dtype=torch.long), fractions=fractions)
    seen = Counter()
    for v in model.seen:
        same = [(v == x[i]).all(dim=0).reshape(-1) for i in range(2)]
        img = int(same[1].sum() > same[0].sum())
        changed = ~same[img]
        z = int(changed.sum())
        if z == 0:
            continue  # an intact image (the class count check)
        rank = torch.empty(P, dtype=torch.long)
        rank[order[img]] = torch.arange(P)
        kind = "morf" if torch.equal(changed, rank < z) else "lerf" if torch.equal(changed, rank >= P - z) else "?"
        seen[img, kind, z] += 1
    expected = Counter({(i, kind, round(f * P)): 1 for i in range(2) for kind in ("morf", "lerf") for f in fractions})
    assert seen == expected


# ---- ROAD imputation ----


def neighbour_residual(y: np.ndarray, mask: np.ndarray) -> float:
    """Largest |x_i - weighted mean of its in-image neighbours| over the masked pixels, written out plainly
    with ROAD's weights: 1/6 for the direct neighbours, 1/12 for the diagonal ones."""
    n, _, h, w = y.shape
    worst = 0.0
    for b, i, j in zip(*np.nonzero(mask)):
        num, den = 0.0, 0.0
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                r, c, wt = i + dr, j + dc, 1 / 12 if dr and dc else 1 / 6
                if (dr, dc) != (0, 0) and 0 <= r < h and 0 <= c < w:
                    num, den = num + wt * y[b, :, r, c], den + wt
        worst = max(worst, float(np.abs(y[b, :, i, j] - num / den).max()))
    return worst


def test_imputation_solves_the_neighbour_equations_and_keeps_known_pixels():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 9, 11, generator=g)  # H != W: rows and columns cannot be swapped unnoticed
    mask = torch.rand(3, 9, 11, generator=g) < torch.tensor([0.2, 0.6, 0.95])[:, None, None]
    mask[0, 0, 0] = mask[0, 8, 10] = True  # corners, where the weights are renormalised
    y = noisy_linear_impute(x, mask, noise=0.0)
    keep = ~mask[:, None].expand_as(x)
    assert torch.equal(y[keep], x[keep])
    assert neighbour_residual(y.double().numpy(), mask.numpy()) < 1e-5
    assert not torch.allclose(y[~keep], x[~keep])  # the removed values were replaced


def test_imputation_fills_a_hole_in_a_linear_ramp_exactly():
    rows, cols = torch.meshgrid(torch.arange(10.0), torch.arange(12.0), indexing="ij")
    slopes = torch.tensor([[0.3, -0.2, 1.0], [0.05, 0.4, -0.7]])  # per channel: row slope, column slope
    ramp = (slopes[0, :, None, None] * rows + slopes[1, :, None, None] * cols + 0.1)[None]  # (1, 3, 10, 12)
    mask = torch.zeros(1, 10, 12, dtype=torch.bool)
    mask[0, 2:7, 3:9] = True  # an interior hole (off the border: there the stencil is one-sided)
    mask[0, 8, 1] = mask[0, 1, 10] = True
    x = ramp.masked_fill(mask[:, None], 5.0)  # what was there before is irrelevant
    torch.testing.assert_close(noisy_linear_impute(x, mask, noise=0.0), ramp, atol=1e-5, rtol=0)


def test_imputation_noise_is_gaussian_of_the_given_std_on_imputed_pixels_only():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 16, 16, generator=g)
    mask = torch.rand(4, 16, 16, generator=g) < 0.5
    clean = noisy_linear_impute(x, mask, noise=0.0)
    noisy = noisy_linear_impute(x, mask, noise=0.2, generator=torch.Generator().manual_seed(1))
    again = noisy_linear_impute(x, mask, noise=0.2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(noisy, again)
    keep = ~mask[:, None].expand_as(x)
    assert torch.equal(noisy[keep], x[keep])
    d = (noisy - clean)[~keep]
    assert abs(float(d.std()) - 0.2) < 0.02 and abs(float(d.mean())) < 0.02
    assert ROAD_NOISE == 0.01


def test_imputation_of_a_fully_removed_image_is_the_mean_colour():
    x = torch.randn(2, 3, 5, 5)
    mask = torch.zeros(2, 5, 5, dtype=torch.bool)
    mask[0] = True
    y = noisy_linear_impute(x, mask, noise=0.0)
    assert torch.equal(y[0], torch.zeros(3, 5, 5)) and torch.equal(y[1], x[1])


def test_road_morf_below_lerf_for_the_right_map_and_reversed_for_the_inverted(planted):
    right, inverted, rnd = planted["right"], planted["inverted"], planted["random"]
    assert right.road_morf_auc < right.road_lerf_auc - 0.2
    assert inverted.road_morf_auc > inverted.road_lerf_auc + 0.2
    assert right.road_gap > rnd.road_gap + 0.2 > inverted.road_gap + 0.4
    assert abs(rnd.road_gap) < 0.1  # random MoRF and LeRF coincide in distribution
    assert right.road_gap == pytest.approx(-inverted.road_gap, abs=0.01)  # MoRF of a map = LeRF of its reverse
    assert right.road_morf_auc < rnd.road_morf_auc


# ---- random baseline, chunking, results ----


def test_random_baseline_is_reproducible_with_a_seed_and_changes_with_another(planted):
    model, x, t = planted["model"], planted["x"], planted["t"]
    kw = {"steps": 4, "road_fractions": (0.3, 0.6), "repeats": 2, "baseline": "mean"}
    a = faithfulness(model, x, None, t, seed=5, **kw)
    b = faithfulness(model, x, None, t, seed=5, **kw)
    c = faithfulness(model, x, None, t, seed=6, **kw)
    for name in ("deletion", "insertion", "road_morf", "road_lerf"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
        inner = slice(1, -1) if name in ("deletion", "insertion") else slice(None)  # end points: seed-free
        assert not torch.equal(getattr(a, name)[:, inner], getattr(c, name)[:, inner]), name


@pytest.mark.parametrize("use_maps", [True, False])
def test_batch_size_does_not_change_the_curves(planted, use_maps):
    model, x, t = planted["model"], planted["x"][:3], planted["t"][:3]
    maps = planted["maps"][:3] if use_maps else None
    kw = {"steps": 4, "road_fractions": (0.3, 0.7), "repeats": 2, "seed": 3}
    one = faithfulness(model, x, maps, t, batch=1, **kw)
    many = faithfulness(model, x, maps, t, batch=10_000, **kw)
    for name in ("deletion", "insertion", "road_morf", "road_lerf"):
        assert torch.equal(getattr(one, name), getattr(many, name)), name


def test_areas_scores_and_json_summary():
    fr = torch.linspace(0, 1, 5, dtype=torch.float64)
    rf = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    c = FaithfulnessCurves(
        fractions=fr,
        deletion=torch.stack([1 - fr, torch.zeros(5, dtype=torch.float64)]).float(),  # areas 0.5 and 0
        insertion=torch.stack([fr, torch.ones(5, dtype=torch.float64)]).float(),  # areas 0.5 and 1
        road_fractions=rf,
        road_morf=torch.full((2, 3), 0.3),
        road_lerf=torch.tensor([[0.5, 0.7, 0.9], [0.9, 0.9, 0.9]]),
        baseline="blur",
        random_order=False,
        repeats=1,
    )
    assert c.deletion_auc == pytest.approx(0.25)
    assert c.insertion_auc == pytest.approx(0.75)
    assert c.road_morf_auc == pytest.approx(0.3)  # the mean height over 0.1..0.9, not the raw area 0.24
    assert c.road_lerf_auc == pytest.approx((0.7 + 0.9) / 2)
    assert c.score == pytest.approx(0.5) and c.road_gap == pytest.approx(0.5)
    d = json.loads(json.dumps(c.as_dict()))
    assert d["images"] == 2 and d["baseline"] == "blur" and d["fractions"] == pytest.approx(fr.tolist())
    assert d["deletion"] == pytest.approx([0.5, 0.375, 0.25, 0.125, 0.0])
    assert d["road_lerf"] == pytest.approx([0.7, 0.8, 0.9]) and d["score"] == pytest.approx(0.5)
    assert math.isnan(curve_auc(fr, torch.zeros(0, 5)))


def test_defaults():
    assert DEFAULT_STEPS == 16 and ROAD_FRACTIONS == tuple(i / 10 for i in range(1, 10))


# ---- argument errors ----


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, "steps = 0"),
        ({"steps": 2.5}, "steps = 2.5"),
        ({"baseline": "zeros"}, "baseline = 'zeros'.*blur, mean"),
        ({"repeats": 0}, "repeats = 0"),
        ({"batch": 0}, "batch = 0"),
        ({"road_fractions": (0.0, 0.5)}, "road_fractions"),
        ({"road_fractions": (0.5, 0.3)}, "road_fractions.*increasing"),
        ({"road_fractions": ()}, "road_fractions"),
        ({"noise": -0.1}, "noise = -0.1"),
        ({"noise": float("nan")}, "noise = nan"),
    ],
)
def test_bad_options_name_the_argument(planted, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        faithfulness(planted["model"], planted["x"], planted["maps"], planted["t"], **kwargs)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"maps": torch.zeros(6, H, W + 1)}, r"maps: got \(6, 12, 13\).*\(6, 12, 12\)"),
        ({"maps": torch.full((6, H, W), float("nan"))}, "maps hold NaN"),
        ({"targets": torch.zeros(5, dtype=torch.long)}, "targets: 5 target classes.*6 images"),
        ({"targets": torch.full((6,), 2)}, r"targets: target classes must lie in \[0, 2\)"),
        ({"targets": torch.full((6,), -1)}, "targets: target classes must lie"),
        ({"targets": torch.zeros(6)}, "targets: got a torch.float32"),
        ({"x": torch.zeros(6, 3, H, W, dtype=torch.uint8)}, "x: got a torch.uint8"),
        ({"x": torch.zeros(3, H, W)}, r"x must be a batch"),
        ({"x": torch.zeros(0, 3, H, W), "maps": torch.zeros(0, H, W)}, "x holds no images"),
    ],
)
def test_bad_inputs_name_the_argument(planted, change, match):
    args = {"x": planted["x"], "maps": planted["maps"], "targets": planted["t"], **change}
    with pytest.raises(ConfigError, match=match):
        faithfulness(planted["model"], args["x"], args["maps"], args["targets"])


def test_bad_imputation_mask():
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(ConfigError, match="mask: got a torch.float32 tensor"):
        noisy_linear_impute(x, torch.zeros(2, 4, 4))
    with pytest.raises(ConfigError, match=r"mask: .*shape \(2, 4, 4\)"):
        noisy_linear_impute(x, torch.zeros(2, 4, 5, dtype=torch.bool))


# ---- plot ----


def test_plot_faithfulness_draws_three_panels_with_areas_and_a_grey_dashed_baseline(planted):
    curves = {"region": planted["right"], "inverted": planted["inverted"]}
    fig = plot_faithfulness(curves, random=planted["random"], title="planted region")
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    dele, ins, road = fig.axes
    assert len(dele.lines) == len(ins.lines) == 3 and len(road.lines) == 6
    labels = [t.get_text() for t in dele.get_legend().get_texts()]
    assert labels[0] == f"region (AUC {planted['right'].deletion_auc:.3f})"
    assert labels[2].startswith("random order (AUC")
    rnd = dele.lines[2]
    assert rnd.get_color() == "grey" and rnd.get_linestyle() == "--"
    assert dele.lines[0].get_color() == PALETTE[0] and dele.lines[1].get_color() == PALETTE[1]
    styles = {line.get_label().split(" (")[0]: line.get_linestyle() for line in road.lines}
    assert styles["region MoRF"] == "-" and styles["region LeRF"] == "--"
    assert np.allclose(road.lines[0].get_ydata(), planted["right"].road_morf.mean(0).numpy())
    fig.savefig(io.BytesIO(), format="png")


def test_plot_faithfulness_draws_into_given_axes_and_refuses_one_axes(planted):
    fig = Figure()
    axes = fig.subplots(1, 3)
    assert plot_faithfulness({"region": planted["right"]}, ax=list(axes)) is fig
    assert all(a.lines for a in axes)
    with pytest.raises(ConfigError, match="three Axes"):
        plot_faithfulness({"region": planted["right"]}, ax=axes[0])
    assert isinstance(axes[0], Axes)
