"""A tiny real backbone (three conv blocks with BatchNorm) for fast model and training tests."""

import torch
from torch import nn

from tune_tl.models import Backbone, TransferModel, build_head


def toy_backbone(seed: int = 0) -> Backbone:
    torch.manual_seed(seed)
    blocks = [
        nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
        nn.Sequential(nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.BatchNorm2d(12), nn.ReLU()),
        nn.Sequential(nn.Conv2d(12, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Dropout(0.3)),
    ]
    features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Backbone("toy", features, blocks, 16, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def toy_model(seed: int = 0, num_classes: int = 10, head: str = "linear") -> TransferModel:
    backbone = toy_backbone(seed)
    return TransferModel(backbone, build_head(head, 16, num_classes, hidden=8, dropout=0.2))
