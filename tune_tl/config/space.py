"""Read and validate a search-space file; compile it to an Optuna define-by-run function.

A space file is YAML (declarative, what users edit) or a Python file defining ``space(trial)``.
Every mistake is reported with the file and the key, before any Ray work starts.

Example:
    >>> spec = load_space("search_spaces/default.yaml")
    >>> spec.budget.max_epochs
    4
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import importlib.util
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from tune_tl.errors import TuneTLError
from tune_tl.config.params import PARAMS, TrialConfig, coerce, is_active

DEFAULT_SPACE = Path(__file__).resolve().parents[2] / "search_spaces" / "default.yaml"
ALL = "all"  # freeze_blocks upper bound meaning "every block" (a linear probe)
LAST = "last"  # train_block value meaning "the last block"
NATIVE = "native"  # resolution (fixed, or a range's high) meaning "the side each backbone's weights were trained at"
#: Parameters that name backbone blocks: (symbolic value, what it stands for, highest valid index).
SEED_MAX = 2**32 - 1
MAX_SPACE_BYTES = 1 << 20
BLOCK_PARAMS = {"freeze_blocks": (ALL, lambda n: n), "train_block": (LAST, lambda n: n - 1)}


@dataclass(frozen=True)
class Fixed:
    value: Any


@dataclass(frozen=True)
class Choice:
    values: tuple


@dataclass(frozen=True)
class Range:
    low: Any
    high: Any
    log: bool = False
    step: Any = None


@dataclass(frozen=True)
class ParamSpec:
    name: str
    dist: Fixed | Choice | Range


@dataclass(frozen=True)
class DataSpec:
    source: str = "digits"
    path: str | None = None
    val_fraction: float = 0.2
    #: Decoded images above this size are streamed from files per epoch instead of shared in memory.
    memory_budget_mb: float = 4096.0
    #: Leave out corrupt/unreadable/non-image files (listed in skipped_images.txt) instead of failing.
    skip_bad_images: bool = False


@dataclass(frozen=True)
class BackboneSpec:
    #: One backbone, or a tuple of names: then the backbone is a search parameter (``backbone`` column).
    name: str | tuple[str, ...] = "efficientnet_lite0"
    weights: str = "imagenet"

    def __post_init__(self):
        if isinstance(self.name, list):  # read back from search.json
            object.__setattr__(self, "name", tuple(self.name))

    @property
    def names(self) -> tuple[str, ...]:
        """Every candidate backbone, in the space file's order."""
        return (self.name,) if isinstance(self.name, str) else tuple(self.name)

    @property
    def is_choice(self) -> bool:
        return not isinstance(self.name, str)


@dataclass(frozen=True)
class SelectionSpec:
    """``backbone_selection``: rank the listed backbones on the data first and search only the ``top`` best."""

    top: int = 1
    #: The ranking column: ``logme`` or ``probe_acc`` (see ``tune-tl rank``).
    by: str = "logme"


@dataclass(frozen=True)
class BudgetSpec:
    samples: int = 12
    max_epochs: int = 4
    grace_period: int = 1
    reduction_factor: float = 3.0
    #: Seconds the search may run (``--time-budget``); ``None`` = no limit.
    time: float | None = None


@dataclass(frozen=True)
class SearchSpec:
    """A validated search: what data, which backbone, how much budget, which parameters."""

    data: DataSpec = DataSpec()
    backbone: BackboneSpec = BackboneSpec()
    budget: BudgetSpec = BudgetSpec()
    seed: int = 0
    params: tuple[ParamSpec, ...] = ()
    #: A user's define-by-run function (Python space files); ``None`` for YAML spaces.
    space_fn: Callable | None = field(default=None, compare=False)
    #: Resolutions a Python space may sample (YAML spaces derive them from ``params``).
    declared_resolutions: tuple[int, ...] = (64,)
    source: str = "<built-in>"
    text: str = ""
    #: Keep only the best-ranked backbones of a list (``None``: search every listed backbone).
    backbone_selection: SelectionSpec | None = None

    def resolutions(self) -> list[int]:
        """Every input resolution a trial may ask for; data is prepared once for each."""
        if self.space_fn is not None:
            return sorted(self.declared_resolutions)
        for p in self.params:
            if p.name == "resolution":
                if _uses_native(p.dist):
                    sizes = self.native_sizes()
                    return sorted({r for name in self.backbone.names
                                   for r in _resolutions(_native(p.dist, sizes[name], f"{self.source} (backbone {name})"), self.source)})
                return _resolutions(p.dist, self.source)
        return [PARAMS["resolution"].default]

    def native_sizes(self) -> dict[str, int]:
        """Each candidate backbone's native input side (``resolution: native``)."""
        from tune_tl.models.backbones import native_size

        return {name: native_size(name) for name in self.backbone.names}

    def define_by_run(self, num_blocks: int | Mapping[str, int]) -> Callable:
        """A picklable ``fn(trial) -> constants`` for Ray's ``OptunaSearch``.

        ``num_blocks``: the backbone's block count, or each candidate backbone's (name -> count) when
        ``backbone.name`` is a list; then ``backbone`` is sampled first and ``all``/``last`` mean that
        backbone's own last block.
        """
        if self.space_fn is not None:
            return functools.partial(sample_backbone, self.backbone.names, self.space_fn) if self.backbone.is_choice else self.space_fn
        return functools.partial(sample_per_backbone, self.sub_spaces(num_blocks))

    def sub_spaces(self, num_blocks: int | Mapping[str, int]) -> dict[str, tuple[ParamSpec, ...]]:
        """Each candidate backbone's parameters, block bounds resolved for its block count."""
        blocks = num_blocks if isinstance(num_blocks, Mapping) else dict.fromkeys(self.backbone.names, num_blocks)
        suffix = " (backbone {})" if self.backbone.is_choice else ""
        native = self.native_sizes() if any(p.name == "resolution" and _uses_native(p.dist) for p in self.params) else {}
        return {name: resolve_native(resolve_all(self.params, blocks[name], self.source + suffix.format(name)), native.get(name),
                                     self.source + suffix.format(name))
                for name in self.backbone.names}

    def check_blocks(self, num_blocks: int | Mapping[str, int]) -> None:
        """Raise if ``freeze_blocks`` or ``train_block`` can exceed a backbone's blocks."""
        self.sub_spaces(num_blocks)


#: A resolution range may sample at most this many sizes: data is prepared (and held in memory) once per size.
MAX_RESOLUTIONS = 16


def _resolutions(d: Fixed | Choice | Range, source: str) -> list[int]:
    if isinstance(d, Fixed):
        return [d.value]
    if isinstance(d, Choice):
        return sorted(d.values)
    return resolution_grid(d, source)


def _uses_native(d: Fixed | Choice | Range) -> bool:
    return (d.value if isinstance(d, Fixed) else d.high if isinstance(d, Range) else None) == NATIVE


def _native(d: Fixed | Choice | Range, size: int, where: str) -> Fixed | Choice | Range:
    """``d`` with ``native`` replaced by ``size``; a range's high becomes its largest step at or below ``size``."""
    if isinstance(d, Fixed):
        return Fixed(size) if d.value == NATIVE else d
    if isinstance(d, Range) and d.high == NATIVE:
        if size < d.low:
            raise TuneTLError(f"{where}: params.resolution: low {d.low} is above this backbone's native size {size}; "
                              f"use a low of at most {size}")
        return Range(d.low, d.low + (size - d.low) // d.step * d.step, d.log, d.step)
    return d


def resolve_native(params: tuple[ParamSpec, ...], size: int | None, where: str = "") -> tuple[ParamSpec, ...]:
    """Replace ``native`` in ``resolution`` by ``size`` (one backbone's native side); no-op when ``size`` is ``None``."""
    if size is None:
        return params
    return tuple(ParamSpec(p.name, _native(p.dist, size, where)) if p.name == "resolution" else p for p in params)


def resolution_grid(d: Range, source: str) -> list[int]:
    """Every size a ``resolution`` range can sample: ``low, low+step, ... <= high`` (Optuna's int grid)."""
    where = f"{source}: params.resolution"
    if d.step is not None and d.step < 1:
        raise TuneTLError(f"{where}.step: must be at least 1, got {d.step}")
    if not d.step:
        raise TuneTLError(f"{where}: a range needs a 'step' (e.g. {{low: {d.low}, high: {d.high}, step: 32}}), because "
                          "the data is prepared once per resolution it can sample; or list the choices")
    grid = list(range(int(d.low), int(d.high) + 1, int(d.step)))
    if len(grid) > MAX_RESOLUTIONS:
        raise TuneTLError(f"{where}: low {d.low}, high {d.high}, step {d.step} gives {len(grid)} resolutions; at most "
                          f"{MAX_RESOLUTIONS} (each is prepared in memory): use a larger step")
    return grid


def sample_per_backbone(spaces: Mapping[str, tuple[ParamSpec, ...]], trial) -> dict[str, Any]:
    """Optuna define-by-run over backbones: ``backbone`` first (a choice when there are several), then its sub-space.

    The backbone is returned as a constant when it is fixed, so every trial's config (and the trials
    table's ``backbone`` column) names it.
    """
    if len(spaces) == 1:
        (name, params), = spaces.items()
        return {"backbone": name, **sample_params(params, trial)}
    name = trial.suggest_categorical("backbone", list(spaces))
    return sample_params(spaces[name], trial)


def sample_backbone(names: tuple[str, ...], space_fn: Callable, trial) -> dict[str, Any] | None:
    """A Python space under a list of backbones: the backbone is sampled first, then ``space(trial)``."""
    trial.suggest_categorical("backbone", list(names))
    return space_fn(trial)


def sample_params(params: tuple[ParamSpec, ...], trial) -> dict[str, Any]:
    """Optuna define-by-run: suggest active parameters, return fixed ones as constants.

    Module-level (with the space bound by ``functools.partial``) so Ray can pickle it.
    """
    chosen: dict[str, Any] = {}
    constants: dict[str, Any] = {}
    for p in params:
        if not is_active(p.name, chosen):
            continue
        d = p.dist
        if isinstance(d, Fixed):
            chosen[p.name] = constants[p.name] = d.value
        elif isinstance(d, Choice):
            chosen[p.name] = trial.suggest_categorical(p.name, list(d.values))
        elif PARAMS[p.name].type is int:
            chosen[p.name] = trial.suggest_int(p.name, d.low, d.high, log=d.log, step=d.step or 1)
        else:
            chosen[p.name] = trial.suggest_float(p.name, d.low, d.high, log=d.log, step=d.step)
    return constants


def resolve_all(params: tuple[ParamSpec, ...], num_blocks: int, source: str) -> tuple[ParamSpec, ...]:
    """Replace ``all`` (``freeze_blocks``) and ``last`` (``train_block``) by block indices; check ranges fit."""
    out = []
    for p in params:
        d = p.dist
        if p.name in BLOCK_PARAMS:
            where = f"{source}: params.{p.name}"
            symbol, high = BLOCK_PARAMS[p.name]
            fix = functools.partial(_blocks, symbol=symbol, high=high(num_blocks), num_blocks=num_blocks, where=where)
            if isinstance(d, Range):
                d = Range(fix(d.low), fix(d.high), d.log, d.step)
                if d.low > d.high:
                    raise TuneTLError(f"{where}: low ({d.low}) is greater than high ({d.high}) for this backbone")
            elif isinstance(d, Choice):
                d = Choice(tuple(fix(v) for v in d.values))
            else:
                d = Fixed(fix(d.value))
        out.append(ParamSpec(p.name, d))
    return tuple(out)


def _blocks(value: Any, symbol: str, high: int, num_blocks: int, where: str) -> int:
    if value == symbol:
        return high
    if not 0 <= value <= high:
        raise TuneTLError(f"{where}: {value} is outside 0..{high} (this backbone has {num_blocks} blocks)")
    return value


# ---------------------------------------------------------------- loading


def load_space(path: str | Path | None = None) -> SearchSpec:
    """Load ``path`` (YAML or ``.py``); ``None`` loads the bundled default space."""
    path = Path(path) if path is not None else DEFAULT_SPACE
    text = read_space_text(path)
    if path.suffix == ".py":
        return _load_python(path, text)
    try:
        raw = yaml.load(text, Loader=StrictLoader) or {}  # StrictLoader is a SafeLoader: data, never objects
    except yaml.YAMLError as exc:
        raise TuneTLError(f"{path}: not valid YAML: {_one_line(exc)}") from None
    if not isinstance(raw, dict):
        raise TuneTLError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    spec = parse_settings(raw, str(path), allow_params=True)
    return dataclasses.replace(spec, text=text)


def check_seed(seed: int, where: str) -> int:
    """A seed numpy, scikit-learn, torch and Optuna all accept: 0 .. 2**32 - 1."""
    if not 0 <= seed <= SEED_MAX:
        raise TuneTLError(f"{where}: must be between 0 and {SEED_MAX}, got {seed}")
    return seed


def read_space_text(path: Path) -> str:
    """The text of a space file; a missing, unreadable or non-UTF-8 file is a one-line error."""
    if not path.exists():
        raise TuneTLError(f"search space file {path} does not exist")
    if not path.is_file():
        raise TuneTLError(f"search space file {path} is not a file")
    if path.stat().st_size > MAX_SPACE_BYTES:
        raise TuneTLError(f"search space file {path} is larger than {MAX_SPACE_BYTES // 1024} KiB; is it really a space file?")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TuneTLError(f"search space file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise TuneTLError(f"search space file {path} cannot be read: {exc.strerror or exc}") from None


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key '{key}' appears twice (lines {seen[key]} and {line}); keep one", None)
                seen[key] = line
            except TypeError:  # an unhashable key: SafeLoader reports it below
                continue
        return super().construct_mapping(node, deep=deep)


def _one_line(exc: Exception) -> str:
    """A YAML error (several lines with a caret drawing) as one line."""
    return " ".join(str(exc).split())


def parse_settings(raw: Mapping[str, Any], source: str, allow_params: bool) -> SearchSpec:
    """Build a ``SearchSpec`` from a parsed mapping, rejecting unknown keys and bad values."""
    top = {"seed", "data", "backbone", "backbone_selection", "budget"} | ({"params"} if allow_params else {"resolutions"})
    _known_keys(raw, top, source, "")
    seed = check_seed(_typed(raw.get("seed", 0), int, source, "seed"), f"{source}: seed")
    data = _section(raw, "data", DataSpec, source)
    if data.source not in ("digits", "imagefolder", "cifar10"):
        raise TuneTLError(f"{source}: data.source: {data.source!r} is not one of ['digits', 'imagefolder', 'cifar10']")
    if not data.memory_budget_mb > 0:
        raise TuneTLError(f"{source}: data.memory_budget_mb must be positive, got {data.memory_budget_mb}")
    if not 0.0 < data.val_fraction < 1.0:
        raise TuneTLError(f"{source}: data.val_fraction must be between 0 and 1, got {data.val_fraction}")
    backbone = _section(raw, "backbone", BackboneSpec, source)
    budget = _section(raw, "budget", BudgetSpec, source)
    for key in ("samples", "max_epochs", "grace_period"):
        if getattr(budget, key) < 1:
            raise TuneTLError(f"{source}: budget.{key} must be at least 1, got {getattr(budget, key)}")
    if budget.grace_period > budget.max_epochs:
        raise TuneTLError(f"{source}: budget.grace_period ({budget.grace_period}) exceeds budget.max_epochs ({budget.max_epochs})")
    if not 1 < budget.reduction_factor < math.inf:
        raise TuneTLError(f"{source}: budget.reduction_factor must be greater than 1 (and finite), got {budget.reduction_factor}")
    if budget.time is not None and not (math.isfinite(budget.time) and budget.time > 0):
        raise TuneTLError(f"{source}: budget.time must be a positive number of seconds, got {budget.time}")
    params: tuple[ParamSpec, ...] = ()
    resolutions: tuple[int, ...] = (PARAMS["resolution"].default,)
    if allow_params:
        params = _parse_params(raw.get("params") or {}, source)
    elif "resolutions" in raw:
        values = raw["resolutions"]
        if not isinstance(values, list) or not values:
            raise TuneTLError(f"{source}: resolutions must be a non-empty list of ints")
        resolutions = tuple(coerce("resolution", v, f"{source}: resolutions") for v in values)
    selection = None
    if "backbone_selection" in raw:
        selection = _section(raw, "backbone_selection", SelectionSpec, source)
        if selection.top < 1:
            raise TuneTLError(f"{source}: backbone_selection.top must be at least 1, got {selection.top}")
        if selection.by not in ("logme", "probe_acc"):
            raise TuneTLError(f"{source}: backbone_selection.by: {selection.by!r} is not one of ['logme', 'probe_acc']")
    return SearchSpec(data, backbone, budget, seed, params, declared_resolutions=resolutions, source=source,
                      backbone_selection=selection)


def _parse_params(raw: Any, source: str) -> tuple[ParamSpec, ...]:
    if not isinstance(raw, dict):
        raise TuneTLError(f"{source}: params must be a mapping of parameter name to value, list or range")
    if "backbone" in raw:
        raise TuneTLError(f"{source}: params.backbone: set backbone.name instead (a list of names makes it a choice)")
    _known_keys(raw, set(PARAMS) - {"backbone"}, source, "params.")
    # Keep registry order so a conditional parameter is always sampled after its parent.
    params = tuple(_parse_param(name, raw[name], source) for name in PARAMS if name in raw)
    _check_conditions(params, source)
    return params


#: Conditional recipe parameters that are an error (not silently unused) where their parent never applies.
STRICT_CONDITIONALS = ("nesterov", "step_size", "gamma", "milestones")


def _check_conditions(params: tuple[ParamSpec, ...], source: str) -> None:
    """A recipe parameter whose parent can never take the activating value is a mistake (e.g.
    ``nesterov`` without ``sgd``): it would be silently ignored, so say so instead."""
    given = {p.name: p.dist for p in params}
    for p in params:
        when = PARAMS[p.name].when
        if when is None or p.name not in STRICT_CONDITIONALS:
            continue
        parent, wanted = when
        dist = given.get(parent, Fixed(PARAMS[parent].default))
        if isinstance(dist, Range):
            continue
        possible = dist.values if isinstance(dist, Choice) else (dist.value,)
        wanted = wanted if isinstance(wanted, tuple) else (wanted,)
        if not set(possible) & set(wanted):
            need = " or ".join(map(str, wanted))
            raise TuneTLError(f"{source}: params.{p.name} applies only when {parent} is {need}, which this space never "
                              f"chooses; remove {p.name} or add {need} to params.{parent}")


def _parse_param(name: str, raw: Any, source: str) -> ParamSpec:
    where = f"{source}: params.{name}"
    if isinstance(raw, list):
        if not raw:
            raise TuneTLError(f"{where}: an empty list of choices")
        if name == "resolution" and NATIVE in raw:
            raise TuneTLError(f"{where}: 'native' cannot be one of a list's choices (they must be the same for every backbone); "
                              f"write resolution: native, or a range up to it, e.g. {{low: 128, high: native, step: 32}}")
        return ParamSpec(name, Choice(tuple(_value(name, v, where) for v in raw)))
    if not isinstance(raw, dict):
        return ParamSpec(name, Fixed(_value(name, raw, where)))
    _known_keys(raw, {"low", "high", "log", "step"}, source, f"params.{name}.")
    if "low" not in raw or "high" not in raw:
        raise TuneTLError(f"{where}: a range needs both 'low' and 'high'")
    if PARAMS[name].type is str:
        raise TuneTLError(f"{where}: a text parameter takes a value or a list of choices, not a range")
    low, high = _value(name, raw["low"], where + ".low"), _value(name, raw["high"], where + ".high")
    log = _typed(raw.get("log", False), bool, source, f"params.{name}.log")
    step = raw.get("step")
    if name == "resolution" and low == NATIVE:
        raise TuneTLError(f"{where}.low: 'native' can only be a range's high (e.g. {{low: 128, high: native, step: 32}})")
    if not {ALL, LAST, NATIVE} & {low, high} and low > high:
        raise TuneTLError(f"{where}: low ({low}) is greater than high ({high})")
    if log and (low in (ALL, LAST) or low <= 0):
        raise TuneTLError(f"{where}: a log range needs low > 0, got {low}")
    if step is not None:
        step = _step(name, step, low, high, source)
        if log:
            raise TuneTLError(f"{where}: 'step' and 'log' cannot be combined (Optuna forbids it)")
    if name == "resolution" and high == NATIVE and not step:
        raise TuneTLError(f"{where}: a range up to native needs a 'step' (e.g. {{low: {low}, high: native, step: 32}}), because "
                          "the data is prepared once per resolution it can sample")
    if name == "resolution":  # a range without a usable grid fails here (up to native: once the backbones are known)
        resolution_grid(Range(low, low if high == NATIVE else high, log, step), source)
    return ParamSpec(name, Range(low, high, log, step))


def _value(name: str, value: Any, where: str) -> Any:
    """One value of ``name`` (fixed, a choice or a range end): its type and bounds come from its ``Param``."""
    if name in BLOCK_PARAMS and value == BLOCK_PARAMS[name][0]:
        return value
    if name == "resolution" and value == NATIVE:
        return value
    if name == "milestones" and not isinstance(value, str):
        raise TuneTLError(f"{where}: write milestones as one quoted string of fractions of max_epochs, e.g. "
                          f"'0.5,0.75' (a YAML list is a choice between such strings)")
    return coerce(name, value, where)


def _step(name: str, raw: Any, low: Any, high: Any, source: str) -> Any:
    """A range's ``step``: a positive number of the parameter's type, no wider than the range."""
    where = f"{source}: params.{name}.step"
    step = _typed(raw, PARAMS[name].type, source, f"params.{name}.step")
    if isinstance(step, float) and not math.isfinite(step) or step <= 0:
        raise TuneTLError(f"{where}: must be positive, got {step}")
    if isinstance(low, (int, float)) and isinstance(high, (int, float)) and high > low and step > high - low:
        raise TuneTLError(f"{where}: {step} is wider than the range {low}..{high}")
    return step



def _section(raw: Mapping[str, Any], key: str, cls: type, source: str):
    section = raw.get(key) or {}
    if not isinstance(section, dict):
        raise TuneTLError(f"{source}: {key} must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _known_keys(section, set(fields), source, f"{key}.")
    values = {}
    for name, value in section.items():
        expected = type(getattr(cls(), name))
        if name == "path":
            expected = str
        if name == "time":
            if value is None:
                continue  # ``time: null``: no time budget
            expected = float
        if (key, name) == ("backbone", "name") and isinstance(value, (list, tuple)):
            values[name] = _backbone_names(value, source)
            continue
        values[name] = _typed(value, expected, source, f"{key}.{name}")
    return cls(**values)


def _backbone_names(values: list, source: str) -> str | tuple[str, ...]:
    """``backbone.name`` as a list: distinct names, a choice when there are two or more."""
    names = tuple(_typed(v, str, source, "backbone.name") for v in values)
    if not names:
        raise TuneTLError(f"{source}: backbone.name: an empty list; give one name or a list of names")
    if len(set(names)) != len(names):
        raise TuneTLError(f"{source}: backbone.name: {list(names)} lists a name twice")
    return names[0] if len(names) == 1 else names


def _typed(value: Any, expected: type, source: str, key: str) -> Any:
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
        raise TuneTLError(f"{source}: {key}: expected {expected.__name__}, got {value!r}")
    return value


def _known_keys(raw: Mapping[str, Any], known: set[str], source: str, prefix: str) -> None:
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f"; known keys: {sorted(known)}"
            raise TuneTLError(f"{source}: unknown key '{prefix}{key}'{hint}")


def python_module_name(path: Path) -> str:
    """The ``sys.modules`` name of a Python space: the same in every process for the same file.

    Ray pickles ``space`` by reference to this name (in ``tuner.pkl``); ``tune-tl resume`` imports the
    file again under the same name before Ray unpickles, so no code is read from the results folder.
    """
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    return f"tune_tl_user_space_{digest}"


def _load_python(path: Path, text: str) -> SearchSpec:
    """A Python space: ``space(trial)`` plus an optional ``SETTINGS`` dict (YAML's keys, no params).

    Importing the file runs it: a ``.py`` space is code, trusted like any script you run.
    """
    module_name = python_module_name(path)
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # the user's code: report, don't crash with our traceback
        raise TuneTLError(f"{path}: failed to import: {_exception_line(exc)}") from None
    fn = getattr(module, "space", None)
    if not callable(fn):
        raise TuneTLError(f"{path}: a Python search space must define a function space(trial)")
    sys.modules[module_name] = module  # Ray pickles ``space`` by reference to this module
    settings = getattr(module, "SETTINGS", None) or {}
    if not isinstance(settings, dict):
        raise TuneTLError(f"{path}: SETTINGS must be a dict (the YAML keys seed, data, backbone, budget, resolutions), "
                          f"got {type(settings).__name__}")
    parsed = parse_settings(settings, f"{path}: SETTINGS", allow_params=False)
    parsed = dataclasses.replace(parsed, space_fn=fn, source=str(path), text=text)
    probe_python_space(parsed)
    return parsed


def _exception_line(exc: BaseException) -> str:
    """``Type: message`` on one line (the message's first line), for errors raised by a user's code."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def probe_python_space(spec: SearchSpec, draws: int = 8) -> None:
    """Run a Python space on a throwaway study so bad parameter names, values, return values and
    exceptions fail before Ray starts, as one line naming the file."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=spec.seed))
    for _ in range(draws):
        trial = study.ask()
        try:
            constants = spec.space_fn(trial)
        except (Exception, SystemExit) as exc:
            raise TuneTLError(f"{spec.source}: space(trial) raised {_exception_line(exc)}") from None
        if constants is not None and not isinstance(constants, dict):
            raise TuneTLError(f"{spec.source}: space(trial) must return a dict of fixed parameters or None, "
                              f"got {type(constants).__name__}")
        try:
            config = TrialConfig.from_dict({**trial.params, **(constants or {})})
        except TuneTLError as exc:
            raise TuneTLError(f"{spec.source}: space(trial) produced a bad config: {exc}") from None
        if config.resolution not in spec.declared_resolutions:
            raise TuneTLError(
                f"{spec.source}: space(trial) chose resolution {config.resolution}, which is not in "
                f"SETTINGS['resolutions'] {list(spec.declared_resolutions)}; list every resolution it may choose"
            )
        study.tell(trial, 0.0)
