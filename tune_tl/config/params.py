"""The hyperparameters a trial can have: names, types, defaults, and when each applies.

One registry serves the space loader (which keys are allowed), the sampler (conditional
parameters), the trainable (``TrialConfig.from_dict``) and the Parquet schema (column types), so
the same name means the same thing in YAML, Optuna, the Ray config and the results.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

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


PARAMS: dict[str, Param] = {
    # Set by the space's backbone.name (a list makes it a choice), never under params; first, because the
    # block parameters' bounds depend on it. None = the search's one backbone (configs from before the choice).
    "backbone": Param(str, None, "the pretrained backbone (backbone.name in the space file)"),
    "resolution": Param(int, 64, "input image side in pixels; data is prepared once per value"),
    "batch_size": Param(int, 64, "training batch size"),
    "freeze_policy": Param(str, "prefix", "what is trained: prefix (blocks after freeze_blocks), surgical (one block), "
                           "head_only (linear probe) or full", choices=("prefix", "surgical", "head_only", "full")),
    "freeze_blocks": Param(int, 0, "leading backbone blocks frozen: 0 = full fine-tune, all = linear probe",
                           when=("freeze_policy", "prefix")),
    "train_block": Param(int, 0, "the one backbone block trained (0 = stem) under the surgical policy",
                         when=("freeze_policy", "surgical")),
    "bn_stats": Param(str, "update", "BatchNorm running statistics of trainable blocks: update, or keep the "
                      "pretrained ones (frozen)", choices=("update", "frozen"), when=("freeze_policy", ("prefix", "surgical", "full"))),
    "lp_epochs": Param(int, 0, "linear-probe epochs (head only) before the freeze policy applies; 0 = off"),
    "optimizer": Param(str, "adamw", "optimizer", choices=("adamw", "sgd")),
    "lr": Param(float, 1e-3, "peak learning rate (cosine-annealed over max_epochs)"),
    "weight_decay": Param(float, 1e-4, "decoupled (AdamW) or L2 (SGD) weight decay"),
    "head_lr_mult": Param(float, 1.0, "the head's learning rate is lr × head_lr_mult"),
    "layer_decay": Param(float, 1.0, "block learning rate = lr × layer_decay^depth (depth 1 = the block next "
                         "to the head)"),
    "momentum": Param(float, 0.9, "SGD momentum", when=("optimizer", "sgd")),
    "head": Param(str, "linear", "classifier head design", choices=("linear", "mlp")),
    "head_hidden": Param(int, 256, "hidden width of the MLP head", when=("head", "mlp")),
    "head_dropout": Param(float, 0.0, "dropout before the MLP head's last layer", when=("head", "mlp")),
    # Training augmentation, applied per image on the trial's device; each default switches it off.
    "aug_crop_scale": Param(float, 1.0, "random resized crop: smallest area fraction kept, in (0, 1]; 1.0 = off"),
    "aug_flip": Param(int, 0, "random horizontal flip: 1 = on, 0 = off", choices=(0, 1)),
    "aug_rotate": Param(float, 0.0, "random rotation within ±degrees, 0..180; 0 = off"),
    "aug_jitter": Param(float, 0.0, "brightness and contrast factors drawn from 1 ± jitter, in [0, 1); 0 = off"),
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
    """Return ``value`` as parameter ``name``'s type, or raise naming ``where``."""
    param = PARAMS[name]
    if param.type is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = float(value)
    elif param.type is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    elif param.choices == (0, 1) and isinstance(value, bool):  # a switch: YAML's true/false/on/off
        value = int(value)
    if not isinstance(value, param.type) or isinstance(value, bool):
        raise TuneTLError(f"{where}: expected {param.type.__name__}, got {value!r}")
    if param.choices is not None and value not in param.choices:
        raise TuneTLError(f"{where}: {value!r} is not one of {list(param.choices)}")
    return value


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
    aug_crop_scale: float = 1.0
    aug_flip: int = 0
    aug_rotate: float = 0.0
    aug_jitter: float = 0.0

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "TrialConfig":
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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


assert set(PARAMS) == {f.name for f in dataclasses.fields(TrialConfig)}, "PARAMS and TrialConfig disagree"
