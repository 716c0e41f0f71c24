"""scikit-learn's bundled digits: 1,797 8×8 grey images, 10 classes, no download."""

from __future__ import annotations

import numpy as np

from tune_tl.data.types import LabelledImages


def load_digits_images() -> LabelledImages:
    """Digits as uint8 (N, 3, 8, 8) images (grey replicated to RGB), labels and class names."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # pixel values are 0..16
    rgb = np.repeat(grey[:, None, :, :], 3, axis=1)
    return LabelledImages(rgb, digits.target.astype(np.int64), [str(c) for c in digits.target_names])
