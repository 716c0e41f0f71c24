"""The space loader: valid files load, every mistake names its key, sampling respects conditions."""

import pickle
from pathlib import Path

import pytest
from sampling import sample_many

from tune_tl.config import Choice, Fixed, Range, load_space, shipped_space
from tune_tl.errors import TuneTLError

SPACES = sorted((Path(__file__).parent.parent / "tune_tl" / "search_spaces").glob("*"))


def write(tmp_path, text, name="space.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_every_shipped_space_file_loads(path):
    spec = load_space(path)
    assert spec.budget.samples >= 1
    spec.check_blocks(9)  # efficientnet_lite0 has 9 blocks


def test_default_space_is_the_bundled_offline_search():
    spec = load_space()
    assert spec.source == "default.yaml (shipped)" and spec.text == shipped_space("default").read_text()
    assert (spec.data.source, spec.backbone.name, spec.backbone.weights) == ("digits", "efficientnet_lite0", "imagenet")
    dists = {p.name: p.dist for p in spec.params}
    assert dists["freeze_blocks"] == Range(0, "all")
    assert dists["head"] == Choice(("linear", "mlp"))
    assert isinstance(dists["resolution"], Fixed)


@pytest.mark.parametrize(
    "text, message",
    [
        ("params:\n  head_hiden: 64\n", "unknown key 'params.head_hiden' (did you mean 'params.head_hidden'?)"),
        ("budjet:\n  samples: 3\n", "unknown key 'budjet' (did you mean 'budget'?)"),
        ("budget:\n  samples: many\n", "budget.samples: expected int, got 'many'"),
        ("budget:\n  samples: 0\n", "budget.samples must be at least 1"),
        ("budget:\n  max_epochs: 2\n  grace_period: 3\n", "budget.grace_period (3) exceeds budget.max_epochs (2)"),
        ("budget:\n  reduction_factor: 1\n", "budget.reduction_factor must be greater than 1"),
        ("params:\n  lr: {low: 0.1, high: 0.01}\n", "params.lr: low (0.1) is greater than high (0.01)"),
        ("params:\n  weight_decay: {low: 0, high: 0.1, log: true}\n", "params.weight_decay: a log range needs low > 0"),
        ("params:\n  lr: {low: 0.001}\n", "params.lr: a range needs both 'low' and 'high'"),
        ("params:\n  lr: {low: 0.001, high: 0.1, scale: log}\n", "unknown key 'params.lr.scale'"),
        ("params:\n  optimizer: [adamw, rmsprop]\n", "params.optimizer: 'rmsprop' is not one of ['adamw', 'sgd', 'adam']"),
        ("params:\n  head: {low: 1, high: 2}\n", "params.head: a text parameter takes a value or a list of choices"),
        ("params:\n  batch_size: [32, big]\n", "params.batch_size: expected int, got 'big'"),
        ("params:\n  resolution: 8\n", "params.resolution: must be in [32, 1024], got 8"),
        ("params:\n  head_hidden: []\n", "params.head_hidden: an empty list of choices"),
        ("params:\n  freeze_policy: [prefix, thaw]\n", "params.freeze_policy: 'thaw' is not one of"),
        ("params:\n  bn_stats: [on, off]\n", "params.bn_stats: expected str, got True"),
        ("params:\n  layer_decay: {low: 0.5, high: 1.5}\n", "params.layer_decay.high: must be in (0, 1]"),
        ("params:\n  head_lr_mult: 0\n", "params.head_lr_mult: must be positive"),
        ("data:\n  source: mnist\n", "data.source: 'mnist' is not one of"),
        ("data:\n  val_fraction: 1.5\n", "data.val_fraction must be between 0 and 1"),
        ("- just\n- a list\n", "expected a mapping at the top level"),
        ("params: [\n", "not valid YAML"),
    ],
)
def test_bad_space_files_are_rejected_with_the_key_named(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(TuneTLError) as err:
        load_space(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_missing_space_file_is_named():
    with pytest.raises(TuneTLError, match="nope.yaml does not exist"):
        load_space("nope.yaml")


def test_freeze_blocks_beyond_the_backbone_is_rejected_once_blocks_are_known(tmp_path):
    spec = load_space(write(tmp_path, "params:\n  freeze_blocks: {low: 0, high: 12}\n"))
    with pytest.raises(TuneTLError, match=r"params.freeze_blocks: 12 is outside 0..9 \(this backbone has 9 blocks\)"):
        spec.check_blocks(9)


def test_every_freeze_policy_is_in_a_shipped_space():
    policies = set()
    for path in SPACES:
        for p in load_space(path).params:
            if p.name == "freeze_policy":
                policies |= set(p.dist.values) if isinstance(p.dist, Choice) else {p.dist.value}
    assert policies == {"prefix", "surgical", "head_only", "full"}


def test_train_block_last_means_the_last_block_and_larger_indices_are_rejected(tmp_path):
    spec = load_space(write(tmp_path, "params:\n  freeze_policy: surgical\n  train_block: {low: 2, high: last}\n"))
    fn = spec.define_by_run(num_blocks=9)
    assert {c["train_block"] for c in sample_many(fn, 60)} == set(range(2, 9))
    spec = load_space(write(tmp_path, "params:\n  train_block: [0, 9]\n"))
    with pytest.raises(TuneTLError, match=r"params.train_block: 9 is outside 0..8 \(this backbone has 9 blocks\)"):
        spec.check_blocks(9)




def test_conditional_parameters_are_sampled_only_when_they_apply():
    configs = sample_many(load_space("search_spaces/broad.yaml").define_by_run(num_blocks=9))
    assert {c["head"] for c in configs} == {"linear", "mlp"}
    for c in configs:
        assert ("head_hidden" in c) == (c["head"] == "mlp")
        assert ("momentum" in c) == (c["optimizer"] == "sgd")
        assert ("freeze_blocks" in c) == (c["freeze_policy"] == "prefix")
        assert ("train_block" in c) == (c["freeze_policy"] == "surgical")
        assert ("bn_stats" in c) == (c["freeze_policy"] != "head_only")
        assert 0 <= c.get("freeze_blocks", 0) <= 9 and 0 <= c.get("train_block", 0) <= 8
        assert 1e-4 <= c["lr"] <= 3e-2
        assert c["resolution"] == 32  # fixed values come back as constants


def test_define_by_run_function_survives_pickling_as_ray_needs():
    fn = pickle.loads(pickle.dumps(load_space().define_by_run(num_blocks=9)))
    assert all("lr" in c for c in sample_many(fn, n=3))


PY_SPACE = '''
SETTINGS = {"budget": {"samples": 3, "max_epochs": 2}, "resolutions": [32, 48]}

def space(trial):
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    trial.suggest_categorical("resolution", [32, 48])
    return {"head": "linear"}
'''


def test_python_space_file_defines_the_sampler_and_settings(tmp_path):
    spec = load_space(write(tmp_path, PY_SPACE, "space.py"))
    assert spec.budget.samples == 3 and spec.resolutions() == [32, 48]
    fn = pickle.loads(pickle.dumps(spec.define_by_run(num_blocks=9)))
    assert all(c["head"] == "linear" and c["resolution"] in (32, 48) for c in sample_many(fn, 5))


def test_python_space_with_an_unknown_parameter_fails_before_ray(tmp_path):
    text = "def space(trial):\n    trial.suggest_float('learning_rate', 0.001, 0.1)\n"
    with pytest.raises(TuneTLError, match=r"space\(trial\) produced a bad config: .*unknown parameter\(s\) \['learning_rate'\]"):
        load_space(write(tmp_path, text, "space.py"))


def test_python_space_sampling_an_undeclared_resolution_fails(tmp_path):
    text = "def space(trial):\n    trial.suggest_categorical('resolution', [32, 96])\n"
    with pytest.raises(TuneTLError, match=r"not in SETTINGS\['resolutions'\] \[64\]"):
        load_space(write(tmp_path, text, "space.py"))


def test_python_space_without_a_space_function_is_rejected(tmp_path):
    with pytest.raises(TuneTLError, match=r"must define a function space\(trial\)"):
        load_space(write(tmp_path, "x = 1\n", "space.py"))
