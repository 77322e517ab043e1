"""CAM methods: each against torchcam 0.5.0 or the paper's formula, the layer sweep, batching, hooks and model state."""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vislab.errors import ConfigError
from vislab.explain import (
    CAM_METHODS,
    cam,
    cam_grid,
    cam_targets,
    check_method,
    guided_grad_cam,
    smooth_guided_grad_cam,
)
from vislab.models import create_model, get_cam_layers, list_models

pytestmark = pytest.mark.usefixtures("one_thread")

LAYERS = ("layer1", "layer2", "layer3")  # resnet9's cam_layers: 16x16, 8x8 and 4x4 grids at 32x32
CLASS_SPECIFIC = tuple(m for m in CAM_METHODS if m != "eigencam")


@pytest.fixture(scope="module")
def net():
    """A width-0.25 ResNet-9 with random weights in eval mode, three 32x32 images and one target class each."""
    torch.manual_seed(0)
    model = create_model("resnet9", num_classes=10, width=0.25).eval()
    g = torch.Generator().manual_seed(1)
    return model, torch.randn(3, 3, 32, 32, generator=g), torch.tensor([1, 4, 7])


def _tiny() -> nn.Module:
    """Two conv stages and a linear head over the whole last map: its gradient varies with the location, so
    HiResCAM's per-location products differ from Grad-CAM's averaged weights (a pooled head would make them equal)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 6, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 8 * 8, 5),
    ).eval()


def _normalize(cams: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """torchcam's per-image min-max scaling (core._CAM._normalize)."""
    cams = cams - cams.amin(dim=(1, 2), keepdim=True)
    return cams / (cams.amax(dim=(1, 2), keepdim=True) + eps)


def _upsample(a: torch.Tensor, size: int = 32) -> torch.Tensor:
    return F.interpolate(a, size=(size, size), mode="bilinear", align_corners=False)


def _activations_and_gradients(model, x, t, names):
    """The layers' outputs and d logit_t / d output, by the test's own hooks and autograd call."""
    store = {}
    handles = [
        model.get_submodule(n).register_forward_hook(lambda _m, _i, o, n=n: store.__setitem__(n, o)) for n in names
    ]
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    grads = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), [store[n] for n in names])
    return [store[n].detach() for n in names], [g.detach() for g in grads]


def test_torchcam_imports_no_torchvision():
    import torchcam.methods  # noqa: F401

    assert "torchvision" not in sys.modules


@pytest.mark.parametrize("method", ["gradcam", "xgradcam", "layercam"])
def test_gradient_methods_match_torchcam(net, method):
    from torchcam.methods import GradCAM, LayerCAM, XGradCAM

    model, x, t = net
    extractor = {"gradcam": GradCAM, "xgradcam": XGradCAM, "layercam": LayerCAM}[method]
    with extractor(model, list(LAYERS)) as ex:
        refs = ex(t.tolist(), model(x), normalized=False)  # one raw map per layer, at the layer's grid
    for name, ref in zip(LAYERS, refs):
        ours = cam(model, x, t, method=method, layer=name, upsample=False)
        assert ours.shape == ref.shape and ref.amax() > 0
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-6 * float(ref.amax()))


def test_gradcam_pp_follows_the_paper_on_torchcam_gradients(net):
    """torchcam 0.5.0's GradCAMpp is not the paper's Grad-CAM++, so its map cannot be the reference; its hooked
    activations and gradients are, with eq. 19 of Chattopadhay et al. written out here.

    torchcam divides alpha in place through a boolean-mask index (`alpha[idx][mask].div_(...)`), which divides a
    copy: its alpha stays g^2 and its weights are sum_ij g^2 ReLU(g). (The denominator it meant to use,
    2 g^2 + sum_ab A_ab g_ab^3, differs from the paper's 2 g^2 + g^3 sum_ab A_ab as well.) The first assertion pins
    that reading of torchcam, so the tensors taken from it are the ones its own map is built from.
    """
    from torchcam.methods import GradCAMpp

    model, x, t = net
    with GradCAMpp(model, list(LAYERS)) as ex:
        refs = ex(t.tolist(), model(x), normalized=False)
        acts, grads = list(ex.hook_a), list(ex.hook_g)
    for name, ref, a, g in zip(LAYERS, refs, acts, grads):
        torchcam_weights = (g.pow(2) * F.relu(g)).sum(dim=(2, 3), keepdim=True)
        torch.testing.assert_close(ref, F.relu((torchcam_weights * a).sum(1)), rtol=1e-4, atol=1e-9)

        denom = 2 * g.pow(2) + g.pow(3) * a.sum(dim=(2, 3), keepdim=True)
        alpha = torch.where(denom != 0, g.pow(2) / denom, torch.zeros_like(denom))
        paper = F.relu(((alpha * F.relu(g)).sum(dim=(2, 3), keepdim=True) * a).sum(1))
        ours = cam(model, x, t, method="gradcam++", layer=name, upsample=False)
        assert paper.amax() > 0
        torch.testing.assert_close(ours, paper, rtol=1e-4, atol=1e-6 * float(paper.amax()))
        assert not torch.allclose(_normalize(ours), _normalize(ref), atol=1e-2)  # the two conventions do differ


def test_scorecam_matches_torchcam_like_for_like(net):
    """Score-CAM as the paper and the authors' code define it, against torchcam's ScoreCAM set up to compute the same.

    torchcam differs from the paper twice. (1) It min-max scales each channel on the layer grid and then upsamples;
    the paper upsamples first. A `reshape_transform` that upsamples the hooked activations makes torchcam scale the
    upsampled channel. (2) Its weights are softmax over channels of logit_c(x * mask_k) - logit_c(x); the paper's are
    p_c(x * mask_k), the softmax over classes. With log p_c as torchcam's target, its weights become
    p_c(x * mask_k) / sum_j p_c(x * mask_j): the paper's up to a factor per image, which its min-max scaling removes.
    torchcam then sums the upsampled channels, ours are summed on the grid and upsampled here: the same map, because
    ResNet-9's stage outputs are non-negative and so is every weight, which makes the ReLU a no-op on both sides.
    """
    from torchcam.methods import ScoreCAM

    model, x, t = net
    targets = [lambda out, c=c: out.log_softmax(0)[c] for c in t.tolist()]
    with ScoreCAM(model, list(LAYERS), batch_size=64, reshape_transform=_upsample) as ex:
        model(x)
        refs = ex(targets=targets)  # normalized per image to [0, 1]
        assert all(bool((a >= 0).all()) for a in ex.hook_a)  # the no-op ReLU that the comparison relies on
    grid = cam_grid(model, x, {"t": t}, methods=["scorecam"], layers=LAYERS, upsample=False)
    for name, ref in zip(LAYERS, refs):
        ours = grid[("scorecam", name)].maps["t"]
        assert ref.shape == (3, 32, 32) and ours.shape[1:] == grid[("scorecam", name)].grid
        torch.testing.assert_close(_normalize(_upsample(ours[:, None])[:, 0]), ref, rtol=0, atol=2e-5)


def test_hirescam_matches_the_papers_formula():
    model = _tiny()
    x, t = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2)), torch.tensor([0, 2, 4])
    names = ("1", "3")
    acts, grads = _activations_and_gradients(model, x, t, names)
    for name, a, g in zip(names, acts, grads):
        expected = F.relu((g * a).sum(1))  # Draelos & Carin: gradient times activation, summed over channels
        ours = cam(model, x, t, method="hirescam", layer=name, upsample=False)
        assert expected.amax() > 0
        torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-7)
        assert not torch.allclose(ours, cam(model, x, t, method="gradcam", layer=name, upsample=False))


def test_eigencam_matches_the_papers_formula():
    model = _tiny()
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([0, 2, 4])
    for name in ("1", "3"):
        with torch.no_grad():
            a = model[: int(name) + 1](x).double()  # the layer's output, (N, K, h, w)
        expected = []
        for img in a:  # the first principal component from the covariance's eigenvectors (not an SVD)
            m = img.flatten(1).T  # (h*w, K)
            centred = m - m.mean(0)
            _, vecs = torch.linalg.eigh(centred.T @ centred)
            proj = centred @ vecs[:, -1]
            total = m.sum(1)
            if torch.corrcoef(torch.stack([proj, total]))[0, 1] < 0:
                proj = -proj
            expected.append(F.relu(proj).reshape(img.shape[1:]))
        expected = torch.stack(expected).float()
        ours = cam(model, x, t, method="eigencam", layer=name, upsample=False)
        assert expected.amax() > 0
        torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5 * float(expected.amax()))


def test_cam_grid_equals_cam_targets_and_upsamples(net):
    model, x, t = net
    x, targets = x[:2], {"a": t[:2], "b": torch.tensor([5, 0])}
    grid = cam_grid(model, x, targets, methods=CAM_METHODS, layers=LAYERS, upsample=False)
    assert set(grid) == {(m, name) for m in CAM_METHODS for name in LAYERS}
    for (method, name), res in grid.items():
        single = cam_targets(model, x, targets, method=method, layer=name)  # upsampled to the input size
        assert res.grid == single.grid and set(res.maps) == {"a", "b"}
        torch.testing.assert_close(res.logits, single.logits)
        for key, low in res.maps.items():
            assert low.shape == (2, *res.grid) and bool((low >= 0).all())
            torch.testing.assert_close(single.maps[key], _upsample(low[:, None])[:, 0])


def test_scorecam_chunk_size_does_not_change_the_maps(net):
    model, x, t = net
    maps = [
        cam(model, x[:2], t[:2], method="scorecam", layer="layer1", upsample=False, score_batch=b)
        for b in (1, 7, 10**6)
    ]
    assert maps[0].amax() > 0
    for m in maps[1:]:
        torch.testing.assert_close(m, maps[0], rtol=1e-5, atol=1e-7)


def test_one_forward_serves_every_target_set(net):
    model, x, t = net
    batches = []
    handle = model.register_forward_pre_hook(lambda _m, inp: batches.append(inp[0].shape[0]))
    try:
        one, three = {"a": t}, {"a": t, "b": t.flip(0), "c": torch.tensor([0, 0, 0])}
        counts = {}
        for method in CAM_METHODS:
            for name, targets in (("one", one), ("three", three)):
                batches.clear()
                cam_targets(model, x, targets, method=method, layer="layer2", score_batch=7)
                counts[method, name] = list(batches)
        batches.clear()
        cam_grid(model, x, three, methods=[m for m in CAM_METHODS if m != "scorecam"], layers=LAYERS)
        assert batches == [3]  # every gradient method, EigenCAM, every layer: one forward
    finally:
        handle.remove()
    for method in CAM_METHODS:
        assert counts[method, "one"] == counts[method, "three"]
        if method != "scorecam":
            assert counts[method, "one"] == [3]
    # Score-CAM: the forward, then every (image, non-constant channel) pair once, at most 7 per pass
    with torch.no_grad():
        a = model.layer2(model.layer1(model.prep(x))).flatten(2)
    pairs = int((a.amax(2) > a.amin(2)).sum())
    scored = counts["scorecam", "three"]
    assert scored[0] == 3 and sum(scored[1:]) == pairs and max(scored[1:]) <= 7
    assert len(scored) == 1 + math.ceil(pairs / 7)


def test_target_sets_give_their_own_maps_except_eigencam(net):
    model, x, t = net
    other = (t + 3) % 10
    grid = cam_grid(model, x, {"a": t, "b": other}, methods=CAM_METHODS, layers=("layer2",))
    for method in CAM_METHODS:
        maps = grid[(method, "layer2")].maps
        if method == "eigencam":
            assert torch.equal(maps["a"], maps["b"]) and maps["a"].amax() > 0
        else:
            torch.testing.assert_close(maps["a"], cam(model, x, t, method=method, layer="layer2"))
            for i in range(x.shape[0]):
                assert not torch.allclose(maps["a"][i], maps["b"][i]), (method, i)


def test_check_method_and_argument_errors(net):
    model, x, t = net
    assert [check_method(m) for m in CAM_METHODS] == list(CAM_METHODS)
    with pytest.raises(ConfigError) as e:
        check_method("gradcam+")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("method = 'gradcam+'") and all(m in msg for m in CAM_METHODS)
    with pytest.raises(ConfigError, match="^method = 'GradCAM'"):
        cam(model, x, t, method="GradCAM")
    with pytest.raises(ConfigError, match="^score_batch = 0"):
        cam(model, x, t, method="scorecam", score_batch=0)
    with pytest.raises(ConfigError, match="^layers = 'layer3'"):
        cam_grid(model, x, {"t": t}, methods=["gradcam"], layers="layer3")
    with pytest.raises(ConfigError, match="^methods = "):
        cam_grid(model, x, {"t": t}, methods=[], layers=LAYERS)
    with pytest.raises(ConfigError, match="layer = 'layer9'"):
        cam_grid(model, x, {"t": t}, methods=["eigencam"], layers=["layer3", "layer9"])


def _hook_count(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks)
        + len(m._forward_pre_hooks)
        + len(m._backward_hooks)
        + len(getattr(m, "_backward_pre_hooks", {}))
        for m in model.modules()
    )


class _FailAt:
    """A forward hook that raises on its n-th call: a model that breaks mid-forward."""

    def __init__(self, at: int) -> None:
        self.at, self.calls = at, 0

    def __call__(self, _mod, _inp, _out) -> None:
        self.calls += 1
        if self.calls == self.at:
            raise RuntimeError("broken model")


@pytest.mark.parametrize("method", CAM_METHODS)
def test_hooks_released_and_model_state_unchanged(method):
    torch.manual_seed(0)
    model = create_model("resnet9", num_classes=10, width=0.125)
    model.train()
    model.layer1.eval()  # a mixed-mode model: every module's own flag must come back
    model.prep[0].weight.requires_grad_(False)
    model.fc.weight.grad = torch.full_like(model.fc.weight, 0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    hooks = _hook_count(model)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([1, 2])

    res = cam_targets(model, x, {"a": t, "b": t.flip(0)}, method=method)
    assert res.maps["a"].shape == (2, 32, 32) and res.maps["a"].amax() > 0
    cam_grid(model, x, {"a": t}, methods=[method, "gradcam"], layers=("layer2", "layer3"))
    with pytest.raises(ConfigError, match="target"):
        cam(model, x, torch.tensor([1, 99]), method=method)  # fails after the hooks are in place
    with pytest.raises(ConfigError, match="layer"):
        cam(model, x, t, method=method, layer="layer9")
    if method == "gradcam":  # the pixel-level maps on top of it: captum's hooks on every ReLU come off too
        guided_grad_cam(model, x, t)
        smooth_guided_grad_cam(model, x, t, samples=2)
    # Score-CAM's second forward is its first masked pass; the others make a single forward.
    for at in (1, 2) if method == "scorecam" else (1,):
        fail = _FailAt(at)
        handle = model.layer2.register_forward_hook(fail)
        try:
            for run in (
                lambda: cam(model, x, t, method=method),
                lambda: cam_grid(model, x, {"a": t}, methods=[method], layers=LAYERS),
            ):
                fail.calls = 0
                with pytest.raises(RuntimeError, match="broken model"):
                    run()
        finally:
            handle.remove()

    assert _hook_count(model) == hooks
    assert [m.training for m in model.modules()] == modes
    assert not model.prep[0].weight.requires_grad and model.fc.weight.requires_grad
    assert torch.equal(model.fc.weight.grad, torch.full_like(model.fc.weight, 0.5))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "fc.weight")
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm running stats included


@pytest.mark.parametrize("name", list_models())
def test_cam_layers_are_feature_maps_that_shrink(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, width=0.25).eval()
    layers = get_cam_layers(model)
    assert len(layers) == 3 and layers[-1] == model.gradcam_layer
    shapes = {}
    handles = [
        model.get_submodule(n).register_forward_hook(lambda _m, _i, o, n=n: shapes.__setitem__(n, o.shape))
        for n in layers
    ]
    try:
        with torch.no_grad():
            model(torch.randn(2, 3, 32, 32))
    finally:
        for h in handles:
            h.remove()
    sizes = [shapes[n] for n in layers]
    assert all(len(s) == 4 for s in sizes)
    for coarse, fine in zip(sizes[1:], sizes[:-1]):
        assert coarse[2] <= fine[2] and coarse[3] <= fine[3] and coarse[2] * coarse[3] < fine[2] * fine[3]
    assert get_cam_layers(torch.compile(model)) == layers  # torch.compile's wrapper is looked through


def test_cam_layers_fall_back_to_the_gradcam_layer():
    model = _tiny()
    with pytest.raises(ConfigError, match="gradcam_layer"):
        get_cam_layers(model)
    model.gradcam_layer = "3"
    assert get_cam_layers(model) == ("3",)
    model.cam_layers = ("1", "9")
    with pytest.raises(ConfigError, match="'9'"):
        get_cam_layers(model)
