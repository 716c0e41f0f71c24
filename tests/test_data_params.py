"""Augmentation and resolution are ordinary search parameters: in the space, the trial config and Parquet."""

import pytest

from tune_tl.config import Choice, Range, load_space
from tune_tl.config.params import TrialConfig
from tune_tl.errors import TuneTLError
from tune_tl.store.results import TRIAL_SCHEMA
from tune_tl.training.recipe import augment_config

SPACE = """
data: {source: imagefolder, path: photos, memory_budget_mb: 512, skip_bad_images: true}
params:
  resolution: [64, 96, 128]
  aug_crop_scale: {low: 0.3, high: 1.0}
  aug_flip: [true, false]
  aug_rotate: [0, 10]
  aug_jitter: {low: 0.0, high: 0.4}
"""


def test_augmentation_and_resolution_are_searchable_from_yaml(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(SPACE)
    spec = load_space(path)
    dists = {p.name: p.dist for p in spec.params}
    assert spec.resolutions() == [64, 96, 128]
    assert dists["aug_flip"] == Choice((1, 0)), "YAML true/false become the 1/0 switch"
    assert dists["aug_crop_scale"] == Range(0.3, 1.0) and dists["aug_rotate"] == Choice((0.0, 10.0))
    assert (spec.data.memory_budget_mb, spec.data.skip_bad_images) == (512.0, True)


@pytest.mark.parametrize(
    "text, message",
    [
        ("aug_crop_scale: 0", "params.aug_crop_scale: must be in (0, 1], got 0.0"),
        ("aug_crop_scale: 1.5", "params.aug_crop_scale: must be in (0, 1], got 1.5"),
        ("aug_jitter: 1.0", "params.aug_jitter: must be in [0, 1), got 1.0"),
        ("aug_rotate: 200", "params.aug_rotate: must be in [0, 180], got 200.0"),
        ("aug_flip: 2", "params.aug_flip: 2 is not one of [0, 1]"),
        ("aug_flip: maybe", "params.aug_flip: expected int, got 'maybe'"),
    ],
)
def test_bad_augmentation_values_name_the_key(tmp_path, text, message):
    path = tmp_path / "s.yaml"
    path.write_text(f"params:\n  {text}\n")
    with pytest.raises(TuneTLError) as err:
        load_space(path)
    assert message in str(err.value)


def test_memory_budget_must_be_positive(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("data: {memory_budget_mb: 0}\n")
    with pytest.raises(TuneTLError, match="data.memory_budget_mb must be positive"):
        load_space(path)


def test_trial_config_defaults_switch_augmentation_off():
    cfg = TrialConfig.from_dict({})
    assert not augment_config(cfg).active
    on = augment_config(TrialConfig.from_dict({"aug_flip": 1, "aug_crop_scale": 0.5, "aug_rotate": 5, "aug_jitter": 0.1}))
    assert on.flip is True and on.crop_scale == 0.5 and on.rotate == 5.0 and on.jitter == 0.1


def test_augmentation_parameters_are_columns_of_the_trials_table():
    types = {f.name: str(f.type) for f in TRIAL_SCHEMA}
    assert types["resolution"] == "int64" and types["aug_flip"] == "int64"
    assert types["aug_crop_scale"] == types["aug_rotate"] == types["aug_jitter"] == "double"
