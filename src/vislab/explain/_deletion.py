"""Deletion test: does removing the most-attended pixels hurt the target class more than removing random ones?"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ._gradcam import check_images, explaining

DELETE_FRACTION = 0.2
RANDOM_REPEATS = 4  # random masks per image, averaged: one draw alone is a noisy baseline
TIE_JITTER = 1e-6  # CAM values closer than this (flat or all-zero maps) are ordered at random
DELETION_BATCH = 1024  # images per forward pass of the deletion variants
# Mean drop of p(target) below which a deletion test says nothing. When neither removing the top-CAM
# pixels nor removing a random region of the same size moves p(target) by 0.02 on average, the model
# hardly reacts to losing a fifth of the image (typical of a near-chance model, p about 1 / classes),
# and "CAM drop > region drop" compares noise: 100% wins on drops of 0.003 mean nothing. 0.02 is a
# judgement, not a measured bound: small beside any drop worth reporting, large beside rounding.
MIN_MEANINGFUL_DROP = 0.02


@dataclass
class DeletionResult:
    """Per-image target-class probabilities: intact, with the top-CAM pixels removed, and with two baselines.

    Random pixels scatter the deletion over the whole image, which hurts a CNN by itself (it looks like
    noise), so a second baseline removes a random *region* of the same size and shape statistics as a
    CAM's: the top pixels of a random map drawn at the CAM's grid and upsampled the same way.
    """

    fraction: float
    p_orig: Tensor  # (N,)
    p_cam: Tensor  # (N,) top `fraction` of pixels by CAM removed
    p_random: Tensor  # (N,) random `fraction` of pixels removed, mean over the repeats
    p_region: Tensor  # (N,) a random smooth region of `fraction` removed, mean over the repeats

    def _mean(self, t: Tensor) -> float:
        return float(t.mean()) if t.numel() else float("nan")

    @property
    def cam_drop(self) -> float:
        """Mean drop of the target probability when the most-attended pixels are removed."""
        return self._mean(self.p_orig - self.p_cam)

    @property
    def random_drop(self) -> float:
        return self._mean(self.p_orig - self.p_random)

    @property
    def region_drop(self) -> float:
        return self._mean(self.p_orig - self.p_region)

    @property
    def win_rate(self) -> float:
        """Share of images whose target probability fell further under CAM deletion than under random-region deletion."""
        return self._mean((self.p_cam < self.p_region).float())

    @property
    def drops_too_small(self) -> bool:
        """True when both the CAM drop and the random-region drop are below MIN_MEANINGFUL_DROP in size:
        the model hardly reacts to deleting pixels, so neither the drops nor the win rate say anything
        about the maps. Also True for an empty test (no images)."""
        drops = (self.cam_drop, self.region_drop)
        return not all(math.isfinite(d) for d in drops) or max(abs(d) for d in drops) < MIN_MEANINGFUL_DROP

    def as_dict(self) -> dict[str, float | bool]:
        return {
            "images": int(self.p_orig.numel()),
            "fraction": self.fraction,
            "p_orig": self._mean(self.p_orig),
            "cam_drop": self.cam_drop,
            "random_drop": self.random_drop,
            "region_drop": self.region_drop,
            "win_rate": self.win_rate,
            "drops_too_small": self.drops_too_small,
            "min_meaningful_drop": MIN_MEANINGFUL_DROP,
        }


def top_mask(cams: Tensor, fraction: float, generator: torch.Generator | None = None) -> Tensor:
    """(N, H, W) bool: the round(fraction * H * W) highest-CAM pixels of each map; ties broken at random."""
    n, h, w = cams.shape
    k = round(fraction * h * w)
    flat = cams.reshape(n, h * w).float()
    peak = flat.amax(dim=1, keepdim=True).clamp_min(1e-12)
    jitter = torch.rand(flat.shape, generator=generator, device=generator.device if generator is not None else "cpu")
    key = flat / peak + TIE_JITTER * jitter.to(flat.device)  # scale-free, so the jitter only breaks near-ties
    idx = key.topk(k, dim=1).indices
    return torch.zeros(n, h * w, dtype=torch.bool, device=cams.device).scatter_(1, idx, True).view(n, h, w)


def random_mask(
    n: int,
    h: int,
    w: int,
    fraction: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """(N, H, W) bool: round(fraction * H * W) pixels of each image, drawn uniformly without replacement."""
    k = round(fraction * h * w)
    keys = torch.rand(n, h * w, generator=generator, device=generator.device if generator is not None else "cpu")
    idx = keys.argsort(dim=1)[:, :k].to(device)
    return torch.zeros(n, h * w, dtype=torch.bool, device=device).scatter_(1, idx, True).view(n, h, w)


def random_region_mask(
    n: int,
    h: int,
    w: int,
    fraction: float,
    grid: tuple[int, int],
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """(N, H, W) bool: the top `fraction` of a random (grid) map upsampled bilinearly, i.e. a CAM-like random blob."""
    noise = torch.rand(n, 1, *grid, generator=generator, device=generator.device if generator is not None else "cpu")
    smooth = F.interpolate(noise.to(device), size=(h, w), mode="bilinear", align_corners=False)[:, 0]  # (N, H, W)
    return top_mask(smooth, fraction, generator)


def deletion_test(
    model: nn.Module,
    x: Tensor,
    cams: Tensor,
    targets: Tensor,
    *,
    fraction: float = DELETE_FRACTION,
    repeats: int = RANDOM_REPEATS,
    fill: float = 0.0,
    region_grid: tuple[int, int] | None = None,
    seed: int = 0,
) -> DeletionResult:
    """Target-class probability of normalized images `x` (N, C, H, W) intact, with the top `fraction` of pixels
    by `cams` (N, H, W) set to `fill`, with a random `fraction` of pixels set to `fill`, and with a random
    region of that size set to `fill` (both baselines: mean of `repeats` draws).

    `fill` is in normalized units: 0 is the training-set mean colour, i.e. the pixel carries no information.
    `region_grid` is the resolution the random regions are drawn at, best the CAM layer's output size
    (default H // 8 x W // 8, the last stage of the CIFAR ResNets). All variants run as one batched
    forward in eval mode; the model's modes are restored afterwards.
    """
    check_images(x, "x", stacklevel=2)
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"fraction = {fraction!r}: the share of pixels to remove must lie strictly between 0 and 1.")
    if repeats < 1:
        raise ConfigError(f"repeats = {repeats!r}: at least one random mask per image is needed.")
    n, _, h, w = x.shape
    if cams.shape != (n, h, w):
        raise ConfigError(
            f"cams has shape {tuple(cams.shape)}; the deletion test needs one map per image at image size {(n, h, w)} (use upsample=True)."
        )
    grid = region_grid or (max(1, h // 8), max(1, w // 8))
    param = next(model.parameters(), None)
    device = param.device if param is not None else x.device
    gen = torch.Generator().manual_seed(seed)
    x = x.to(device, torch.float32)
    masks = torch.cat(
        [top_mask(cams.to(device), fraction, gen)]
        + [random_mask(n, h, w, fraction, gen, device) for _ in range(repeats)]
        + [random_region_mask(n, h, w, fraction, grid, gen, device) for _ in range(repeats)]
    )  # ((1 + 2R) N, H, W)
    k = 2 + 2 * repeats
    variants = torch.cat([x, x.repeat(k - 1, 1, 1, 1).masked_fill(masks[:, None], fill)])  # (k N, C, H, W)
    t = torch.as_tensor(targets).long().to(device).repeat(k)
    with explaining(model), torch.no_grad():
        # chunked so that a large sample (k N images) never needs one huge activation batch
        probs = torch.cat(
            [
                model(variants[i : i + DELETION_BATCH])
                .float()
                .softmax(dim=1)
                .gather(1, t[i : i + DELETION_BATCH, None])[:, 0]
                .cpu()
                for i in range(0, variants.shape[0], DELETION_BATCH)
            ]
        ).view(k, n)
    return DeletionResult(
        fraction=fraction,
        p_orig=probs[0],
        p_cam=probs[1],
        p_random=probs[2 : 2 + repeats].mean(0),
        p_region=probs[2 + repeats :].mean(0),
    )
