"""The textbook start enqueues only what the user's space allows; TPE's start-up scales with the budget."""

import optuna
import pytest
from ray.tune.search.optuna import OptunaSearch

from tune_tl.config import load_space, parse_settings
from tune_tl.config.distributions import resolve_all
from tune_tl.config.space import parse_space_text
from tune_tl.search.plan import plan_for
from tune_tl.search.sampler import enqueue_textbook, make_sampler, startup_trials
from tune_tl.search.textbook import textbook_trials
from tune_tl.training.cost_model import CostModel

BLOCKS = 9


def recipes(params_yaml: dict):
    spec = parse_settings({"params": params_yaml}, "test.yaml", allow_params=True)
    return dict(textbook_trials(resolve_all(spec.params, BLOCKS, "test.yaml"), BLOCKS))


def test_default_space_starts_with_fine_tune_linear_probe_and_lp_ft_in_that_order():
    spec = load_space()
    found = textbook_trials(resolve_all(spec.params, BLOCKS, spec.source), BLOCKS)
    assert [name for name, _ in found] == ["fine-tune", "linear probe", "LP→FT"]
    fine_tune = dict(found)["fine-tune"]
    assert fine_tune["freeze_policy"] == "full" and fine_tune["lr"] == 1e-3 and "optimizer" not in fine_tune, "adamw is fixed"
    assert fine_tune["head"] == "linear" and fine_tune["lp_epochs"] == 0 and fine_tune["bn_stats"] == "update"
    assert "bn_stats" not in dict(found)["linear probe"], "bn_stats does not apply to a linear probe"


def test_after_the_probes_a_budget_too_short_for_a_whole_model_epoch_starts_with_the_top_blocks_and_the_top_half():
    params = resolve_all(load_space("search_spaces/imagefolder.yaml").params, BLOCKS, "imagefolder.yaml")
    assert [(name, values["freeze_blocks"]) for name, values in textbook_trials(params, BLOCKS, after_probes=True)] == [
        ("fine-tune of the top blocks", 6), ("fine-tune", 0)]
    short = textbook_trials(params, BLOCKS, after_probes=True, whole_model_fits=False)
    assert [(name, values["freeze_blocks"]) for name, values in short] == [("fine-tune of the top blocks", 6),
                                                                           ("fine-tune of the top half", 4)]
    assert short[1][1]["lr"] == 1e-3 and short[1][1]["aug_crop_scale"] == 1.0, "the textbook recipe, augmentation off"


def test_the_top_half_freezes_down_to_the_deepest_boundary_the_probe_kept_so_its_first_epoch_reads_it():
    # Lite2 at 260 px on 2,000 X-rays: the probe's pass kept blocks 5-8; freezing 4 decoded every image (205 s).
    params = resolve_all(load_space("search_spaces/imagefolder.yaml").params, BLOCKS, "imagefolder.yaml")

    def top_half(kept):
        return dict(textbook_trials(params, BLOCKS, after_probes=True, whole_model_fits=False, kept=kept))["fine-tune of the top half"]

    assert top_half((8, 7, 6, 5))["freeze_blocks"] == 5
    assert top_half((8, 7, 6, 5, 4))["freeze_blocks"] == 4, "half the blocks, where the probe kept that boundary"
    assert top_half((8, 7, 6))["freeze_blocks"] == 4, "no kept boundary below the top blocks': half, from pixels"
    assert top_half(())["freeze_blocks"] == 4


def test_a_search_s_textbook_start_reads_the_boundaries_its_first_backbone_s_probe_kept():
    space = parse_space_text("backbone: {name: efficientnet_lite2}\nparams: {resolution: 32, freeze_blocks: {low: 0, high: 8}, "
                             "head: linear, head_init: probe}\n", "s.yaml")
    costs = CostModel({"efficientnet_lite2": {32: (1e7,) * BLOCKS}}, {"efficientnet_lite2": 1280}, num_classes=2, train_images=100,
                      val_images=20, probed_boundaries={"efficientnet_lite2": {32: (8, 7, 6, 5)}})
    searcher = OptunaSearch(space=plan_for(space, BLOCKS).space, metric="val_acc", mode="max")
    names = enqueue_textbook(searcher, plan_for(space, BLOCKS, cost_model=costs), after_probes=True, whole_model_fits=False)
    assert names == ["fine-tune of the top blocks", "fine-tune of the top half"]
    enqueued = [t.system_attrs["fixed_params"]["freeze_blocks"] for t in searcher._ot_study.get_trials(deepcopy=False)]
    assert enqueued == [6, 5]


def test_a_prefix_only_space_expresses_the_recipes_by_frozen_blocks():
    found = recipes({"freeze_blocks": {"low": 0, "high": "all"}, "lp_epochs": [0, 1], "lr": {"low": 3e-4, "high": 1e-2, "log": True}})
    assert found["fine-tune"] == {"freeze_blocks": 0, "lp_epochs": 0, "lr": 1e-3}
    assert found["linear probe"]["freeze_blocks"] == BLOCKS
    assert found["LP→FT"] == {"freeze_blocks": 0, "lp_epochs": 1, "lr": 1e-3}


def test_in_a_recipe_space_the_textbook_trials_turn_every_regulariser_and_augmentation_off():
    spec = load_space("search_spaces/recipes.yaml")
    fine_tune = dict(textbook_trials(resolve_all(spec.params, BLOCKS, spec.source), BLOCKS))["fine-tune"]
    assert fine_tune["schedule"] == "cosine" and fine_tune["warmup_epochs"] == 0.0
    assert fine_tune["mixup_alpha"] == fine_tune["cutmix_alpha"] == fine_tune["label_smoothing"] == fine_tune["l2sp"] == 0.0
    assert fine_tune["auto_augment"] == "none"


def test_values_outside_the_space_are_left_to_the_sampler():
    found = recipes({"freeze_policy": ["full", "head_only"], "lr": {"low": 0.01, "high": 0.1, "log": True}, "optimizer": ["sgd"]})
    assert "lr" not in found["fine-tune"]
    assert "optimizer" not in found["fine-tune"]  # a one-value list still cannot hold adamw


def test_a_recipe_whose_policy_the_space_forbids_is_skipped_or_expressed_by_prefix_freezing():
    assert list(recipes({"freeze_policy": ["head_only"], "lr": {"low": 1e-4, "high": 1e-2}})) == ["linear probe"]
    prefix_only = recipes({"freeze_blocks": {"low": 0, "high": "all"}, "lr": {"low": 1e-4, "high": 1e-2}})
    assert prefix_only["fine-tune"]["freeze_blocks"] == 0
    assert prefix_only["linear probe"]["freeze_blocks"] == BLOCKS
    assert "LP→FT" not in prefix_only or prefix_only["LP→FT"] != prefix_only["fine-tune"]


def test_a_fixed_space_enqueues_nothing():
    assert recipes({"freeze_policy": "full", "lr": 0.001, "head": "linear"}) == {}


def test_enqueued_values_are_inside_optuna_distributions_of_the_space():
    spec = load_space("search_spaces/broad.yaml")
    params = resolve_all(spec.params, BLOCKS, spec.source)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for _, values in textbook_trials(params, BLOCKS):
        study.enqueue_trial(values)
    fn = spec.define_by_run(BLOCKS)
    with _no_out_of_range_warning():
        for _ in range(3):
            trial = study.ask()
            fn(trial)
            study.tell(trial, 0.5)
    assert [t.params["freeze_policy"] for t in study.trials] == ["full", "head_only", "full"]


class _no_out_of_range_warning:
    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings(record=True)
        self.records = self._ctx.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        assert not [w for w in self.records if "out of the range" in str(w.message).lower()]


@pytest.mark.parametrize("samples, expected", [(4, 3), (10, 3), (16, 4), (40, 10), (200, 10)])
def test_tpe_startup_trials_scale_with_the_budget(samples, expected):
    assert startup_trials(samples) == expected


def test_tpe_sampler_is_multivariate_and_grouped_with_the_scaled_startup():
    spec = load_space()
    sampler = make_sampler("tpe", spec)
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert sampler._n_startup_trials == startup_trials(spec.budget.samples) and sampler._group
    assert isinstance(make_sampler("random", spec), optuna.samplers.RandomSampler)
