"""TrialConfig parses Ray's config dict strictly and fills conditional parameters honestly."""

import dataclasses

import pytest

from tune_tl.config.params import PARAMS, TrialConfig
from tune_tl.errors import TuneTLError


def test_missing_keys_take_defaults_and_inactive_conditionals_are_none():
    cfg = TrialConfig.from_dict({"lr": 0.01, "optimizer": "adamw", "head": "linear"})
    assert cfg.lr == 0.01 and cfg.batch_size == 64
    assert cfg.momentum is None and cfg.head_hidden is None and cfg.head_dropout is None


def test_active_conditionals_get_their_default_when_not_sampled():
    cfg = TrialConfig.from_dict({"optimizer": "sgd", "head": "mlp"})
    assert cfg.momentum == 0.9 and cfg.head_hidden == 256 and cfg.head_dropout == 0.0


def test_conditional_values_are_dropped_when_their_parent_does_not_apply():
    assert TrialConfig.from_dict({"head": "linear", "head_hidden": 128}).head_hidden is None


def test_unknown_keys_and_wrong_types_are_errors():
    with pytest.raises(TuneTLError, match=r"unknown parameter\(s\) \['learning_rate'\]"):
        TrialConfig.from_dict({"learning_rate": 0.1})
    with pytest.raises(TuneTLError, match="'batch_size': expected int"):
        TrialConfig.from_dict({"batch_size": "64"})


def test_integers_are_accepted_for_floats():
    assert TrialConfig.from_dict({"weight_decay": 0}).weight_decay == 0.0


def test_policy_parameters_apply_only_under_their_policy():
    surgical = TrialConfig.from_dict({"freeze_policy": "surgical", "train_block": 3, "freeze_blocks": 5})
    assert (surgical.train_block, surgical.freeze_blocks, surgical.bn_stats) == (3, None, "update")
    probe = TrialConfig.from_dict({"freeze_policy": "head_only", "bn_stats": "frozen"})
    assert probe.bn_stats is None and probe.train_block is None and probe.freeze_blocks is None
    assert TrialConfig.from_dict({}).freeze_blocks == 0  # old spaces: prefix policy, nothing frozen


def test_every_registered_parameter_is_a_field_of_trial_config_and_back():
    assert set(PARAMS) == {f.name for f in dataclasses.fields(TrialConfig)}


def test_a_trials_table_row_gives_back_the_config_that_trained_it():
    cfg = TrialConfig.from_dict({"freeze_policy": "prefix", "freeze_blocks": 3, "head": "mlp", "head_hidden": 64, "lr": 0.01})
    row = {**cfg.to_dict(), "trial_id": "abc", "momentum": float("nan")}  # pandas reads null floats as NaN
    assert TrialConfig.from_row(row) == cfg


def test_trial_config_defaults_are_the_registry_defaults():
    assert TrialConfig() == TrialConfig.from_dict({})
