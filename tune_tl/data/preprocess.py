"""The one preprocessing rule: how an image becomes the network's input, in training and in ``predict``.

An image is converted to RGB (transparency composited on white), its shorter side is scaled to the
resolution with bicubic interpolation and the centre square is kept (the usual ImageNet evaluation
crop, so a 4:3 photo is not squashed); the uint8 pixels are then normalised with the backbone's
mean and std. Image folders, the streaming path, in-memory sources (digits, CIFAR-10) and
``tune-tl predict`` all go through ``square_uint8`` and ``normalise``, and an exported model
records its ``Preprocessing`` in ``model.json``, so a shipped model sees the pixels it was
validated on.

    >>> pre = Preprocessing(resolution=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    >>> x = pre.batch([load_rgb("cat.jpg")])        # float (1, 3, 224, 224), ready for the model  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

RULE = "shorter side to resolution (bicubic), centre crop"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """Resolution, resize rule and normalisation of a model's input (recorded in ``model.json``)."""

    resolution: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: str = RULE

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        return cls(int(d["resolution"]), tuple(d["mean"]), tuple(d["std"]), d.get("resize", RULE))

    def batch(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Normalised float ``(N, 3, R, R)`` for PIL images (any size or mode)."""
        arrays = np.stack([square_uint8(img, self.resolution) for img in images])
        return normalise(torch.from_numpy(arrays), self.mean, self.std)


def load_rgb(path: str) -> Image.Image:
    """Decode ``path`` fully and return it as RGB (grey, palette, CMYK, alpha all converted).

    Transparent pixels are composited on white, as a viewer shows them, rather than on the
    arbitrary colour hidden under alpha 0.
    """
    with Image.open(path) as img:
        img.load()  # decode everything now: truncated files fail here, not in a trial
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return img.convert("RGB")


def square_uint8(img: Image.Image, resolution: int) -> np.ndarray:
    """The resize rule: shorter side to ``resolution`` (bicubic), centre crop; uint8 ``(3, R, R)``."""
    if img.mode != "RGB":
        img = img.convert("RGB")
    if img.size != (resolution, resolution):
        img = ImageOps.fit(img, (resolution, resolution), method=Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def square_arrays(images: np.ndarray, resolution: int) -> np.ndarray:
    """``square_uint8`` over uint8 ``(N, 3, H, W)`` arrays (in-memory sources such as digits, CIFAR-10)."""
    if images.shape[-2:] == (resolution, resolution):
        return np.ascontiguousarray(images)
    out = np.empty((len(images), 3, resolution, resolution), dtype=np.uint8)
    for i, a in enumerate(images):
        out[i] = square_uint8(Image.fromarray(np.ascontiguousarray(a.transpose(1, 2, 0))), resolution)
    return out


class Normaliser:
    """uint8 (or float 0..255) ``(N, 3, R, R)`` → ``(x/255 - mean) / std`` as float, with the constants made once on ``device``."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.mean_values, self.std_values = [float(v) for v in mean], [float(v) for v in std]
        self._mean = torch.tensor(self.mean_values, device=self.device).view(1, 3, 1, 1) * 255
        self._std = torch.tensor(self.std_values, device=self.device).view(1, 3, 1, 1) * 255

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self._mean) / self._std


def normalise(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``Normaliser(mean, std)`` applied once, on ``x``'s device."""
    return Normaliser(mean, std, x.device)(x)
