"""The textbook transfer-learning recipes a search tries first, restricted to the user's space.

A person fine-tuning a pretrained network tries these before anything else; a search that reaches
them only by chance (random start-up trials) loses to a single textbook run. They are enqueued in the
Optuna study (``study.enqueue_trial``) so the first trials of a search are, in order:

1. whole-model fine-tune: AdamW, lr 1e-3, linear head, no linear-probe phase;
2. linear probe: only the head trains (AdamW, lr 1e-3);
3. LP→FT: one linear-probe epoch, then the whole model (Kumar et al., 2022).

After the search's stage-0 probes (``search.probes``) the linear probe is already there, fitted exactly, and
a linear head starts from it (``head_init: probe``), so a fine-tune *is* LP→FT without the LP epochs: the
recipes are then the fine-tune of the top blocks (the last three frozen-prefix steps trainable: cheap, and
cheaper still with the boundary cache) and the whole-model fine-tune (:data:`AFTER_PROBES`). Under a time budget
whose third cannot hold one whole-model epoch (``whole_model_fits``, judged by ``search.tuner`` from the probes'
measured seconds), the second is the fine-tune of the top half instead (:data:`SHORT_BUDGET`): on 1,600 photos at
224 px on two cores a Lite0 whole-model epoch took 349 s of a 452 s Tuner budget and scored below the probe, while
the search finished its fine-tune of the top blocks and had time for nothing else. Its frozen prefix ends at the
deepest boundary the probes' pass kept at or above half the blocks (:func:`top_half`), so its first epoch reads
that boundary instead of decoding every image.

Only values inside the space are enqueued: Optuna would otherwise use an out-of-range fixed value
(with a warning). A recipe whose defining choice (its freeze policy, its ``lp_epochs``) the space
does not allow is skipped; any other value outside the space is left to the sampler. Identical
recipes (e.g. in a space where everything is fixed) are enqueued once, and not at all when nothing
would be fixed. Python spaces (``space(trial)``) get no textbook start: their parameters are unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tune_tl.config.distributions import Fixed, ParamSpec, contains
from tune_tl.config.params import PARAMS, is_active

#: What every recipe shares: AdamW 1e-3 under the default cosine schedule, a linear head, and every
#: regulariser and augmentation off (a wider space must not turn a textbook trial into a MixUp trial).
_COMMON = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "head": "linear", "head_lr_mult": 1.0,
           "layer_decay": 1.0, "bn_stats": "update", "aug_crop_scale": 1.0, "aug_flip": 0, "aug_rotate": 0.0, "aug_jitter": 0.0,
           "schedule": "cosine", "warmup_epochs": 0.0, "label_smoothing": 0.0, "mixup_alpha": 0.0, "cutmix_alpha": 0.0,
           "auto_augment": "none", "l2sp": 0.0}

#: (name, the values that define it, every value). A recipe is skipped unless its defining values fit.
RECIPES: tuple[tuple[str, dict[str, Any], dict[str, Any]], ...] = (
    ("fine-tune", {"freeze_policy": "full", "lp_epochs": 0}, _COMMON),
    ("linear probe", {"freeze_policy": "head_only", "lp_epochs": 0}, _COMMON),
    ("LP→FT", {"freeze_policy": "full", "lp_epochs": 1}, _COMMON),
)
#: The blocks the fine-tune of the top blocks trains (after the probes).
TOP_BLOCKS = 3
#: The recipes when the probes ran (see the module docstring); a negative ``freeze_blocks`` counts from the last block.
AFTER_PROBES: tuple[tuple[str, dict[str, Any], dict[str, Any]], ...] = (
    ("fine-tune of the top blocks", {"freeze_policy": "prefix", "freeze_blocks": -TOP_BLOCKS, "lp_epochs": 0}, _COMMON),
    ("fine-tune", {"freeze_policy": "full", "lp_epochs": 0}, _COMMON),
)
#: The second recipe after the probes when a whole-model epoch would take more than a third of the time left.
SHORT_BUDGET = ("fine-tune of the top half", {"freeze_policy": "prefix", "freeze_blocks": "half", "lp_epochs": 0}, _COMMON)
#: Alternatives when a defining value is outside the space (``prefix`` with 0 / all frozen blocks).
_ALTERNATIVES = {("freeze_policy", "full"): {"freeze_policy": "prefix", "freeze_blocks": 0},
                 ("freeze_policy", "head_only"): {"freeze_policy": "prefix", "freeze_blocks": "all"}}


def textbook_trials(params: tuple[ParamSpec, ...], num_blocks: int, after_probes: bool = False,
                    whole_model_fits: bool = True, kept: Sequence[int] = ()) -> list[tuple[str, dict[str, Any]]]:
    """``(recipe name, Optuna params to enqueue)`` for each textbook recipe that fits ``params``.

    ``params`` are the space's parameters with block symbols resolved (a :class:`~tune_tl.search.plan.BackbonePlan`'s ``params``);
    ``after_probes``: the search's probes ran (:data:`AFTER_PROBES` instead of :data:`RECIPES`); ``whole_model_fits``
    false: the time budget is too short for a whole-model epoch (:data:`SHORT_BUDGET` replaces it after the probes);
    ``kept``: the freeze boundaries the probe of this backbone kept (:func:`top_half`).
    """
    space = {p.name: p.dist for p in params}
    out: list[tuple[str, dict[str, Any]]] = []
    recipes = RECIPES
    if after_probes:
        recipes = AFTER_PROBES if whole_model_fits else (AFTER_PROBES[0], SHORT_BUDGET)
    for name, defining, values in recipes:
        chosen = fit_to_space(defining, space, num_blocks, top_half(num_blocks, kept))
        if chosen is None:
            continue
        enqueue: dict[str, Any] = {}
        full = {**values, **chosen}
        for key, value in full.items():
            if key in space and not isinstance(space[key], Fixed) and is_active(key, full) and contains(space[key], value):
                enqueue[key] = value
        if enqueue and enqueue not in [e for _, e in out]:
            out.append((name, enqueue))
    return out


def top_half(num_blocks: int, kept: Sequence[int] = ()) -> int:
    """The blocks the fine-tune of the top half freezes: half of them, or, when the probes' pass kept no boundary
    there, the deepest one it kept between half and the top-blocks recipe's. On chest X-rays the probe of Lite2 at
    260 px kept blocks 5 to 8 (the 4-block boundary did not fit ``training.forward_once.BUDGET_BYTES``); the fine-tune
    freezing 4 decoded every image in its first epoch, 205 s of the Tuner's 310, beside 57-s epochs from the boundary."""
    half = num_blocks // 2
    deeper = [k for k in kept if half <= k < num_blocks - TOP_BLOCKS]
    return half if half in kept or not deeper else min(deeper)


def fit_to_space(defining: dict[str, Any], space: dict, num_blocks: int, half: int | None = None) -> dict[str, Any] | None:
    """``defining`` values made to fit ``space`` (name -> distribution, block symbols resolved), or ``None`` when
    they cannot: ``head_only`` becomes ``prefix`` with every block frozen, ``full`` becomes ``prefix`` with none.
    ``half``: what ``freeze_blocks: half`` means (default: half the blocks)."""
    chosen: dict[str, Any] = {}
    for key, value in defining.items():
        if key == "freeze_blocks" and value == "half":
            value = num_blocks // 2 if half is None else half
        if key == "freeze_blocks" and isinstance(value, int) and value < 0:
            value = max(0, num_blocks + value)
        if _allowed(space, key, value):
            chosen[key] = value
            continue
        alt = _ALTERNATIVES.get((key, value))
        if alt is None:
            return None
        alt = {k: (num_blocks if v == "all" else v) for k, v in alt.items()}
        if not all(_allowed(space, k, v) for k, v in alt.items()):
            return None
        chosen.update(alt)
    return chosen


def _allowed(space: dict, key: str, value: Any) -> bool:
    """A value the trial will run with: inside the space, or the parameter's default when not searched."""
    if key not in space:
        return value == PARAMS[key].default
    return contains(space[key], value)
