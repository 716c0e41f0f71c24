"""Fixtures for the models tests: a tiny real backbone built by hand."""

import pytest
import torch
from torch import nn

from tune_tl.models import Backbone


@pytest.fixture
def toy_backbone() -> Backbone:
    """Two conv+BatchNorm blocks over 3-channel images, pooled to 8 features."""
    torch.manual_seed(0)
    first = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
    second = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
    features = nn.Sequential(first, second, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Backbone("toy", features, [first, second], 8, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
