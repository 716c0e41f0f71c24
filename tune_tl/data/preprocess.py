"""The one preprocessing rule: how an image becomes the network's input, in training and in ``predict``.

Every image file tune_tl reads is decoded here (``load_rgb``): turned upright by its EXIF orientation (a
phone stores a portrait sideways plus a tag saying so), then converted to 8-bit RGB (``to_rgb``: 16-bit and
float greyscale scaled by their range, transparency composited on white). Its shorter side is scaled to the
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

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO

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
        arrays = np.stack([square_uint8(to_rgb(img), self.resolution) for img in images])
        return normalise(torch.from_numpy(arrays), self.mean, self.std)


def load_rgb(source: str | os.PathLike | BinaryIO) -> Image.Image:
    """Decode ``source`` (a path or an open binary file) fully; upright, as 8-bit RGB (``to_rgb``).

    Image folders, the streaming path and ``predict`` all decode through here, so a photo is the same
    pixels wherever it is read.
    """
    with Image.open(source) as img:
        img.load()  # decode everything now: truncated files fail here, not in a trial
        return to_rgb(img, in_place=True)


def to_rgb(img: Image.Image, in_place: bool = False) -> Image.Image:
    """``img`` turned upright by its EXIF orientation and converted to 8-bit RGB, whatever its mode.

    - 16-bit greyscale (``I;16``, ``I;16B``, ...) is scaled by its range (65535 → 255), not clipped (which
      turns almost every pixel white); 32-bit integers (``I``) are read as 16-bit values when any exceeds
      255, else as 8-bit ones; floats (``F``) in [0, 1] are scaled to 0..255, others clipped to it.
    - Transparency (``RGBA``, ``LA``, ``PA``, ``P`` with a transparent colour) is composited on white, as a
      viewer shows it, rather than on the arbitrary colour hidden under alpha 0.
    - ``CMYK``, ``YCbCr``, ``L``, ``1``, ``P`` and the rest go through Pillow's own conversion.

    ``in_place`` lets the orientation step reuse ``img`` (one the caller owns); otherwise ``img`` is untouched.
    """
    if in_place:
        ImageOps.exif_transpose(img, in_place=True)
    else:
        img = ImageOps.exif_transpose(img)
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I") or img.mode == "F":
        img = Image.fromarray(_grey_uint8(img), "L")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("LA").convert("RGBA") if img.mode == "La" else img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _grey_uint8(img: Image.Image) -> np.ndarray:
    """A high-depth greyscale image (``I;16*``, ``I``, ``F``) as uint8, scaled by the range of its values' type."""
    values = np.asarray(img)
    if img.mode == "F":
        values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        if values.size and values.min() >= 0.0 and values.max() <= 1.0:
            values = values * 255.0
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)
    values = values.astype(np.int64)
    if img.mode.startswith("I;16") or (values.size and values.max() > 255):
        values = (np.clip(values, 0, 65535) * 255 + 32767) // 65535  # 65535 -> 255, 32768 -> 128
    return np.clip(values, 0, 255).astype(np.uint8)


def square_uint8(img: Image.Image, resolution: int) -> np.ndarray:
    """The resize rule: shorter side to ``resolution`` (bicubic), centre crop; uint8 ``(3, R, R)``."""
    if img.mode != "RGB":
        img = to_rgb(img)
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
