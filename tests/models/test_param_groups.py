"""Per-depth learning rates: the head multiplier and layer-wise decay become optimizer groups."""

import pytest
from toy_models import toy_model

from tune_tl.errors import TuneTLError
from tune_tl.models import FreezePolicy, param_groups


def test_block_lr_scale_is_decay_to_the_depth_from_the_head():
    model = toy_model()
    model.apply_policy(FreezePolicy("full"))
    groups = param_groups(model, head_lr_mult=10.0, layer_decay=0.5)
    assert [(g["name"], g["lr_scale"]) for g in groups] == [("head", 10.0), ("block2", 0.5), ("block1", 0.25), ("block0", 0.125)]


def test_groups_cover_exactly_the_parameters_the_policy_trains_even_while_probing():
    model = toy_model()
    model.apply_policy(FreezePolicy("surgical", train_block=1))
    model.set_probing(True)
    groups = param_groups(model, 1.0, 0.8)
    grouped = {id(p) for g in groups for p in g["params"]}
    expected = {id(p) for p in model.head.parameters()} | {id(p) for p in model.backbone.blocks[1].parameters()}
    assert grouped == expected
    assert [g["name"] for g in groups] == ["head", "block1"]


@pytest.mark.parametrize("kwargs, message", [({"head_lr_mult": 0.0}, "head_lr_mult must be positive"),
                                             ({"layer_decay": 1.5}, r"layer_decay must be in \(0, 1\]")])
def test_nonsense_multipliers_are_rejected(kwargs, message):
    with pytest.raises(TuneTLError, match=message):
        param_groups(toy_model(), **kwargs)
