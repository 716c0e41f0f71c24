"""The hyperparameters a trial can have: names, types, defaults, and when each applies.

One registry serves the space loader (which keys are allowed), the sampler (conditional
parameters), the trainable (``TrialConfig.from_dict``) and the Parquet schema (column types), so
the same name means the same thing in YAML, Optuna, the Ray config and the results.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tune_tl.errors import TuneTLError


@dataclass(frozen=True)
class Param:
    """One known hyperparameter."""

    type: type
    default: Any
    help: str
    choices: tuple | None = None
    #: ``(other_param, value)``: this parameter exists only when ``other_param == value``;
    #: ``value`` may be a tuple of values, any of which activates it.
    when: tuple[str, Any] | None = None
    #: Bounds of a number: every value (fixed, choice, range end, trial config) must lie within them.
    minimum: float | None = None
    maximum: float | None = None
    #: Whether the bounds themselves are excluded (``(0, 1]`` = exclusive_minimum only).
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    #: Why the bounds are what they are, appended to the error message.
    why: str = ""

    def interval(self) -> str:
        """The allowed values as words, e.g. ``in (0, 1]``, ``positive`` or ``at least 2``."""
        lo, hi = self.minimum, self.maximum
        if lo is not None and hi is not None:
            return f"in {'(' if self.exclusive_minimum else '['}{lo:g}, {hi:g}{')' if self.exclusive_maximum else ']'}"
        if lo is not None:
            if lo == 0:
                return "positive" if self.exclusive_minimum else "0 or more"
            return f"greater than {lo:g}" if self.exclusive_minimum else f"at least {lo:g}"
        return f"less than {hi:g}" if self.exclusive_maximum else f"at most {hi:g}"

    def check(self, value: Any, where: str) -> Any:
        """Return ``value`` if it is finite and within the bounds; otherwise raise naming ``where``."""
        if isinstance(value, float) and not math.isfinite(value):
            raise TuneTLError(f"{where}: {value} is not a finite number")
        if not isinstance(value, (int, float)) or (self.minimum is None and self.maximum is None):
            return value
        lo, hi = self.minimum, self.maximum
        too_low = lo is not None and (value <= lo if self.exclusive_minimum else value < lo)
        too_high = hi is not None and (value >= hi if self.exclusive_maximum else value > hi)
        if too_low or too_high:
            why = f" ({self.why})" if self.why else ""
            raise TuneTLError(f"{where}: must be {self.interval()}, got {value}{why}")
        return value


PARAMS: dict[str, Param] = {
    # Set by the space's backbone.name (a list makes it a choice), never under params; first, because the
    # block parameters' bounds depend on it. None = the search's one backbone (configs from before the choice).
    "backbone": Param(str, None, "the pretrained backbone (backbone.name in the space file)"),
        "resolution": Param(int, 64, "input image side in pixels; data is prepared once per value",
                        minimum=32, maximum=1024, why="32 px is the least ImageNet backbones take; above 1024 px the prepared "
                        "images would not fit in memory"),
    "batch_size": Param(int, 64, "training batch size", minimum=2, maximum=65536,
                        why="BatchNorm cannot train on one image, so a batch of 1 would be dropped"),
    "freeze_policy": Param(str, "prefix", "what is trained: prefix (blocks after freeze_blocks), surgical (one block), "
                           "head_only (linear probe) or full", choices=("prefix", "surgical", "head_only", "full")),
    "freeze_blocks": Param(int, 0, "leading backbone blocks frozen: 0 = full fine-tune, all = linear probe",
                           when=("freeze_policy", "prefix"), minimum=0),
    "train_block": Param(int, 0, "the one backbone block trained (0 = stem) under the surgical policy",
                         when=("freeze_policy", "surgical"), minimum=0),
    "bn_stats": Param(str, "update", "BatchNorm running statistics of trainable blocks: update, or keep the "
                      "pretrained ones (frozen)", choices=("update", "frozen"), when=("freeze_policy", ("prefix", "surgical", "full"))),
    "lp_epochs": Param(int, 0, "linear-probe epochs (head only) before the freeze policy applies; 0 = off", minimum=0),
    "optimizer": Param(str, "adamw", "optimizer", choices=("adamw", "sgd", "adam")),
    "lr": Param(float, 1e-3, "peak learning rate (cosine-annealed over max_epochs)", minimum=0.0, exclusive_minimum=True),
    "weight_decay": Param(float, 1e-4, "decoupled (AdamW) or L2 (SGD) weight decay", minimum=0.0),
    "head_lr_mult": Param(float, 1.0, "the head's learning rate is lr × head_lr_mult", minimum=0.0, exclusive_minimum=True),
    "layer_decay": Param(float, 1.0, "block learning rate = lr × layer_decay^depth (depth 1 = the block next "
                         "to the head)", minimum=0.0, maximum=1.0, exclusive_minimum=True,
                         why="1 = the same learning rate at every depth"),
    "momentum": Param(float, 0.9, "SGD momentum", when=("optimizer", "sgd"), minimum=0.0, maximum=1.0, exclusive_maximum=True),
    "head": Param(str, "linear", "classifier head design", choices=("linear", "mlp")),
    "head_hidden": Param(int, 256, "hidden width of the MLP head", when=("head", "mlp"), minimum=1, maximum=65536),
    "head_dropout": Param(float, 0.0, "dropout before the MLP head's last layer", when=("head", "mlp"),
                          minimum=0.0, maximum=1.0, exclusive_maximum=True, why="a dropout of 1 zeroes every input"),
    "head_init": Param(str, "probe", "a linear head starts from the search's linear probe for the trial's backbone and "
                       "resolution when there is one (LP→FT without spending epochs), or random", choices=("probe", "random"),
                       when=("head", "linear")),
    # Training augmentation, applied per image on the trial's device; each default switches it off.
    "aug_crop_scale": Param(float, 1.0, "random resized crop: smallest area fraction kept, in (0, 1]; 1.0 = off",
                            minimum=0.0, maximum=1.0, exclusive_minimum=True),
    "aug_flip": Param(int, 0, "random horizontal flip: 1 = on, 0 = off", choices=(0, 1)),
    "aug_rotate": Param(float, 0.0, "random rotation within ±degrees, 0..180; 0 = off", minimum=0.0, maximum=180.0),
    "aug_jitter": Param(float, 0.0, "brightness and contrast factors drawn from 1 ± jitter, in [0, 1); 0 = off",
                        minimum=0.0, maximum=1.0, exclusive_maximum=True),
    # Fine-tuning recipes (Quick-Tune's space): schedule, warmup, loss regularisers, policy augmentation.
    # Each default reproduces the plain recipe above (SGD is Nesterov by default, as it always was).
    "nesterov": Param(int, 1, "SGD with Nesterov momentum: 1 = on, 0 = off", choices=(0, 1), when=("optimizer", "sgd")),
    "schedule": Param(str, "cosine", "learning-rate schedule over max_epochs (torch.optim.lr_scheduler, stepped per "
                      "epoch)", choices=("cosine", "step", "multistep", "constant")),
    "step_size": Param(int, 1, "StepLR: epochs between decays", when=("schedule", "step"), minimum=1),
    "gamma": Param(float, 0.1, "StepLR/MultiStepLR: factor applied at each decay", when=("schedule", ("step", "multistep")),
                   minimum=0.0, maximum=1.0, exclusive_minimum=True, why="the factor applied at each decay"),
    "milestones": Param(str, "0.5,0.75", "MultiStepLR: decay points as fractions of max_epochs, e.g. '0.5,0.75'",
                        when=("schedule", "multistep")),
    "warmup_epochs": Param(float, 0.0, "linear warmup (stepped per batch) at the start of the schedule; may be "
                           "fractional; 0 = off", minimum=0.0),
    "first_epoch_fraction": Param(float, 1.0, "the first epoch trains on a stratified subset of this fraction of the train "
                                  "images (a cheaper first rung; scored on all of val); later epochs on all; 1.0 = off",
                                  minimum=0.0, maximum=1.0, exclusive_minimum=True),
    "label_smoothing": Param(float, 0.0, "cross-entropy label smoothing of the training loss", minimum=0.0, maximum=0.3),
    "mixup_alpha": Param(float, 0.0, "MixUp Beta(alpha, alpha) on each training batch; 0 = off", minimum=0.0),
    "cutmix_alpha": Param(float, 0.0, "CutMix Beta(alpha, alpha) on each training batch; 0 = off (with mixup, "
                          "one of the two per batch)", minimum=0.0),
    "auto_augment": Param(str, "none", "augmentation policy per training image: none, randaugment or "
                          "trivialaugment (torchvision)", choices=("none", "randaugment", "trivialaugment")),
    "l2sp": Param(float, 0.0, "L2-SP: l2sp/2 × squared distance of the trainable backbone weights from the "
                  "pretrained ones, added to the loss; 0 = off", minimum=0.0),
}


def is_active(name: str, values: Mapping[str, Any]) -> bool:
    """Whether ``name`` applies given the other parameters' values (conditional parameters)."""
    when = PARAMS[name].when
    if when is None:
        return True
    parent, wanted = when
    if not is_active(parent, values):
        return False
    value = values.get(parent, PARAMS[parent].default)
    return value in wanted if isinstance(wanted, tuple) else value == wanted


def coerce(name: str, value: Any, where: str) -> Any:
    """Return ``value`` as parameter ``name``'s type within its bounds, or raise naming ``where``."""
    param = PARAMS[name]
    if param.type is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = float(value)
    elif param.type is int and isinstance(value, float) and value.is_integer() or param.choices == (0, 1) and isinstance(value, bool):
        value = int(value)
    if not isinstance(value, param.type) or isinstance(value, bool):
        raise TuneTLError(f"{where}: expected {param.type.__name__}, got {value!r}")
    if param.choices is not None and value not in param.choices:
        raise TuneTLError(f"{where}: {value!r} is not one of {list(param.choices)}")
    if name == "milestones":
        parse_milestones(value, where)
    return param.check(value, where)


@dataclass(frozen=True)
class TrialConfig:
    """One trial's hyperparameters, parsed strictly from Ray's config dict.

    Inactive conditional parameters are ``None`` (for example ``momentum`` under AdamW).
    """

    backbone: str | None = None
    resolution: int = 64
    batch_size: int = 64
    freeze_policy: str = "prefix"
    freeze_blocks: int | None = 0
    train_block: int | None = None
    bn_stats: str | None = "update"
    lp_epochs: int = 0
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    head_lr_mult: float = 1.0
    layer_decay: float = 1.0
    momentum: float | None = None
    head: str = "linear"
    head_hidden: int | None = None
    head_dropout: float | None = None
    head_init: str | None = "probe"
    aug_crop_scale: float = 1.0
    aug_flip: int = 0
    aug_rotate: float = 0.0
    aug_jitter: float = 0.0
    nesterov: int | None = None
    schedule: str = "cosine"
    step_size: int | None = None
    gamma: float | None = None
    milestones: str | None = None
    warmup_epochs: float = 0.0
    first_epoch_fraction: float = 1.0
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    auto_augment: str = "none"
    l2sp: float = 0.0

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> TrialConfig:
        """Parse a config dict; unknown keys and wrong types are errors, missing keys take defaults."""
        unknown = sorted(set(config) - set(PARAMS))
        if unknown:
            raise TuneTLError(f"trial config: unknown parameter(s) {unknown}; known: {sorted(PARAMS)}")
        values = {name: coerce(name, v, f"trial config key '{name}'") for name, v in config.items()}
        for name, param in PARAMS.items():
            if not is_active(name, values):
                values[name] = None
            elif name not in values:
                values[name] = param.default
        return cls(**values)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TrialConfig:
        """The config of a row of the ``trials`` table (a pandas row or dict; nulls are inactive parameters)."""
        values = {name: row[name] for name in PARAMS if name in row and row[name] is not None and row[name] == row[name]}
        return cls.from_dict({name: PARAMS[name].type(v) for name, v in values.items()})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_milestones(text: str, where: str = "milestones") -> tuple[float, ...]:
    """``'0.5,0.75'`` → ``(0.5, 0.75)``: increasing fractions of max_epochs, each in (0, 1)."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise TuneTLError(f"{where}: {text!r} is not a comma-separated list of numbers such as '0.5,0.75'") from None
    if not all(0 < v < 1 for v in values) or list(values) != sorted(set(values)):
        raise TuneTLError(f"{where}: {text!r} must be increasing fractions of max_epochs, each in (0, 1), e.g. '0.5,0.75'")
    return values
