"""The fine-tuning recipe parameters each change training: schedules, warmup, smoothing, mixing, L2-SP, optimizers."""

import io
import math

import numpy as np
import pytest
import torch
from toy_models import toy_model

from tune_tl.config import load_space
from tune_tl.config.params import TrialConfig
from tune_tl.data.types import Split
from tune_tl.errors import TuneTLError
from tune_tl.models import FreezePolicy
from tune_tl.training.frozen_features import cache_blockers, features_cacheable
from tune_tl.training.loop import FitConfig, fit, make_optimizer
from tune_tl.training.recipe import inputs_vary, regularise_config, schedule_config
from tune_tl.training.regularisers import L2SP, RegulariseConfig, batch_mixer
from tune_tl.training.schedules import LRSchedule, ScheduleConfig, milestone_epochs


@pytest.fixture(scope="module")
def split():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 96)
    images = rng.integers(0, 60, (96, 3, 16, 16)).astype(np.uint8)
    images[:, labels % 3, :8] += 150  # a learnable signal per class
    return Split(images[:64], labels[:64], images[64:], labels[64:])


def config(**kw):
    return FitConfig(**{"epochs": 3, "batch_size": 16, "lr": 0.01, "mean": (0.5,) * 3, "std": (0.5,) * 3, "seed": 3, **kw})


def run(split, **kw):
    model = toy_model(num_classes=4)
    return model, fit(model, split, config(**kw))


# ---------------------------------------------------------------- schedules


def test_step_lr_with_step_size_1_and_gamma_0_1_gives_ten_times_smaller_lr_each_epoch(split):
    _, history = run(split, schedule=ScheduleConfig("step", step_size=1, gamma=0.1))
    lrs = [m.scheduled_lr for m in history]
    assert lrs == pytest.approx([0.01, 0.001, 0.0001], rel=1e-9)


def test_the_default_schedule_is_the_cosine_the_loop_always_used(split):
    _, history = run(split, epochs=4)
    assert [m.scheduled_lr for m in history] == pytest.approx([0.01 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)], rel=1e-12)


def test_multistep_milestones_are_fractions_of_the_epoch_budget(split):
    assert milestone_epochs((0.5, 0.75), 4) == [2, 3]
    assert milestone_epochs((0.1,), 4) == [1]  # never at epoch 0: the first epoch runs at the full rate
    _, history = run(split, epochs=4, schedule=ScheduleConfig("multistep", gamma=0.5, milestones=(0.5, 0.75)))
    assert [m.scheduled_lr for m in history] == pytest.approx([0.01, 0.01, 0.005, 0.0025])


def test_constant_schedule_keeps_the_rate(split):
    _, history = run(split, schedule=ScheduleConfig("constant"))
    assert [m.scheduled_lr for m in history] == [0.01] * 3


def test_warmup_ramps_the_rate_per_batch_then_hands_over_to_the_schedule():
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [weight], "lr": 0.1}], lr=0.1)
    schedule = LRSchedule(optimizer, ScheduleConfig("constant", warmup_epochs=1.5), epochs=3, steps_per_epoch=4)
    seen = []
    for _ in range(3):
        for _ in range(4):
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.after_batch()
        schedule.after_epoch()
    ramp = seen[:7]  # 1.5 epochs × 4 batches = 6 warmup steps, then the full rate
    assert all(a < b for a, b in zip(ramp, ramp[1:], strict=False)) and ramp[0] == pytest.approx(0.1 / 7)
    assert seen[6:] == pytest.approx([0.1] * 6)


def test_warmup_lowers_the_recorded_rate_of_the_first_epoch_only(split):
    _, history = run(split, schedule=ScheduleConfig("constant", warmup_epochs=1.0))
    assert history[0].scheduled_lr < 0.01 * 0.6 and [m.scheduled_lr for m in history[1:]] == pytest.approx([0.01, 0.01])


# ---------------------------------------------------------------- regularisers


def test_label_smoothing_changes_the_training_loss(split):
    _, plain = run(split, epochs=1)
    _, smooth = run(split, epochs=1, regularise=RegulariseConfig(label_smoothing=0.3))
    assert smooth[0].train_loss > plain[0].train_loss  # smoothed targets cost more on the same predictions


def test_mixup_changes_the_training_targets_to_soft_labels():
    torch.manual_seed(0)
    images, labels = torch.rand(16, 3, 8, 8), torch.arange(16) % 4
    mixed, targets = batch_mixer(RegulariseConfig(mixup_alpha=1.0), num_classes=4)(images, labels)
    assert targets.shape == (16, 4) and torch.allclose(targets.sum(1), torch.ones(16))
    assert not torch.equal(targets, torch.nn.functional.one_hot(labels, 4).float())
    assert mixed.shape == images.shape and not torch.equal(mixed, images)


def test_cutmix_pastes_patches_and_mixes_the_targets_by_area():
    torch.manual_seed(1)
    images, labels = torch.rand(8, 3, 16, 16), torch.arange(8) % 4
    mixed, targets = batch_mixer(RegulariseConfig(cutmix_alpha=1.0), num_classes=4)(images, labels)
    changed = (mixed != images).any(1)  # pixels taken from another image
    assert changed.any() and not changed.all()
    assert targets.max() < 1.0


def test_mixup_in_fit_trains_on_other_targets(split):
    _, plain = run(split, epochs=1)
    _, mixed = run(split, epochs=1, regularise=RegulariseConfig(mixup_alpha=0.4))
    assert mixed[0].train_loss != plain[0].train_loss


def test_l2sp_is_zero_at_the_pretrained_weights_and_grows_away_from_them():
    model = toy_model()
    penalty = L2SP(model.features, weight=2.0)
    assert penalty().item() == 0.0
    sizes = []
    for step in (0.01, 0.02):
        with torch.no_grad():
            for name, p in model.features.named_parameters():
                p.copy_(penalty.anchor[name] + step)  # every weight `step` away from its pretrained value
        sizes.append(penalty().item())
    n = sum(p.numel() for p in model.features.parameters())
    assert sizes == pytest.approx([0.5 * 2.0 * n * 0.01**2, 0.5 * 2.0 * n * 0.02**2], rel=1e-4)


def test_l2sp_counts_only_trainable_backbone_weights():
    model = toy_model()
    penalty = L2SP(model.features, weight=1.0)
    with torch.no_grad():
        for p in model.features.parameters():
            p.add_(1.0)
    model.apply_policy(FreezePolicy("head_only"))
    assert penalty() is None
    model.apply_policy(FreezePolicy("prefix", freeze_blocks=2))
    assert penalty().item() == pytest.approx(0.5 * sum(p.numel() for p in model.backbone.blocks[2].parameters()))


def test_l2sp_in_fit_keeps_the_backbone_near_its_pretrained_weights(split):
    def drift(l2sp):
        model = toy_model(num_classes=4)
        model.apply_policy(FreezePolicy("full", bn_train=False))
        w0 = [p.detach().clone() for p in model.features.parameters()]
        fit(model, split, config(epochs=2, lr=0.05, regularise=RegulariseConfig(l2sp=l2sp)))
        return sum((p.detach() - w).pow(2).sum().item() for p, w in zip(model.features.parameters(), w0, strict=False))

    assert drift(5.0) < 0.5 * drift(0.0)


# ---------------------------------------------------------------- optimizers


def test_adam_and_adamw_are_different_optimizers_with_weight_decay(split):
    assert type(make_optimizer([torch.nn.Parameter(torch.zeros(1))], config(optimizer="adam"))) is torch.optim.Adam
    adam, _ = run(split, epochs=1, optimizer="adam", weight_decay=0.5)
    adamw, _ = run(split, epochs=1, optimizer="adamw", weight_decay=0.5)
    assert not torch.equal(adam.head[-1].weight, adamw.head[-1].weight)


def test_sgd_nesterov_is_a_choice_and_defaults_to_on():
    params = [torch.nn.Parameter(torch.zeros(1))]
    assert make_optimizer(params, config(optimizer="sgd")).defaults["nesterov"] is True
    assert make_optimizer(params, config(optimizer="sgd", nesterov=False)).defaults["nesterov"] is False
    assert make_optimizer(params, config(optimizer="sgd", momentum=0.0)).defaults["nesterov"] is False
    assert TrialConfig.from_dict({"optimizer": "sgd"}).nesterov == 1
    assert TrialConfig.from_dict({"optimizer": "adam", "nesterov": 1}).nesterov is None


# ---------------------------------------------------------------- the feature cache


def test_mixing_or_a_policy_augmentation_disables_the_feature_cache():
    model = toy_model()
    model.apply_policy(FreezePolicy("head_only"))
    plain = config()
    assert features_cacheable(model, plain.augment, plain.regularise)
    for regularise in (RegulariseConfig(mixup_alpha=0.2), RegulariseConfig(cutmix_alpha=1.0)):
        assert not features_cacheable(model, plain.augment, regularise)
    assert cache_blockers(plain.augment, RegulariseConfig(mixup_alpha=0.2, cutmix_alpha=1.0)) == ["mixup_alpha", "cutmix_alpha"]
    assert inputs_vary(TrialConfig.from_dict({"auto_augment": "trivialaugment"}))
    assert not inputs_vary(TrialConfig.from_dict({"label_smoothing": 0.1, "l2sp": 0.01}))


# ---------------------------------------------------------------- config → fit


def test_trial_defaults_give_the_plain_recipe():
    cfg = TrialConfig.from_dict({})
    assert schedule_config(cfg) == ScheduleConfig() and regularise_config(cfg) == RegulariseConfig()
    assert (cfg.schedule, cfg.step_size, cfg.gamma, cfg.milestones, cfg.auto_augment) == ("cosine", None, None, None, "none")


def test_schedule_settings_come_from_the_trial_config():
    cfg = TrialConfig.from_dict({"schedule": "multistep", "gamma": 0.3, "milestones": "0.25,0.5", "warmup_epochs": 0.5})
    assert schedule_config(cfg) == ScheduleConfig("multistep", step_size=1, gamma=0.3, milestones=(0.25, 0.5), warmup_epochs=0.5)


def roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_a_resumed_run_with_every_recipe_on_matches_the_uninterrupted_run(split):
    from tune_tl.data.augment import AugmentConfig

    cfg = config(epochs=3, optimizer="adam", schedule=ScheduleConfig("step", step_size=1, gamma=0.5, warmup_epochs=1.5),
                 regularise=RegulariseConfig(label_smoothing=0.1, mixup_alpha=0.2, cutmix_alpha=1.0, l2sp=0.1),
                 augment=AugmentConfig(auto_augment="trivialaugment"))
    small = Split(split.train_x[:32], split.train_y[:32], split.val_x[:8], split.val_y[:8])
    states = []
    full = fit(toy_model(num_classes=4), small, cfg, on_state=lambda m, s: states.append(roundtrip(s)))
    torch.manual_seed(99)
    resumed = fit(toy_model(num_classes=4), small, cfg, resume=states[0])
    assert [(m.train_loss, m.val_loss, m.scheduled_lr) for m in full] == [(m.train_loss, m.val_loss, m.scheduled_lr) for m in resumed]


# ---------------------------------------------------------------- the space file


@pytest.mark.parametrize(
    "text, message",
    [
        ("params:\n  optimizer: [adamw, adam]\n  nesterov: 1\n", "params.nesterov applies only when optimizer is sgd"),
        ("params:\n  step_size: 2\n", "params.step_size applies only when schedule is step"),
        ("params:\n  schedule: cosine\n  gamma: 0.5\n", "params.gamma applies only when schedule is step or multistep"),
        ("params:\n  schedule: step\n  gamma: 0\n", "params.gamma: must be in (0, 1]"),
        ("params:\n  schedule: step\n  step_size: 0\n", "params.step_size: must be at least 1"),
        ("params:\n  label_smoothing: 0.5\n", "params.label_smoothing: must be in [0, 0.3]"),
        ("params:\n  schedule: multistep\n  milestones: [0.5, 0.75]\n", "write milestones as one quoted string"),
        ("params:\n  schedule: multistep\n  milestones: '0.8,0.5'\n", "must be increasing fractions of max_epochs"),
        ("params:\n  mixup_alpha: -0.2\n", "params.mixup_alpha: must be 0 or more"),
        ("params:\n  auto_augment: autoaugment\n", "params.auto_augment: 'autoaugment' is not one of"),
        ("params:\n  schedule: onecycle\n", "params.schedule: 'onecycle' is not one of"),
    ],
)
def test_bad_recipe_parameters_are_rejected_with_the_key_named(tmp_path, text, message):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(TuneTLError) as err:
        load_space(path)
    assert message in str(err.value)


def test_tune_tl_validate_accepts_the_recipes_space(capsys):
    from pathlib import Path

    from tune_tl.cli import main

    path = Path(__file__).parent.parent / "search_spaces" / "recipes.yaml"
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    for name in ("optimizer", "schedule", "step_size", "gamma", "milestones", "warmup_epochs", "label_smoothing",
                 "mixup_alpha", "cutmix_alpha", "auto_augment", "l2sp", "nesterov"):
        assert name in out


def test_a_python_space_can_choose_the_recipe_parameters_by_name(tmp_path):
    path = tmp_path / "space.py"
    path.write_text(
        "def space(trial):\n"
        "    opt = trial.suggest_categorical('optimizer', ['sgd', 'adam'])\n"
        "    if opt == 'sgd':\n"
        "        trial.suggest_categorical('nesterov', [0, 1])\n"
        "    if trial.suggest_categorical('schedule', ['multistep', 'cosine']) == 'multistep':\n"
        "        trial.suggest_categorical('milestones', ['0.5,0.75', '0.3'])\n"
        "    trial.suggest_float('warmup_epochs', 0.0, 1.0)\n"
        "    trial.suggest_categorical('auto_augment', ['none', 'randaugment'])\n"
        "    return {'l2sp': 0.01, 'mixup_alpha': 0.2, 'cutmix_alpha': 1.0, 'label_smoothing': 0.1}\n"
    )
    spec = load_space(path)  # probes space(trial) through TrialConfig: every name must be known
    assert spec.space_fn is not None


def test_the_search_log_names_the_parameters_that_keep_trials_off_the_feature_cache(tmp_path, caplog):
    import logging

    from tune_tl.search.run import _log_uncacheable

    path = tmp_path / "space.yaml"
    path.write_text("params:\n  mixup_alpha: [0.0, 0.2]\n  cutmix_alpha: 0.0\n  auto_augment: [none, randaugment]\n  aug_flip: 0\n")
    with caplog.at_level(logging.INFO, logger="tune_tl.search.run"):
        _log_uncacheable(load_space(path))
    assert "trials with mixup_alpha, auto_augment on change their inputs every epoch and train without it" in caplog.text
