"""A search's space is resolved once, against its built backbones, into one plan that the driver hands on."""

import dataclasses
import pickle

import pytest
from sampling import sample_many

from tune_tl.config import load_space
from tune_tl.config.space import parse_settings, parse_space_text
from tune_tl.config.spec import SearchSpec
from tune_tl.errors import TuneTLError
from tune_tl.search.plan import plan_for, resolve_plan
from tune_tl.training.context import prepare_context
from tune_tl.training.cost_model import CostModel

CHOICE = """
backbone: {name: [efficientnet_lite0, timm/resnet18], weights: imagenet}
params:
  freeze_policy: [prefix, surgical]
  freeze_blocks: {low: 0, high: all}
  train_block: {low: 0, high: last}
  batch_size: 32
  resolution: 32
"""
BLOCKS = {"efficientnet_lite0": 9, "timm/resnet18": 5}


def costs(names):
    return CostModel({n: {32: (1e6,) * BLOCKS[n]} for n in names}, dict.fromkeys(names, 8), num_classes=2, train_images=4, val_images=2)


def test_each_backbone_gets_its_own_resolved_bounds_and_the_space_s_fixed_values():
    plan = plan_for(parse_space_text(CHOICE, "choice.yaml"), BLOCKS)
    assert plan.num_blocks == BLOCKS and plan.first.name == "efficientnet_lite0"
    assert plan.backbones["timm/resnet18"].distributions["freeze_blocks"].high == 5
    assert plan.backbones["efficientnet_lite0"].distributions["train_block"].high == 8
    assert plan.backbones["timm/resnet18"].fixed == {"batch_size": 32, "resolution": 32}
    configs = sample_many(pickle.loads(pickle.dumps(plan.space)), n=40)
    assert max(c.get("freeze_blocks", 0) for c in configs if c["backbone"] == "timm/resnet18") <= 5


def test_ranking_reorders_and_drops_backbones_without_resolving_the_space_again(monkeypatch):
    spec = parse_space_text(CHOICE, "choice.yaml")
    plan = plan_for(spec, BLOCKS, cost_model=costs(BLOCKS))

    def resolve_again(*args, **kwargs):
        raise AssertionError("the space was resolved a second time")

    monkeypatch.setattr(SearchSpec, "sub_spaces", resolve_again)
    ranked = plan.keep(dataclasses.replace(spec, backbone=dataclasses.replace(spec.backbone, name="timm/resnet18")))
    assert list(ranked.backbones) == ["timm/resnet18"] and ranked.first.num_blocks == 5
    assert ranked.cost_model.default_backbone == "timm/resnet18" and list(ranked.cost_model.blocks) == ["timm/resnet18"]
    assert ranked.rung_unit == ranked.cost_model.fine_tune_epoch("timm/resnet18", 32)


def test_a_python_space_samples_its_own_function_and_its_resolutions_are_the_declared_ones(tmp_path):
    (tmp_path / "space.py").write_text("SETTINGS = {'resolutions': [32, 48]}\n"
                                       "def space(trial):\n    trial.suggest_categorical('freeze_policy', ['full', 'head_only'])\n"
                                       "    return {'resolution': 48}\n")
    spec = load_space(tmp_path / "space.py")
    plan = plan_for(spec, 9)
    assert plan.space is spec.space_fn and plan.allowed_resolutions(plan.first.name) == [32, 48]


def test_a_block_bound_the_built_backbone_cannot_meet_fails_when_the_plan_is_resolved():
    spec = parse_settings({"seed": 0, "budget": {"samples": 1, "max_epochs": 1},
                           "params": {"resolution": 32, "freeze_blocks": 12}}, "deep.yaml", allow_params=True)
    prepared = prepare_context(spec)  # builds the backbone and the data; the space is not its business
    with pytest.raises(TuneTLError, match=r"deep.yaml: params.freeze_blocks: 12 is outside 0..9"):
        resolve_plan(spec, prepared)
    plan = resolve_plan(parse_settings({"params": {"resolution": 32}}, "ok.yaml", allow_params=True), prepared)
    assert plan.num_blocks == {"efficientnet_lite0": 9} and plan.resolutions == (32,)
    assert plan.first.native_size == 224 and set(plan.cost_model.blocks["efficientnet_lite0"]) == {32}
