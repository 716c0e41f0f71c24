"""Models for transfer learning: named backbones split into blocks, small heads, and block freezing.

    >>> from tune_tl.models import TransferModel, build_backbone, build_head
    >>> backbone = build_backbone("efficientnet_lite0")
    >>> model = TransferModel(backbone, build_head("linear", backbone.num_features, 10))
    >>> model.freeze_blocks(6)
"""

from tune_tl.models.backbone import Backbone, BackboneFamily
from tune_tl.models.backbones import build_backbone
from tune_tl.models.freezing import POLICIES, FreezePolicy, TransferModel, count_trainable_parameters
from tune_tl.models.heads import HEAD_KINDS, build_head
from tune_tl.models.param_groups import param_groups
from tune_tl.models.registry import register_backbone

__all__ = [
    "HEAD_KINDS",
    "Backbone",
    "BackboneFamily",
    "FreezePolicy",
    "POLICIES",
    "TransferModel",
    "build_backbone",
    "build_head",
    "count_trainable_parameters",
    "param_groups",
    "register_backbone",
]
