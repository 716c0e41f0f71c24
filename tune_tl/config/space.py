"""Read a space file (YAML, or Python defining ``space(trial)``) into a validated ``SearchSpec``.

A YAML space is data (the safe loader, duplicate keys refused); a ``.py`` space is code, imported like any
script the user runs. Every mistake is one line naming the file and the key, before any Ray work starts.
The shipped spaces live in the package (``tune_tl/search_spaces/``, :mod:`tune_tl.config.shipped`); a
bare name such as ``imagefolder`` loads one of them from any folder.

Example:
    >>> spec = load_space("imagefolder")          # a shipped space, by name
    >>> spec.backbone.names
    ('efficientnet_lite0', 'efficientnet_lite1', 'efficientnet_lite2')
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib.util
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import yaml

from tune_tl.config.distributions import ALL, BLOCK_PARAMS, LAST, NATIVE, Choice, Fixed, ParamSpec, Range, resolution_grid
from tune_tl.config.params import PARAMS, TrialConfig, coerce
from tune_tl.config.shipped import DEFAULT, shipped_space
from tune_tl.config.spec import NO_LIMIT, BackboneSpec, BudgetSpec, DataSpec, SearchSpec, SelectionSpec
from tune_tl.errors import TuneTLError

SEED_MAX = 2**32 - 1
MAX_SPACE_BYTES = 1 << 20


def load_space(path: str | Path | None = None, module_name: str | None = None) -> SearchSpec:
    """Load ``path`` (a ``.yaml``/``.py`` file, or the name of a shipped space); ``None`` loads the default space.

    ``module_name``: import a ``.py`` space under this name (a stored search's, which Ray's ``tuner.pkl`` refers to)
    instead of the one its path gives.
    """
    if path is None or (not Path(path).exists() and shipped_space(str(path)) is not None):
        name = DEFAULT if path is None else str(path)
        return parse_space_text(shipped_space(name).read_text(encoding="utf-8"), f"{Path(name).stem}.yaml (shipped)")
    path = Path(path)
    text = read_space_text(path)
    if path.suffix == ".py":
        return _load_python(path, text, module_name or python_module_name(path))
    return parse_space_text(text, str(path))


def parse_space_text(text: str, source: str) -> SearchSpec:
    """A YAML space from its ``text``; ``source`` names it in errors (a file, or a stored search's record)."""
    try:
        raw = yaml.load(text, Loader=StrictLoader) or {}  # StrictLoader is a SafeLoader: data, never objects
    except yaml.YAMLError as exc:
        raise TuneTLError(f"{source}: not valid YAML: {_one_line(exc)}") from None
    if not isinstance(raw, dict):
        raise TuneTLError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    return dataclasses.replace(parse_settings(raw, source, allow_params=True), text=text)


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
    data = _section(raw, "data", DataSpec, source).check(source)
    backbone = _section(raw, "backbone", BackboneSpec, source)
    budget = _section(raw, "budget", BudgetSpec, source).check(source)
    params: tuple[ParamSpec, ...] = ()
    resolutions: tuple[int, ...] = (PARAMS["resolution"].default,)
    if allow_params:
        params = _parse_params(raw.get("params") or {}, source)
    elif "resolutions" in raw:
        values = raw["resolutions"]
        if not isinstance(values, list) or not values:
            raise TuneTLError(f"{source}: resolutions must be a non-empty list of ints")
        resolutions = tuple(coerce("resolution", v, f"{source}: resolutions") for v in values)
    selection = _section(raw, "backbone_selection", SelectionSpec, source).check(source) if "backbone_selection" in raw else None
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
            if value is None or value == NO_LIMIT:  # ``time: none`` (or null): no time budget
                values[name] = None
                continue
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

    Ray pickles ``space`` by reference to this name (in ``tuner.pkl``); ``tune-tl resume --space FILE`` imports the
    file the user names under the recorded name before Ray unpickles, so no code is read from the results folder.
    """
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    return f"tune_tl_user_space_{digest}"


def _load_python(path: Path, text: str, module_name: str) -> SearchSpec:
    """A Python space: ``space(trial)`` plus an optional ``SETTINGS`` dict (YAML's keys, no params).

    Importing the file runs it: a ``.py`` space is code, trusted like any script you run, and imported only
    from a file the user named on the command line (never from a results folder's record).
    """
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
