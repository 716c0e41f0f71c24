"""The backbone as a search parameter: a list in backbone.name, sub-spaces per backbone, weights per name."""

import pickle

import pandas as pd
import pytest
import torch
from sampling import sample_many
from spaces import write_tiny_space

from tune_tl.cli import main
from tune_tl.config import load_space
from tune_tl.config.params import TrialConfig
from tune_tl.data.types import PreparedData, Split
from tune_tl.errors import TuneTLError
from tune_tl.models import build_backbone
from tune_tl.training.recipe import TrialContext, build_trial

CHOICE = """
backbone: {name: [efficientnet_lite0, timm/resnet18], weights: imagenet}
params:
  freeze_policy: [prefix, surgical]
  freeze_blocks: {low: 0, high: all}
  train_block: {low: 0, high: last}
"""


def write(tmp_path, text, name="space.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path




def test_a_list_of_names_makes_the_backbone_a_choice_and_one_name_stays_fixed(tmp_path):
    spec = load_space(write(tmp_path, CHOICE))
    assert spec.backbone.is_choice and spec.backbone.names == ("efficientnet_lite0", "timm/resnet18")
    single = load_space(write(tmp_path, "backbone: {name: [efficientnet_lite1]}\n"))
    assert not single.backbone.is_choice and single.backbone.name == "efficientnet_lite1"


@pytest.mark.parametrize("text, message", [
    ("backbone: {name: []}\n", "backbone.name: an empty list"),
    ("backbone: {name: [efficientnet_lite0, efficientnet_lite0]}\n", "lists a name twice"),
    ("backbone: {name: [efficientnet_lite0, 3]}\n", "backbone.name: expected str, got 3"),
    ("params:\n  backbone: [efficientnet_lite0]\n", "params.backbone: set backbone.name instead"),
])
def test_bad_backbone_lists_are_rejected_naming_the_key(tmp_path, text, message):
    with pytest.raises(TuneTLError, match=message):
        load_space(write(tmp_path, text))


def test_all_and_last_mean_each_sampled_backbones_own_block_count(tmp_path):
    spec = load_space(write(tmp_path, CHOICE))
    fn = pickle.loads(pickle.dumps(spec.define_by_run({"efficientnet_lite0": 9, "timm/resnet18": 5})))
    configs = sample_many(fn, n=60)
    by = {name: [c for c in configs if c["backbone"] == name] for name in spec.backbone.names}
    assert all(by.values()), "both backbones are sampled"
    assert max(c["freeze_blocks"] for c in by["timm/resnet18"] if "freeze_blocks" in c) <= 5
    assert max(c["freeze_blocks"] for c in by["efficientnet_lite0"] if "freeze_blocks" in c) > 5
    assert max(c["train_block"] for c in by["timm/resnet18"] if "train_block" in c) <= 4


def test_block_bounds_are_checked_for_every_candidate_backbone(tmp_path):
    spec = load_space(write(tmp_path, CHOICE.replace("{low: 0, high: all}", "{low: 0, high: 7}")))
    with pytest.raises(TuneTLError, match=r"\(backbone timm/resnet18\): params.freeze_blocks: 7 is outside 0..5"):
        spec.check_blocks({"efficientnet_lite0": 9, "timm/resnet18": 5})


def test_a_fixed_backbone_is_named_in_every_config(tmp_path):
    configs = sample_many(load_space().define_by_run(num_blocks=9), n=3)
    assert all(c["backbone"] == "efficientnet_lite0" for c in configs)


def test_python_space_under_a_backbone_list_samples_the_backbone_first(tmp_path):
    text = ('SETTINGS = {"backbone": {"name": ["efficientnet_lite0", "efficientnet_lite1"]}}\n'
            'def space(trial):\n    trial.suggest_float("lr", 1e-4, 1e-1, log=True)\n')
    spec = load_space(write(tmp_path, text, "space.py"))
    configs = sample_many(pickle.loads(pickle.dumps(spec.define_by_run(9))), n=20)
    assert {c["backbone"] for c in configs} == {"efficientnet_lite0", "efficientnet_lite1"}


def test_each_trial_builds_its_own_backbone_with_its_own_preprocessing():
    torch.manual_seed(0)
    states = {name: build_backbone(name, "none").features.state_dict() for name in ("efficientnet_lite0", "timm/resnet18")}
    images = torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8).numpy()
    data = PreparedData(["a", "b"], {32: Split(images, torch.tensor([0, 1, 0, 1]).numpy(), images, torch.tensor([0, 1, 0, 1]).numpy())})
    ctx = TrialContext("efficientnet_lite0", states["efficientnet_lite0"], data, 1, 0, backbone_states=states)
    lite = build_trial(TrialConfig(backbone="efficientnet_lite0", resolution=32), ctx, "cpu")
    resnet = build_trial(TrialConfig(backbone="timm/resnet18", resolution=32), ctx, "cpu")
    assert lite.model.backbone.name == "efficientnet_lite0" and resnet.model.backbone.name == "timm/resnet18"
    assert lite.fit.mean == (0.5, 0.5, 0.5) and resnet.fit.mean == pytest.approx((0.485, 0.456, 0.406))
    assert resnet.preprocessing.mean == resnet.fit.mean
    assert torch.equal(resnet.model.backbone.features.state_dict()["conv1.weight"], states["timm/resnet18"]["conv1.weight"])
    with pytest.raises(TuneTLError, match="backbone 'efficientnet_lite2' is not one of this search's backbones"):
        build_trial(TrialConfig(backbone="efficientnet_lite2", resolution=32), ctx, "cpu")


#: Two backbones, head-only trials.
PAIR = {"backbone": {"name": ["efficientnet_lite0", "efficientnet_lite1"]},
        "params": {"freeze_policy": "head_only", "lr": {"low": 1.0e-3, "high": 3.0e-2, "log": True}}}


@pytest.mark.slow
def test_a_search_over_two_backbones_runs_and_records_both(ray_local, tmp_path):
    space = write_tiny_space(tmp_path, budget={"samples": 4}, **PAIR)
    code = main(["search", str(space), "--no-probes", "--output", str(tmp_path / "out"), "--name", "pair", "--sampler", "random",
                 "--scheduler", "fifo", "--keep-checkpoints", "4"])  # every trial's weights: a Lite1 one is exported below
    assert code == 0
    trials = pd.read_parquet(tmp_path / "out" / "pair" / "trials")
    assert len(trials) == 4 and set(trials["status"]) == {"completed"}
    assert set(trials["backbone"]) == {"efficientnet_lite0", "efficientnet_lite1"}
    assert (trials["best_val_acc"] > 0.5).all()

    # Report and export handle the mix: a Lite1 trial's model names and rebuilds Lite1, not the search's first backbone.
    assert main(["report", str(tmp_path / "out" / "pair")]) == 0
    from tune_tl.analysis.model_folder import load_model_folder

    trial_id = trials.loc[trials["backbone"] == "efficientnet_lite1", "trial_id"].iloc[0]
    to = tmp_path / "models" / trial_id
    assert main(["export", str(tmp_path / "out" / "pair"), "--trial", trial_id, "--to", str(to)]) == 0
    model, info, pre = load_model_folder(to)
    assert info["backbone"] == model.backbone.name == "efficientnet_lite1"
    assert pre.mean == build_backbone("efficientnet_lite1", "none").mean, "its own preprocessing"


def test_backbone_selection_keeps_the_top_k_ranked_backbones_best_first(tmp_path):
    from tune_tl.search.rank import select_backbones

    spec = load_space(write(tmp_path, "backbone: {name: [a, b, c]}\nbackbone_selection: {top: 2}\n"))
    table = pd.DataFrame({"backbone": ["a", "b", "c"], "logme": [0.1, 0.5, 0.3], "probe_acc": [0.9, 0.2, 0.8]})
    assert select_backbones(spec, table).backbone.name == ("b", "c")
    by_probe = load_space(write(tmp_path, "backbone: {name: [a, b, c]}\nbackbone_selection: {top: 1, by: probe_acc}\n"))
    assert select_backbones(by_probe, table).backbone.name == "a"


@pytest.mark.parametrize("text, message", [
    ("backbone_selection: {top: 0}\n", "backbone_selection.top must be at least 1"),
    ("backbone_selection: {top: 2, by: size}\n", "backbone_selection.by: 'size' is not one of"),
    ("backbone_selection: {best: 2}\n", "unknown key 'backbone_selection.best'"),
])
def test_bad_backbone_selection_is_rejected_naming_the_key(tmp_path, text, message):
    with pytest.raises(TuneTLError, match=message):
        load_space(write(tmp_path, text))


LITES = "backbone: {name: [efficientnet_lite0, efficientnet_lite1, efficientnet_lite2]}\n"
BLOCKS = {"efficientnet_lite0": 9, "efficientnet_lite1": 9, "efficientnet_lite2": 9}


def test_resolution_native_is_each_backbones_own_input_size(tmp_path):
    spec = load_space(write(tmp_path, LITES + "params:\n  resolution: native\n"))
    assert spec.resolutions() == [224, 240, 260], "data is prepared at each native size"
    configs = sample_many(spec.define_by_run(BLOCKS), n=30)
    assert {(c["backbone"], c["resolution"]) for c in configs} == {
        ("efficientnet_lite0", 224), ("efficientnet_lite1", 240), ("efficientnet_lite2", 260)}


def test_a_resolution_range_up_to_native_stops_at_each_backbones_last_step_below_it(tmp_path):
    spec = load_space(write(tmp_path, LITES + "params:\n  resolution: {low: 128, high: native, step: 32}\n"))
    assert spec.resolutions() == [128, 160, 192, 224, 256]
    configs = sample_many(spec.define_by_run(BLOCKS), n=120)
    top = {name: max(c["resolution"] for c in configs if c["backbone"] == name) for name in BLOCKS}
    assert top == {"efficientnet_lite0": 224, "efficientnet_lite1": 224, "efficientnet_lite2": 256}


def test_a_range_up_to_native_that_starts_above_a_backbones_native_size_names_it(tmp_path):
    spec = load_space(write(tmp_path, LITES + "params:\n  resolution: {low: 232, high: native, step: 32}\n"))
    with pytest.raises(TuneTLError,
                       match=r"\(backbone efficientnet_lite0\): params.resolution: low 232 is above this backbone's native size 224"):
        spec.resolutions()


@pytest.mark.parametrize("text, message", [
    ("  resolution: [128, native]\n", "params.resolution: 'native' cannot be one of a list's choices"),
    ("  resolution: {low: native, high: 256, step: 32}\n", r"params.resolution.low: 'native' can only be a range's high"),
    ("  resolution: {low: 128, high: native}\n", r"params.resolution: a range up to native needs a 'step'"),
    ("  resolution: natve\n", "params.resolution"),
])
def test_bad_native_resolutions_are_rejected_naming_the_key(tmp_path, text, message):
    with pytest.raises(TuneTLError, match=message):
        load_space(write(tmp_path, LITES + "params:\n" + text))


@pytest.mark.slow
def test_backbone_selection_searches_only_the_best_ranked_backbone(ray_local, tmp_path):
    import json

    # An MLP head: a linear head on the frozen backbone is what the probe already fitted, and is never started.
    space = write_tiny_space(tmp_path, budget={"samples": 1}, backbone_selection={"top": 1, "by": "logme"},
                             backbone=PAIR["backbone"], params={**PAIR["params"], "head": "mlp", "head_hidden": 32})
    assert main(["search", str(space), "--output", str(tmp_path / "out"), "--name", "top1", "--scheduler", "fifo"]) == 0
    ranking = json.loads((tmp_path / "out" / "top1" / "search.json").read_text())["backbone_ranking"]
    best = max(ranking, key=lambda row: row["logme"])["backbone"]
    assert {row["backbone"] for row in ranking} == {"efficientnet_lite0", "efficientnet_lite1"}
    trials = pd.read_parquet(tmp_path / "out" / "top1" / "trials")
    assert set(trials.loc[trials["probe"], "backbone"]) == {"efficientnet_lite0", "efficientnet_lite1"}, "the ranking is the probes'"
    tuned = trials[~trials["probe"]]
    assert set(tuned["backbone"]) == {best} and len(tuned) == 1


def test_the_shipped_image_folder_space_searches_the_portfolio_each_at_its_native_size():
    spec = load_space("imagefolder")
    assert spec.backbone.names == ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
    assert spec.resolutions() == [224, 240, 260]
    configs = sample_many(spec.define_by_run(BLOCKS), n=30)
    assert {(c["backbone"], c["resolution"]) for c in configs} == {("efficientnet_lite0", 224), ("efficientnet_lite1", 240),
                                                                   ("efficientnet_lite2", 260)}
