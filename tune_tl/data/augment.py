"""Training augmentation on batched tensors, on the trial's device, each image drawn independently.

The classic fine-tuning augmentations — random resized crop, horizontal flip, small rotation,
brightness/contrast jitter — as one affine warp (``affine_grid`` + ``grid_sample``) and two
multiplies per batch. torchvision's ``transforms.v2`` applied to a batch tensor draws one set of
random parameters for the whole batch; here every image gets its own, which is what the recipes
mean, and it stays a few batched kernels on the GPU.

The policy augmentations (``auto_augment``: RandAugment, TrivialAugment) are torchvision's
``transforms.v2`` on the uint8 batch, on the same device, before the float ops; they are applied image
by image so that each image draws its own operations.

Example:
    >>> aug = Augment(AugmentConfig(crop_scale=0.5, flip=True), seed=0)
    >>> out = aug(torch.zeros(8, 3, 32, 32))   # float pixels 0..255, same shape back
    >>> out = Augment(AugmentConfig(auto_augment="randaugment")).policy(uint8_batch)  # uint8 back
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations to apply; the defaults switch every one off."""

    crop_scale: float = 1.0  #: smallest area fraction of the random resized crop; 1.0 = off
    flip: bool = False  #: random horizontal flip with probability 0.5
    rotate: float = 0.0  #: rotation drawn from ±rotate degrees; 0 = off
    jitter: float = 0.0  #: brightness and contrast factors drawn from 1 ± jitter; 0 = off
    auto_augment: str = "none"  #: none | randaugment | trivialaugment (per image, on uint8)

    @property
    def active(self) -> bool:
        return self.crop_scale < 1.0 or self.flip or self.rotate > 0 or self.jitter > 0 or self.auto_augment != "none"

    @property
    def geometric(self) -> bool:
        return self.crop_scale < 1.0 or self.flip or self.rotate > 0


class Augment:
    """Callable ``float (B, 3, H, W) pixels 0..255 → same shape``; seeded, so a trial is repeatable."""

    def __init__(self, cfg: AugmentConfig, seed: int = 0):
        self.cfg = cfg
        # Parameters are drawn on the CPU (a few numbers per image) so the stream is the same on any device.
        self.gen = torch.Generator().manual_seed(seed)
        self._policy = auto_augment_policy(cfg.auto_augment)

    def policy(self, x: torch.Tensor) -> torch.Tensor:
        """The ``auto_augment`` policy on a uint8 ``(B, 3, H, W)`` batch, each image on its own; same shape and dtype.

        torchvision draws the operations from torch's global generator (seeded and checkpointed by the loop).
        """
        if self._policy is None:
            return x
        return torch.stack([self._policy(image) for image in x])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.cfg.active:
            return x
        if self.cfg.geometric:
            x = self._warp(x)
        if self.cfg.jitter > 0:
            x = self._jitter(x)
        return x

    def _uniform(self, n: int, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=self.gen, dtype=torch.float64)

    def _warp(self, x: torch.Tensor) -> torch.Tensor:
        """Crop, flip and rotate in one affine resampling: output grid → input coordinates."""
        n = len(x)
        w = h = torch.ones(n, dtype=torch.float64)
        cx = cy = torch.zeros(n, dtype=torch.float64)
        if self.cfg.crop_scale < 1.0:
            area = self._uniform(n, self.cfg.crop_scale, 1.0)
            ratio = torch.exp(self._uniform(n, math.log(3 / 4), math.log(4 / 3)))
            w = torch.sqrt(area * ratio).clamp(max=1.0)  # crop size as a fraction of the side
            h = torch.sqrt(area / ratio).clamp(max=1.0)
            cx = self._uniform(n, -1.0, 1.0) * (1 - w)  # centre, keeping the crop inside the image
            cy = self._uniform(n, -1.0, 1.0) * (1 - h)
        sign = torch.ones(n, dtype=torch.float64)
        if self.cfg.flip:
            sign = torch.where(torch.rand(n, generator=self.gen) < 0.5, -1.0, 1.0).double()
        angle = torch.zeros(n, dtype=torch.float64)
        if self.cfg.rotate > 0:
            angle = torch.deg2rad(self._uniform(n, -self.cfg.rotate, self.cfg.rotate))
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack(
            [
                torch.stack([cos * w * sign, -sin * h, cx], dim=1),
                torch.stack([sin * w * sign, cos * h, cy], dim=1),
            ],
            dim=1,
        ).to(device=x.device, dtype=x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _jitter(self, x: torch.Tensor) -> torch.Tensor:
        """Brightness (scale) then contrast (blend with the image's mean grey), clamped to 0..255."""
        n, j = len(x), self.cfg.jitter
        brightness = self._uniform(n, 1 - j, 1 + j).to(x.device, x.dtype).view(n, 1, 1, 1)
        contrast = self._uniform(n, 1 - j, 1 + j).to(x.device, x.dtype).view(n, 1, 1, 1)
        x = x * brightness
        grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).mean(dim=(1, 2)).view(n, 1, 1, 1)
        return ((x - grey) * contrast + grey).clamp(0, 255)


def auto_augment_policy(name: str):
    """torchvision's transform for ``auto_augment`` (default settings), or ``None`` for ``none``."""
    from torchvision.transforms import v2

    if name == "none":
        return None
    if name == "randaugment":
        return v2.RandAugment()
    if name == "trivialaugment":
        return v2.TrivialAugmentWide()
    raise ValueError(f"unknown auto_augment {name!r}; expected none, randaugment or trivialaugment")
