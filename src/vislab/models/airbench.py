"""airbench94: Keller Jordan's CIFAR-10 speed-run net (94% in 3.83 s on an A100), whitened first layer included."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vislab.errors import ConfigError
from vislab.models._layers import (
    DEFAULT_GROUPS,
    check_bn_momentum,
    check_common,
    check_positive_int,
    check_positive_number,
    make_norm,
    scale_channels,
    set_bn_momentum,
)
from vislab.models._registry import build_model, register_model

BLOCK_CHANNELS = (64, 256, 256)
WHITEN_KERNEL = 2
# airbench writes its BatchNorm momentum as 0.6, the weight of the old running value; torch's momentum is the
# weight of the new batch, so 1 - 0.6. Far above torch's 0.1: the statistics must keep up with a net that
# changes fast over ten epochs.
BN_MOMENTUM = 0.4
NORM_EPS = 1e-12  # airbench's: next to no floor under the batch variance
LOGIT_SCALE = 1 / 9
WHITEN_EPS = 5e-4  # added to each eigenvalue: a direction of tiny variance is not blown up into noise
WHITEN_CHUNK = 256  # images per step of the patch covariance, to bound the unfolded patches' memory


class ConvBlock(nn.Module):
    """conv 3x3 -> max-pool 2 -> norm -> GELU -> conv 3x3 -> norm -> GELU (airbench's ConvGroup)."""

    def __init__(self, in_ch: int, out_ch: int, norm: str, groups: int, eps: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        # Pool before the norm, as in Page's ResNet-9: the norm then runs on a 4x smaller map.
        self.norm1 = make_norm(norm, out_ch, groups, eps=eps)
        self.conv2 = nn.Conv2d(out_ch, out_ch, kernel_size=3, padding=1, bias=False)
        self.norm2 = make_norm(norm, out_ch, groups, eps=eps)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))  # (N, C_out, H/2, W/2)
        return self.act(self.norm2(self.conv2(x)))


class AirBench(nn.Module):
    """whitening conv 2x2 -> GELU -> three ConvBlocks -> global max-pool -> linear logits x logit_scale.

    The first layer's 2 * C * 2 * 2 filters (24 for RGB) are not learnt: `init_whitening` sets them from
    the training images' 2x2 patches and they stay frozen, as do their biases (zero). The norms' scales
    are frozen at 1 unless `train_norm_scale`, and `dirac_init` starts each 3x3 conv as an identity on its
    first input channels (an implicit residual), as airbench does.
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        norm: str = "batch",
        groups: int = DEFAULT_GROUPS,
        width: float = 1.0,
        widths: Sequence[int] = BLOCK_CHANNELS,
        logit_scale: float = LOGIT_SCALE,
        bn_momentum: float | None = None,
        norm_eps: float = NORM_EPS,
        train_norm_scale: bool = False,
        dirac_init: bool = True,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        width = check_common(norm, groups, width, num_classes, in_chans)
        if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or len(widths) != 3:
            raise ConfigError(
                f"model.widths: {widths!r} is not valid; airbench takes the channels of its three blocks, "
                f"e.g. [{', '.join(map(str, BLOCK_CHANNELS))}] (its default), before model.width scales them."
            )
        for c in widths:
            check_positive_int("widths", c)
        self.logit_scale = check_positive_number("logit_scale", logit_scale)
        norm_eps = check_positive_number("norm_eps", norm_eps)
        bn_momentum = check_bn_momentum(bn_momentum, norm)

        whiten_ch = 2 * in_chans * WHITEN_KERNEL**2  # each eigen-direction with both signs: GELU passes one half
        # No padding: a 32x32 image gives a 31x31 map, which the three poolings take to 15, 7 and 3.
        self.whiten = nn.Conv2d(in_chans, whiten_ch, kernel_size=WHITEN_KERNEL, padding=0, bias=True)
        self.whiten.requires_grad_(False)
        nn.init.zeros_(self.whiten.bias)
        self.act = nn.GELU()
        c1, c2, c3 = (scale_channels(c, width) for c in widths)
        self.block1 = ConvBlock(whiten_ch, c1, norm, groups, norm_eps)
        self.block2 = ConvBlock(c1, c2, norm, groups, norm_eps)
        self.block3 = ConvBlock(c2, c3, norm, groups, norm_eps)

        self.num_features = c3
        self.gradcam_layer = "block3"
        self.cam_layers = ("block1", "block2", "block3")  # the last three stages: candidates for a layer sweep of CAMs
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(self.num_features, num_classes, bias=False)

        # torch's default init (as airbench keeps it), then the identity on the first filters.
        for block in (self.block1, self.block2, self.block3):
            for m in block.modules():
                if isinstance(m, nn.Conv2d) and dirac_init:
                    w = m.weight.detach()
                    nn.init.dirac_(w[: w.shape[1]])
                elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                    m.weight.requires_grad_(bool(train_norm_scale))
        # airbench's own BatchNorm momentum unless the caller chose one.
        set_bn_momentum(self, BN_MOMENTUM if norm == "batch" and bn_momentum is None else bn_momentum)

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = WHITEN_EPS) -> None:
        """Set the frozen first layer from normalized training images (N, C, H, W): its filters whiten 2x2 patches.

        The filters are the eigenvectors of the patches' second-moment matrix (uncentred, as airbench's),
        each divided by sqrt(eigenvalue + eps), strongest first, then the same filters negated; biases zero.
        The eigenvectors' signs are fixed (largest entry positive) so the result does not depend on the
        LAPACK build. Computed in float64 on the CPU, in chunks of images.
        """
        conv = self.whiten
        c, k = conv.in_channels, conv.kernel_size[0]
        if images.ndim != 4 or images.shape[1] != c or min(images.shape[2:]) < k or images.shape[0] == 0:
            raise ValueError(f"init_whitening needs a (N, {c}, H, W) batch with H, W >= {k}, got {tuple(images.shape)}")
        d = c * k * k
        second_moment = torch.zeros(d, d, dtype=torch.float64)
        count = 0
        for chunk in images.split(WHITEN_CHUNK):
            # unfold orders each patch (C, kh, kw), as a conv weight's row is laid out.
            patches = F.unfold(chunk.detach().to("cpu", torch.float64), kernel_size=k)  # (B, d, L)
            patches = patches.transpose(1, 2).reshape(-1, d)  # (B * L, d)
            second_moment += patches.T @ patches
            count += patches.shape[0]
        eigvals, eigvecs = torch.linalg.eigh(second_moment / count)  # ascending; eigvecs in columns
        eigvals, eigvecs = eigvals.flip(0), eigvecs.flip(1).T  # (d,), (d, d): one direction per row
        signs = torch.sign(eigvecs.gather(1, eigvecs.abs().argmax(1, keepdim=True)))
        filters = (eigvecs * signs) / torch.sqrt(eigvals.clamp(min=0) + eps)[:, None]  # (d, d)
        filters = filters.reshape(d, c, k, k)
        conv.weight.copy_(torch.cat([filters, -filters]).to(conv.weight))  # (2d, C, k, k)
        conv.bias.zero_()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.whiten(x))  # (N, 24, H-1, W-1)
        x = self.block1(x)  # (N, 64w, (H-1)/2, (W-1)/2)
        x = self.block2(x)  # (N, 256w, (H-1)/4, (W-1)/4)
        return self.block3(x)  # (N, 256w, (H-1)/8, (W-1)/8): 3x3 at 32x32

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x).flatten(1)  # (N, C)
        return self.fc(x) * self.logit_scale  # (N, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def airbench(**kwargs: Any) -> AirBench:
    """airbench94's net: 1,972,792 parameters at width 1 and 10 classes (1,971,328 trained)."""
    return build_model(AirBench, kwargs)
