"""Explain: Grad-CAM (against captum, localization, sanity check), deletion test, selection, prediction cache."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vislab.augment import normalize
from vislab.errors import ConfigError
from vislab.explain import (
    MIN_MEANINGFUL_DROP,
    confusion_matrix,
    deletion_test,
    grad_cam,
    grad_cam_targets,
    guided_grad_cam,
    load_predictions,
    most_confused,
    normalize_confusion,
    per_class_accuracy,
    predict,
    random_mask,
    random_region_mask,
    save_predictions,
    select_misclassified,
    top_mask,
)
from vislab.models import create_model

SIZE, PATCH, HALF = 32, 8, 16
CHECKER = 180.0 * ((torch.arange(PATCH)[:, None] + torch.arange(PATCH)) % 2)  # (PATCH, PATCH) pixel values 0 / 180


pytestmark = pytest.mark.usefixtures("one_thread")


def _quadrant_data(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class = stripe direction of an 8x8 pattern in a random quadrant. Another quadrant holds a
    higher-contrast checkerboard found in every class: an untrained net's strongest response, so a map
    that merely follows contrast or edges peaks there, not on the class pattern. Returns (x, y, quadrant)."""
    x = torch.randint(0, 100, (n, 3, SIZE, SIZE), generator=g).float()
    y = torch.randint(0, 2, (n,), generator=g)
    quad = torch.randint(0, 4, (n,), generator=g)
    other = (quad + torch.randint(1, 4, (n,), generator=g)) % 4
    rows = (torch.arange(PATCH) % 2 == 0).float()[:, None].expand(PATCH, PATCH)  # horizontal stripes
    offsets = torch.randint(0, HALF - PATCH + 1, (n, 4), generator=g)
    for i in range(n):
        qy, qx = divmod(int(quad[i]), 2)
        oy, ox = int(offsets[i, 0]) + qy * HALF, int(offsets[i, 1]) + qx * HALF
        x[i, :, oy : oy + PATCH, ox : ox + PATCH] = 60 + 100 * (rows if y[i] == 0 else rows.T)
        dy, dx = divmod(int(other[i]), 2)
        oy, ox = int(offsets[i, 2]) + dy * HALF, int(offsets[i, 3]) + dx * HALF
        x[i, :, oy : oy + PATCH, ox : ox + PATCH] = CHECKER
    return (x / 255 - 0.35) / 0.3, y, quad


def _peak_quadrant(cams: torch.Tensor) -> torch.Tensor:
    peak = cams.flatten(1).argmax(1)
    return (peak // SIZE >= HALF).long() * 2 + (peak % SIZE >= HALF).long()


@pytest.fixture(scope="module")
def trained():
    """A width-0.125 ResNet9 trained for 40 steps on the quadrant task, and its held-out test set."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x, y, _ = _quadrant_data(512, g)
    x_test, y_test, q_test = _quadrant_data(128, g)
    model = create_model("resnet9", num_classes=2, width=0.125)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(40):
        idx = torch.randint(0, x.shape[0], (32,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x_test).argmax(1) == y_test).float().mean().item()
    assert acc > 0.9, f"the localization model did not learn the task (test accuracy {acc:.2f})"
    return model, x_test, y_test, q_test


def test_grad_cam_localizes_and_randomized_weights_do_not(trained):
    model, x, y, quad = trained
    hits = (_peak_quadrant(grad_cam(model, x, y)) == quad).float().mean().item()
    assert hits >= 0.85  # chance is 0.25
    # Adebayo et al.'s model-randomization check: the same architecture with re-drawn weights must lose the map.
    randomized = create_model("resnet9", num_classes=2, width=0.125)
    randomized.load_state_dict(model.state_dict())
    torch.manual_seed(1)
    for m in randomized.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    randomized.eval()
    rand_hits = (_peak_quadrant(grad_cam(randomized, x, y)) == quad).float().mean().item()
    assert rand_hits <= hits - 0.4 and rand_hits < 0.5


def test_deletion_of_attended_pixels_hurts_more_than_random(trained):
    model, x, y, _ = trained
    cams = grad_cam(model, x, y)
    res = deletion_test(model, x, cams, y, fraction=0.2)
    assert res.p_orig.shape == (x.shape[0],)
    assert res.cam_drop > res.random_drop + 0.1 and res.cam_drop > res.region_drop + 0.1
    assert res.win_rate > 0.7
    # Inverting the maps (deleting the least-attended pixels) must hurt less than the real maps do.
    inverted = deletion_test(model, x, cams.amax() - cams, y, fraction=0.2)
    assert inverted.cam_drop < res.cam_drop


def test_grad_cam_matches_captum_layer_gradcam():
    from captum.attr import LayerGradCam

    torch.manual_seed(0)
    model = create_model("resnet9", num_classes=10, width=0.25).eval()
    x = torch.randn(6, 3, 32, 32)
    t = torch.tensor([0, 3, 9, 1, 1, 5])
    for name in ("layer3", "layer2"):
        ours = grad_cam(model, x, t, layer=name, upsample=False)
        ref = LayerGradCam(model, model.get_submodule(name)).attribute(x, target=t, relu_attributions=True)[:, 0]
        assert ours.shape == ref.shape and ref.abs().max() > 0
        torch.testing.assert_close(ours, ref.detach(), rtol=1e-4, atol=1e-6)
    up = grad_cam(model, x, t)  # default layer: layer3, upsampled to the input size
    assert up.shape == (6, 32, 32)
    low = grad_cam(model, x, t, upsample=False)
    torch.testing.assert_close(
        up, F.interpolate(low[:, None], size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    )


def test_predicted_and_actual_targets_give_their_own_maps(trained):
    model, x, _, _ = trained
    x = x[:8]
    pred = model(x).argmax(1).detach()
    actual = 1 - pred  # two classes: every "actual" differs from the prediction
    res = grad_cam_targets(model, x, {"predicted": pred, "actual": actual})
    assert set(res.maps) == {"predicted", "actual"}
    torch.testing.assert_close(res.maps["predicted"], grad_cam(model, x, pred))
    torch.testing.assert_close(res.maps["actual"], grad_cam(model, x, actual))
    for i in range(8):
        assert not torch.allclose(res.maps["predicted"][i], res.maps["actual"][i])
    # the logits come from the same single forward pass
    torch.testing.assert_close(res.logits, model(x).detach())


def test_grad_cam_under_inference_mode_with_frozen_model():
    torch.manual_seed(0)
    model = create_model("resnet9", num_classes=10, width=0.125).eval().requires_grad_(False)
    with torch.inference_mode():
        x = torch.randn(3, 3, 32, 32)
        cams = grad_cam(model, x, torch.tensor([0, 1, 2]))
    assert cams.shape == (3, 32, 32) and cams.sum() > 0


def test_guided_grad_cam_shape():
    torch.manual_seed(0)
    model = create_model("resnet9", num_classes=10, width=0.125).eval()
    out = guided_grad_cam(model, torch.randn(2, 3, 32, 32), torch.tensor([3, 4]))
    assert out.shape == (2, 3, 32, 32) and out.abs().sum() > 0


CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def _entry_points(model: nn.Module):
    """Every public explain function that takes an image batch, called on `x`."""
    t = torch.tensor([0, 1])
    return {
        "grad_cam": lambda x: grad_cam(model, x, t),
        "grad_cam_targets": lambda x: grad_cam_targets(model, x, {"predicted": t}),
        "guided_grad_cam": lambda x: guided_grad_cam(model, x, t),
        "deletion_test": lambda x: deletion_test(model, x, torch.rand(2, 32, 32), t),
    }


@pytest.mark.parametrize("entry", ["grad_cam", "grad_cam_targets", "guided_grad_cam", "deletion_test"])
def test_raw_pixel_inputs_are_refused_or_flagged(entry):
    torch.manual_seed(0)
    model = create_model("resnet9", num_classes=10, width=0.125).eval()
    call = _entry_points(model)[entry]
    pixels = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    for raw in (pixels, pixels.long()):
        with pytest.raises(ConfigError) as e:
            call(raw)
        msg = str(e.value)
        assert msg.startswith("x: ") and str(raw.dtype) in msg and "(2, 3, 32, 32)" in msg and "normalize" in msg
    with pytest.warns(UserWarning, match=r"^x: every value lies in \[0, 255\]"):
        call(pixels.float())
    # Normalized CIFAR images never trip the rule, even the extremes: all-white and all-black images.
    extremes = torch.stack([torch.full((3, 32, 32), 255, dtype=torch.uint8), torch.zeros(3, 32, 32, dtype=torch.uint8)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for x in (
            normalize(extremes, CIFAR_MEAN, CIFAR_STD),
            normalize(extremes[:1], CIFAR_MEAN, CIFAR_STD).expand(2, -1, -1, -1),
        ):
            call(x)


class _RegionModel(nn.Module):
    """Class 1's logit is the mean of the top-left 8x8 block; class 0's is fixed: only that block matters."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(4.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x[:, :, :8, :8].mean(dim=(1, 2, 3)) * self.w
        return torch.stack([torch.zeros_like(s), s], dim=1)


def test_masks_remove_exactly_the_requested_pixels():
    g = torch.Generator().manual_seed(0)
    cams = torch.rand(5, 10, 10, generator=g)
    m = top_mask(cams, 0.2, g)
    assert m.shape == (5, 10, 10) and (m.flatten(1).sum(1) == 20).all()
    threshold = cams.flatten(1).sort(1, descending=True).values[:, 19]
    assert (cams[m].view(5, 20) >= threshold[:, None]).all()
    r = random_mask(5, 10, 10, 0.2, g)
    assert (r.flatten(1).sum(1) == 20).all() and not torch.equal(r[0], r[1])
    blob = random_region_mask(200, 16, 16, 0.2, (2, 2), g)
    assert (blob.flatten(1).sum(1) == 51).all()

    def neighbours(m: torch.Tensor) -> float:  # share of masked pixels whose right neighbour is masked too
        return ((m[:, :, :-1] & m[:, :, 1:]).sum() / m[:, :, :-1].sum()).item()

    assert neighbours(blob) > 0.8  # a region ...
    assert neighbours(random_mask(200, 16, 16, 0.2, g)) < 0.4  # ... while random pixels are scattered (~0.2)
    flat = top_mask(torch.zeros(2, 10, 10), 0.2, g)  # all-zero maps: ties broken at random, count still exact
    assert (flat.flatten(1).sum(1) == 20).all() and not torch.equal(flat[0], flat[1])


def test_deletion_test_follows_the_map():
    model = _RegionModel()
    x = torch.full((4, 3, 16, 16), 2.0)
    on_region = torch.zeros(4, 16, 16)
    on_region[:, :8, :8] = 1.0  # top 64 of 256 pixels = 25%: deleting 20% stays inside the block
    elsewhere = torch.zeros(4, 16, 16)
    elsewhere[:, 8:, 8:] = 1.0
    target = torch.ones(4, dtype=torch.long)
    good = deletion_test(model, x, on_region, target, fraction=0.2)
    bad = deletion_test(model, x, elsewhere, target, fraction=0.2)
    assert good.cam_drop > good.random_drop > 0 and good.cam_drop > good.region_drop and good.win_rate == 1.0
    assert bad.cam_drop == pytest.approx(0.0, abs=1e-6) and bad.win_rate == 0.0
    with pytest.raises(ConfigError, match="fraction"):
        deletion_test(model, x, on_region, target, fraction=1.5)


def test_deletion_numbers_of_a_model_that_hardly_reacts_are_flagged():
    x = torch.full((4, 3, 16, 16), 2.0)
    on_region = torch.zeros(4, 16, 16)
    on_region[:, :8, :8] = 1.0
    target = torch.ones(4, dtype=torch.long)
    confident = _RegionModel()
    unsure = _RegionModel()
    with torch.no_grad():
        unsure.w.fill_(0.01)  # logits 0 vs 0.02: p about 0.5 whatever is deleted, like a near-chance model
    flat = deletion_test(unsure, x, on_region, target, fraction=0.2)
    # the CAM still "wins" on every image, but by drops far below MIN_MEANINGFUL_DROP: that must be said
    assert flat.win_rate == 1.0 and 0 < flat.cam_drop < 0.005
    assert flat.drops_too_small and flat.as_dict()["drops_too_small"] is True
    assert flat.as_dict()["min_meaningful_drop"] == MIN_MEANINGFUL_DROP == 0.02
    real = deletion_test(confident, x, on_region, target, fraction=0.2)
    assert real.cam_drop > 0.1 and not real.drops_too_small and real.as_dict()["drops_too_small"] is False


def test_select_misclassified_orders():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    # rows 1, 2, 4 and 5 are wrong; their losses are ordered 5 > 2 > 1 > 4, confidences 2 > 5 > 4 > 1
    logits = torch.tensor([[5.0, 0, 0], [0, 1.0, 0], [0, 0, 4.0], [0, 3, 0], [0, 1.5, 1.4], [0, 0, -3.0]]).log_softmax(
        1
    )
    logits[5] = torch.tensor([2.5, 2.4, -3.0])
    losses = F.cross_entropy(logits, labels, reduction="none")
    wrong = [1, 2, 4, 5]
    by_loss = select_misclassified(logits, labels, 10, "loss").tolist()
    assert sorted(by_loss) == wrong and [losses[i].item() for i in by_loss] == sorted(
        [losses[i].item() for i in wrong], reverse=True
    )
    conf = logits.softmax(1).amax(1)
    by_conf = select_misclassified(logits, labels, 2, "confidence").tolist()
    assert len(by_conf) == 2 and conf[by_conf[0]] >= conf[by_conf[1]] >= max(conf[i] for i in wrong if i not in by_conf)
    r1 = select_misclassified(logits, labels, 4, "random", seed=1).tolist()
    assert sorted(r1) == wrong and r1 == select_misclassified(logits, labels, 4, "random", seed=1).tolist()
    assert any(select_misclassified(logits, labels, 4, "random", seed=s).tolist() != r1 for s in range(2, 8))
    with pytest.raises(ConfigError, match="order"):
        select_misclassified(logits, labels, 3, "worst")


def test_confusion_matrix_and_class_tables():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    preds = torch.tensor([0, 1, 1, 1, 0, 2, 2, 0, 2])
    cm = confusion_matrix(preds, labels, 4)
    assert cm.tolist() == [[1, 2, 0, 0], [1, 1, 0, 0], [1, 0, 3, 0], [0, 0, 0, 0]]
    acc = per_class_accuracy(cm)
    assert acc[:3].tolist() == pytest.approx([100 / 3, 50.0, 75.0]) and torch.isnan(acc[3])
    assert normalize_confusion(cm)[0].tolist() == pytest.approx([1 / 3, 2 / 3, 0, 0])
    assert most_confused(cm, 2) == [(0, 1, 2), (1, 0, 1)]
    assert len(most_confused(cm, 10)) == 3  # zero cells are not "confused"


def test_predict_in_batches_and_prediction_cache(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet9", num_classes=10, width=0.125).train()
    images = torch.randint(0, 256, (25, 3, 16, 16), dtype=torch.uint8)

    def norm(x):
        return x.float() / 255 - 0.5

    logits = predict(model, images, norm, batch_size=10)
    assert model.training  # mode restored
    with torch.no_grad():
        ref = model.eval()(norm(images))
    torch.testing.assert_close(logits, ref, rtol=1e-4, atol=1e-5)
    labels = torch.randint(0, 10, (25,))
    path = tmp_path / "predictions.pt"
    key = {"checkpoint": "best.pt", "size": 10, "mtime_ns": 5, "epoch": 3}
    save_predictions(path, logits, labels, key)
    got = load_predictions(path, key)
    assert got is not None and torch.equal(got[0], logits) and torch.equal(got[1], labels)
    assert got[0].dtype == torch.float32 and got[1].dtype == torch.int64
    assert load_predictions(path, {**key, "mtime_ns": 6}) is None  # a newer checkpoint invalidates the cache
    path.write_bytes(b"not a torch file")
    assert load_predictions(path, key) is None
