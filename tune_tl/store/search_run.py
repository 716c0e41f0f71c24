"""``SearchRun``: the one owner of a search folder and of every file name inside it.

A search lives in ``<output>/<name>/`` (a local or shared folder, or an ``s3://``/``gs://`` prefix)::

    search.json            what was run: space text, data, backbone, budget, options, versions, times
    trials/  epochs/       the Parquet results (``tune_tl.store.results``)
    logs/ray.log           Ray's and Optuna's own log lines (``tune_tl.search.ray_logs``)
    recheck/               the top configs re-run with more seeds (``--recheck``)
    optuna.db              the Optuna study (SQLite)
    scheduler.json         what cost-aware ASHA learned: its unit and rungs (resume and the report read it)
    probe_heads.pt         the stage-0 probes' linear heads, and the heads fine-tunes start from (``search.probes``)
    tuner.pkl              Ray Tune's Tuner (``tune-tl resume`` restores it)
    experiment_state-*.json, searcher-state-*.pkl, ...   Ray Tune's experiment snapshot, copied here by Ray
    <trial_id>/checkpoint_*/state.pt   per-trial checkpoints: latest and best epoch while a trial runs, then
                           only the best epoch of the top trials (``tune_tl.search.retention``)
    skipped_images.txt     bad image files left out under ``skip_bad_images``
    data_manifest.json     every data file's SHA-256 at search start (resume, retrain, --recheck refuse other data)
    duplicates.csv         byte-identical data files (across splits: dropped from val/test), ``tune_tl.data.duplicates``
    feature_cache/         shared frozen-backbone features
    val_predictions/       each probe's and kept trial's class probabilities on val at its best epoch (``search.val_predictions``)
    report/  models/       what ``tune-tl report`` / ``retrain`` write

Resume, retrain, export, report, the scheduler's replay and the Parquet sink open the folder here;
nothing else parses ``search.json`` or spells a name above.

Why one module of ~470 lines, not several: every name above and how its file is read and written
(checkpoints included) has this one owner; split, the names of one folder would have two.

    >>> run = SearchRun.open("results/demo")          # doctest: +SKIP
    >>> run.spec.budget.max_epochs, len(run.trials())  # doctest: +SKIP
    >>> run.best_checkpoint(run.trials().trial_id[0])  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import time
from contextlib import AbstractContextManager
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from tune_tl.config.space import load_space, parse_space_text, python_module_name
from tune_tl.config.spec import BackboneSpec, BudgetSpec, DataSpec
from tune_tl.errors import TuneTLError
from tune_tl.store.lock import SearchLock
from tune_tl.store.schema import EPOCH_SCHEMA, RECHECK_SCHEMA, TRIAL_SCHEMA, read_table
from tune_tl.store.storage import Location, redact_all

log = logging.getLogger(__name__)

METADATA_FILE = "search.json"
VAL_PREDICTIONS_DIR = "val_predictions"
TRIALS_DIR = "trials"
EPOCHS_DIR = "epochs"
STUDY_FILE = "optuna.db"
TUNER_FILE = "tuner.pkl"
SKIPPED_FILE = "skipped_images.txt"
DATA_MANIFEST_FILE = "data_manifest.json"
DUPLICATES_FILE = "duplicates.csv"
FEATURE_CACHE_DIR = "feature_cache"
REPORT_DIR = "report"
LOGS_DIR = "logs"
RAY_LOG_FILE = "ray.log"
MODELS_DIR = "models"
RECHECK_DIR = "recheck"
#: How ``search.json`` writes a moment (``start_time``, ``end_time``, ``resumed``).
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"
SCHEDULER_FILE = "scheduler.json"
PROBE_HEADS_FILE = "probe_heads.pt"
START_PREFIX = "start:"  # probe_heads.pt's keys of the heads fine-tunes start from, beside the probes' own
#: The file in each Ray checkpoint folder that holds a trial's training state (``training.state.training_state``).
CHECKPOINT_FILE = "state.pt"
#: Ray's name for a trial's checkpoint folders (``checkpoint_000003``).
CHECKPOINT_DIR_PREFIX = "checkpoint_"
#: Any of these means the folder already holds a search (``create`` refuses to overwrite it).
_RESULT_PARTS = (TRIALS_DIR, EPOCHS_DIR, STUDY_FILE, TUNER_FILE)


class SearchRun:
    """A search folder: its record (``search.json``), results, study, checkpoints.

    Cheap to make: nothing is read until an accessor asks. Pickles as its location, so Ray
    callbacks and schedulers can hold one.
    """

    def __init__(self, root: str | Path | Location, space: str | Path | None = None):
        self.root = Location.parse(root)
        #: The ``.py`` space file the user named (``--space``): the only place a Python space is imported from.
        self.space = Path(space) if space is not None else None

    # ---------------------------------------------------------------- open / create

    @classmethod
    def open(cls, path: str | Path | Location, require_metadata: bool = False, space: str | Path | None = None) -> SearchRun:
        """The search in ``path``; ``space``: the ``.py`` space file the user named for it (``--space``).

        Raises:
            TuneTLError: ``path`` is not a folder, or (``require_metadata``) has no ``search.json``.
        """
        run = cls(path, space)
        if not run.root.is_dir():
            raise TuneTLError(f"{run.root} is not a search results folder (expected {run.root}/{TRIALS_DIR} and {run.root}/{EPOCHS_DIR})")
        if require_metadata and not run.metadata:
            raise TuneTLError(f"{run.root}/{METADATA_FILE} is missing: this folder was not written by `tune-tl search`")
        return run

    @classmethod
    def create(cls, location: str | Path | Location, spec, options, extra: dict[str, Any] | None = None) -> SearchRun:
        """Make the folder for a new search and write its ``search.json``.

        Args:
            spec: The ``SearchSpec`` as run (CLI overrides applied).
            options: The ``SearchOptions`` (a dataclass; recorded field by field).
            extra: More fields for the record (versions, host, data description, ...).

        Raises:
            TuneTLError: The folder already holds search results.
        """
        run = cls(location)
        run.check_new()
        run.root.mkdir()
        record = {
            "name": run.root.name,
            "space_file": spec.source,
            "space_text": spec.text,
            # Resume re-imports a .py space from this path only if its text still has this hash.
            "space_path": str(Path(spec.source).resolve()) if spec.space_fn is not None else None,
            "space_sha256": hashlib.sha256(spec.text.encode()).hexdigest(),
            "options": dataclasses.asdict(options),
            "seed": spec.seed,
            # The space as run (CLI overrides applied): resume, retrain and report read these, not the text.
            "data": dataclasses.asdict(spec.data),
            # data.path as typed may be relative; resume, retrain and --recheck read the data from here, wherever they run.
            "data_path": str(Path(spec.data.path).expanduser().resolve()) if spec.data.path else None,
            "backbone": dataclasses.asdict(spec.backbone),
            "budget": dataclasses.asdict(spec.budget),
            "root": str(run.root),
            "start_time": _now(),
            **(extra or {}),
        }
        run.write_metadata(record)
        return run

    def has_results(self) -> bool:
        return any((self.root / part).exists() for part in _RESULT_PARTS)

    def check_new(self) -> None:
        """Raise if the folder already holds a search (results are never overwritten)."""
        if self.has_results():
            raise TuneTLError(f"{self.root} already holds search results; choose another --name (or --output), "
                              f"or continue it with `tune-tl resume {self.root}`")

    def stopped_in_stage0(self) -> bool:
        """Whether the search was stopped before Ray Tune started (during or right after its probes): its record is
        written, Ray's ``tuner.pkl`` is not."""
        return self.metadata_file.is_file() and not self.tuner_file.is_file()

    def check_resumable(self) -> None:
        """Raise unless this folder holds a search that Ray can restore, in its original place."""
        if not self.metadata_file.is_file():
            raise TuneTLError(f"{self.root} is not a tune_tl search folder to resume "
                              f"(expected {self.metadata_file} and {self.tuner_file})")
        meta = self.metadata
        if meta.get("root") and meta["root"] != str(self.root):
            # The sink and the scheduler were pickled with the original folder; they would write there.
            raise TuneTLError(f"{self.root} was moved from {meta['root']}; resume it in its original place")

    def lock(self) -> AbstractContextManager:
        """Exclusive use of the folder while a search or resume writes it (``tune_tl.store.lock``)."""
        return SearchLock(self.root)

    # ---------------------------------------------------------------- the record

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def metadata_file(self) -> Location:
        return self.root / METADATA_FILE

    @cached_property
    def metadata(self) -> dict[str, Any]:
        """The ``search.json`` record, or ``{}`` when there is none (yet)."""
        try:
            return json.loads(self.metadata_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise TuneTLError(f"{self.metadata_file} is not readable JSON ({exc})") from exc

    def write_metadata(self, record: dict[str, Any]) -> None:
        """Write ``search.json``: every URI in it (output, warm starts, data, the command line) without credentials
        (``redact``): it is read by whoever can read the results."""
        record = redact_all(json.loads(json.dumps(record, default=str)))
        self.metadata_file.write_text(json.dumps(record, indent=2))
        self.__dict__["metadata"] = record

    def update_metadata(self, **fields: Any) -> None:
        """Merge ``fields`` into ``search.json`` (e.g. ``end_time``, ``resumed``, ``budget``), as the file is now:
        another writer of this search (the checkpoint retention) may have changed it since it was read here."""
        self.__dict__.pop("metadata", None)
        self.write_metadata({**self.metadata, **fields})

    @cached_property
    def spec(self):
        """The ``SearchSpec`` the search ran with: its stored space text plus data, backbone, budget and seed as run.

        A YAML space is parsed from the record (the safe loader: data, never code). A ``.py`` space is code, and
        code is never imported from a results folder: only from the file the user named (``--space FILE``), and
        only if its SHA-256 is the recorded one.

        Raises:
            TuneTLError: A ``.py`` space and no ``--space`` file, or a file whose text differs from the search's.
        """
        meta = self._require("space_text", "budget", "data", "backbone")
        if Path(meta["space_file"]).suffix == ".py":
            spec = load_space(self._named_python_space(), module_name=self._space_module_name())
        else:
            spec = parse_space_text(meta["space_text"], meta["space_file"])
        data = DataSpec(**{**meta["data"], "path": meta.get("data_path") or meta["data"].get("path")})
        return dataclasses.replace(spec, data=data, backbone=BackboneSpec(**meta["backbone"]),
                                   budget=BudgetSpec(**meta["budget"]), seed=meta.get("seed", spec.seed), source=meta["space_file"])

    @property
    def backbone(self) -> BackboneSpec:
        """The backbone section as run, read from the record alone (no space, so never any code)."""
        return BackboneSpec(**self._require("backbone")["backbone"])

    def _named_python_space(self) -> Path:
        """The ``.py`` space file the user named with ``--space``, checked against the SHA-256 in search.json."""
        meta = self.metadata
        if self.space is None:
            raise TuneTLError(f"{self.root} was searched with the Python space {meta['space_file']}, and a results folder never "
                              f"runs code: pass that file with --space FILE (its SHA-256 must be {meta.get('space_sha256', '?')[:12]}…)")
        if not self.space.is_file():
            raise TuneTLError(f"--space {self.space}: no such file")
        stored = meta.get("space_sha256") or hashlib.sha256(meta.get("space_text", "").encode()).hexdigest()
        if hashlib.sha256(self.space.read_bytes()).hexdigest() != stored:
            raise TuneTLError(f"--space {self.space}: its SHA-256 differs from the space {self.root} was searched with "
                              f"({meta['space_file']}); pass the original file, unchanged, or start a new search")
        return self.space

    def _space_module_name(self) -> str:
        """The module name the search imported its ``.py`` space under: Ray's ``tuner.pkl`` refers to ``space`` by it."""
        recorded = self.metadata.get("space_path")
        return python_module_name(Path(recorded)) if recorded else python_module_name(self.space)

    @property
    def options(self) -> dict[str, Any]:
        """The ``SearchOptions`` fields as recorded (``SearchOptions(**run.options)`` rebuilds them)."""
        return dict(self._require("options")["options"])

    @property
    def classes(self) -> list[str]:
        """Class names by label, as the search's data had them."""
        return list(self._require("classes")["classes"])

    @property
    def seed(self) -> int:
        return int(self.metadata.get("seed", 0))

    @property
    def budget(self) -> BudgetSpec | None:
        """The budget as run (``samples`` grows with ``tune-tl resume --samples``); ``None`` without a record."""
        budget = self.metadata.get("budget")
        return BudgetSpec(**budget) if budget else None

    @property
    def scheduler(self) -> str:
        """The ``--scheduler`` the search ran with (``asha`` when the record does not say)."""
        return (self.metadata.get("options") or {}).get("scheduler") or "asha"

    @property
    def test_record(self) -> dict[str, Any] | None:
        """The shipped trial scored once on the test split (``search.held_out``); ``None`` without a test split."""
        return self.metadata.get("test")

    @property
    def ensemble_record(self) -> dict[str, Any] | None:
        """The ensemble chosen on val (``search.ensemble``): members, weights, val accuracy; ``None`` before one."""
        return self.metadata.get("ensemble")

    @property
    def probe_records(self) -> list[dict[str, Any]]:
        """The stage-0 probes recorded so far (``search.probes.Probe.record``), each once it is whole; ``[]`` without."""
        return list(self.metadata.get("probes") or [])

    @property
    def data_path(self) -> str | None:
        """Where the search's data was, as an absolute path (``data.path`` as typed when the record predates it)."""
        return self.metadata.get("data_path") or (self.metadata.get("data") or {}).get("path")

    @property
    def data_fingerprint(self) -> dict[str, Any] | None:
        """What identifies the search's data (``search.warm_start.data_fingerprint``); ``None`` from an older tune_tl."""
        return self.metadata.get("data_fingerprint")

    @property
    def start_time(self) -> pd.Timestamp | None:
        return self.start_time_in(self.metadata)

    @staticmethod
    def start_time_in(record: dict[str, Any]) -> pd.Timestamp | None:
        """When the search in ``record`` (a ``search.json`` record, e.g. ``Results.search``) started; ``None`` if unknown."""
        start = pd.to_datetime(record.get("start_time"), format=TIME_FORMAT, errors="coerce")
        return None if pd.isna(start) else start

    def record_end(self, **fields: Any) -> None:
        """Note that the search's driver ended now, with ``fields`` (``node_ids``, ``ended_by_time_budget``)."""
        self.update_metadata(end_time=_now(), **fields)

    def record_resume(self, samples: int) -> None:
        """Note a ``tune-tl resume`` that ended now, with ``samples`` trials in the budget."""
        now = _now()
        meta = self._require("budget")
        self.update_metadata(budget={**meta["budget"], "samples": samples}, resumed=meta.get("resumed", []) + [now], end_time=now)

    def _require(self, *keys: str) -> dict[str, Any]:
        meta = self.metadata
        missing = [k for k in keys if k not in meta]
        if missing:
            raise TuneTLError(f"{self.metadata_file} has no {', '.join(missing)}: it is missing or from an older tune_tl; "
                              "start a new search")
        return meta

    # ---------------------------------------------------------------- results

    @property
    def trials_dir(self) -> Location:
        return self.root / TRIALS_DIR

    @property
    def epochs_dir(self) -> Location:
        return self.root / EPOCHS_DIR

    @property
    def val_predictions_dir(self) -> Location:
        """``<search>/val_predictions``: what ensemble selection reads (``tune_tl.search.val_predictions``)."""
        return self.root / VAL_PREDICTIONS_DIR

    def trials(self) -> pd.DataFrame:
        """One row per finished trial (``pd.read_parquet(<search>/trials)``, duplicates from a compaction dropped)."""
        return read_table(self.trials_dir, TRIAL_SCHEMA, ["trial_id"])

    def epochs(self) -> pd.DataFrame:
        """One row per trial and epoch."""
        return read_table(self.epochs_dir, EPOCH_SCHEMA, ["trial_id", "epoch"])

    @property
    def recheck_dir(self) -> Location:
        return self.root / RECHECK_DIR

    def recheck(self) -> pd.DataFrame:
        """The top configs' re-runs with more seeds (``--recheck``); empty if the search was not rechecked."""
        return read_table(self.recheck_dir, RECHECK_SCHEMA, ["trial_id", "seed"])

    # ---------------------------------------------------------------- study, Ray, side files

    @property
    def study_location(self) -> Location:
        return self.root / STUDY_FILE

    def study_file(self, fresh: bool) -> Path:
        """The study's SQLite file on this machine: ``<search>/optuna.db`` for a local (or shared) folder;
        for an object store a local copy, emptied for a new search (``fresh``) and, for a resumed one,
        downloaded from the search's last snapshot."""
        if self.root.is_local:
            return self.root.local_path / STUDY_FILE
        local = self.root.local_mirror("study") / STUDY_FILE
        local.parent.mkdir(parents=True, exist_ok=True)
        local.unlink(missing_ok=True)
        if not fresh:
            self.study_location.download(local)
        return local

    @property
    def study_storage(self) -> str:
        """SQLAlchemy URL of the study on this machine (a fetched copy for an object store)."""
        return f"sqlite:///{self.study_file(fresh=False).resolve()}"

    @property
    def tuner_file(self) -> Location:
        return self.root / TUNER_FILE

    @property
    def scheduler_file(self) -> Location:
        """The scheduler's record (``search.cost_asha`` writes and reads its format)."""
        return self.root / SCHEDULER_FILE

    @property
    def skipped_file(self) -> Location:
        return self.root / SKIPPED_FILE

    @property
    def data_manifest_file(self) -> Location:
        """Every data file's SHA-256 at search start (``tune_tl.data.manifest`` writes and reads its format)."""
        return self.root / DATA_MANIFEST_FILE

    @property
    def duplicates_file(self) -> Location:
        """The byte-identical data files the search found (``tune_tl.data.duplicates`` writes it)."""
        return self.root / DUPLICATES_FILE

    def ray_log_file(self) -> Path:
        """Where this machine writes Ray's log lines: ``<search>/logs/ray.log``, or a local copy for an object store."""
        folder = self.root.local_path / LOGS_DIR if self.root.is_local else self.root.local_mirror(LOGS_DIR)
        return folder / RAY_LOG_FILE

    @property
    def ray_log_location(self) -> Location:
        """``<search>/logs/ray.log`` in the search folder (where an object-store search uploads its copy)."""
        return self.root / LOGS_DIR / RAY_LOG_FILE

    def feature_cache_dir(self) -> Path:
        """``<search>/feature_cache``, or a node-local folder when the search is on an object store."""
        return self.root.local_path / FEATURE_CACHE_DIR if self.root.is_local else self.root.local_mirror("feature-cache")

    def report_dir(self) -> Path:
        """Where ``tune-tl report`` writes: ``<search>/report``, or ``./<name>-report`` for an object store."""
        return self.root.local_path / REPORT_DIR if self.root.is_local else Path.cwd() / f"{self.name}-report"

    def model_dir(self, trial_id: str) -> Path:
        """Where ``tune-tl retrain`` saves trial ``trial_id``'s model (``./models/<id>`` for an object store)."""
        return (self.root.local_path if self.root.is_local else Path.cwd()) / MODELS_DIR / str(trial_id)

    # ---------------------------------------------------------------- checkpoints

    def trial_dir(self, trial_id: str) -> Location:
        """Ray's folder of trial ``trial_id`` (named by :func:`trial_folder_name`)."""
        return self.root / trial_id

    def save_checkpoint(self, trial_id: str, state: dict) -> Location:
        """Write ``state`` as trial ``trial_id``'s first checkpoint, where Ray would (``<trial_id>/checkpoint_000000``):
        how a stage-0 probe, which runs outside Ray, keeps its weights for ``export``."""
        buffer = io.BytesIO()
        torch.save(state, buffer)
        folder = self.trial_dir(trial_id) / f"{CHECKPOINT_DIR_PREFIX}000000"
        (folder / CHECKPOINT_FILE).write_bytes(buffer.getvalue())
        return folder

    def save_probe_heads(self, heads: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]],
                         starts: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        """Keep the probes' heads and the heads fine-tunes start from (each (backbone, resolution) -> (weight, bias))."""
        stored = {f"{name}@{resolution}": [w, b] for (name, resolution), (w, b) in heads.items()}
        stored.update({f"{START_PREFIX}{name}@{resolution}": [w, b] for (name, resolution), (w, b) in (starts or {}).items()})
        buffer = io.BytesIO()
        torch.save(stored, buffer)
        (self.root / PROBE_HEADS_FILE).write_bytes(buffer.getvalue())

    def probe_heads(self) -> dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]]:
        """The probes' heads :meth:`save_probe_heads` kept, as measured; ``{}`` for a search without probes."""
        return {key: head for key, head in self._heads().items() if not key[0].startswith(START_PREFIX)}

    def start_heads(self) -> dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]]:
        """The heads fine-tunes with ``head_init: probe`` start from (``training.linear_probe.fit_start_head``); a
        search from before they were kept (2026-12-07) starts from its probes' heads, as it did."""
        heads = self._heads()
        starts = {(name.removeprefix(START_PREFIX), res): head for (name, res), head in heads.items() if name.startswith(START_PREFIX)}
        return {key: starts.get(key, head) for key, head in heads.items() if not key[0].startswith(START_PREFIX)}

    def _heads(self) -> dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]]:
        file = self.root / PROBE_HEADS_FILE
        if not file.is_file():
            return {}
        stored = torch.load(io.BytesIO(file.read_bytes()), map_location="cpu", weights_only=True)
        return {(key.rpartition("@")[0], int(key.rpartition("@")[2])): (w, b) for key, (w, b) in stored.items()}

    def checkpoint_paths(self, trial_id: str) -> list[Location]:
        """Trial ``trial_id``'s checkpoint folders on disk, oldest first (none once retention deleted them)."""
        return self.trial_dir(trial_id).folders(CHECKPOINT_DIR_PREFIX)

    def checkpoint_state(self, folder: Location) -> dict | None:
        """The training state in checkpoint folder ``folder``, or ``None`` if it holds no readable one."""
        return _load_state(folder / CHECKPOINT_FILE, lazy=False)

    def checkpoint_time(self, folder: Location) -> float | None:
        """When the checkpoint in ``folder`` was written (seconds since the epoch), or ``None``."""
        return (folder / CHECKPOINT_FILE).mtime()

    def checkpoint_epoch(self, folder: Location) -> tuple[int, float] | None:
        """``(epoch, val_acc)`` of the checkpoint in ``folder``, or ``None`` if it holds no readable state (a copy a
        kill cut short). Reads only the metadata of a local file (memory-mapped tensors)."""
        state = _load_state(folder / CHECKPOINT_FILE, lazy=True)
        if state is None or not state.get("history"):
            return None
        return int(state["epoch"]), _acc(state["history"][-1])

    def best_checkpoint_path(self, trial_id: str) -> Location:
        """The checkpoint folder of trial ``trial_id``'s best epoch by val_acc (the last such epoch on ties, as the
        trials table's ``best_epoch``).

        While a trial runs, Ray keeps it (``CheckpointConfig(checkpoint_score_attribute="val_acc")`` keeps the best-scored
        checkpoint and always the latest); once it ended, checkpoint retention keeps it for the top trials only.

        Raises:
            TuneTLError: No checkpoint of the trial's best epoch is on disk: retention deleted its weights, or the
                search predates best-epoch keeping.
        """
        found = [(summary, folder) for folder in self.checkpoint_paths(trial_id)
                 if (summary := self.checkpoint_epoch(folder)) is not None]
        if not found:
            raise TuneTLError(self._no_weights(trial_id))
        latest = max(found, key=lambda f: f[0][0])[1]
        best = max(_acc(m) for m in _load_state(latest / CHECKPOINT_FILE, lazy=True)["history"])
        kept = [(epoch, folder) for (epoch, acc), folder in found if acc == best]
        if not kept:
            raise TuneTLError(f"trial {trial_id!r} of {self.root}: the checkpoint of its best epoch is not on disk "
                              f"(kept: epochs {sorted(e for (e, _), _ in found)}); searches from before best-epoch "
                              "keeping kept only the latest: use `tune-tl retrain`")
        return max(kept, key=lambda k: k[0])[1]

    def best_checkpoint(self, trial_id: str) -> dict:
        """The training state of trial ``trial_id``'s best epoch (:meth:`best_checkpoint_path`)."""
        return _load_state(self.best_checkpoint_path(trial_id) / CHECKPOINT_FILE, lazy=False)

    def copy_checkpoint(self, source: Location, folder: Location) -> None:
        """Put the training state in checkpoint folder ``source`` into ``folder`` too (whole-file, never partial)."""
        (folder / CHECKPOINT_FILE).write_bytes((source / CHECKPOINT_FILE).read_bytes())

    def slim_checkpoint(self, folder: Location) -> None:
        """Keep only what an ended trial's checkpoint is still read for (its epoch, weights and metric history:
        ``export``, a resume's rebuilt rows): the optimizer state, the AMP scaler and the RNG states only
        served to continue training, and they are up to twice the weights."""
        state = self.checkpoint_state(folder)
        if state is None or set(state) <= set(_SLIM_KEYS):
            return
        buffer = io.BytesIO()
        torch.save({key: state[key] for key in _SLIM_KEYS if key in state}, buffer)
        (folder / CHECKPOINT_FILE).write_bytes(buffer.getvalue())

    def prune_checkpoints(self, trial_id: str, keep: Location | None = None) -> list[str]:
        """Delete trial ``trial_id``'s checkpoint folders except ``keep``; the names deleted."""
        doomed = [folder for folder in self.checkpoint_paths(trial_id) if folder != keep]
        for folder in doomed:
            folder.delete_tree()
        return [folder.name for folder in doomed]

    def _no_weights(self, trial_id: str) -> str:
        kept = self.metadata.get("checkpoints", {})
        ids = [k["trial_id"] for k in kept.get("kept", [])]
        keep = kept.get("keep", self.metadata.get("budget", {}).get("keep_checkpoints", "K"))
        return (f"trial {trial_id!r} of {self.root} has no weights on disk: a search keeps the best epoch of its top {keep} "
                f"trials only (--keep-checkpoints {keep}; kept: {', '.join(ids) or 'none'}); export one of those, "
                f"retrain this one with `tune-tl retrain {self.root} --trial {trial_id}`, or search again with a larger "
                "--keep-checkpoints")

def trial_folder_name(trial) -> str:
    """Ray's name and folder for a trial: its id (``4c1e2a1b``), which is also the Parquet ``trial_id``."""
    return trial.trial_id


#: A checkpoint's key for its epoch's val probabilities (``training.state.training_state``), which an ensemble is
#: selected on (``search.val_predictions``); absent from checkpoints written before 2026-12-07.
VAL_PROBS = "val_probs"
#: What a kept checkpoint of an ended trial holds, where it has them (``SearchRun.slim_checkpoint``).
_SLIM_KEYS = ("epoch", "model", "history", VAL_PROBS)


def _load_state(file: Location, lazy: bool) -> dict | None:
    """A checkpoint's training state, or ``None`` if ``file`` is missing or unreadable (a partial copy).

    ``lazy`` memory-maps a local file's tensors: reading the epoch and history costs no weight I/O.
    """
    import io

    import torch

    try:
        if file.is_local:
            return torch.load(file.path, map_location="cpu", weights_only=True, mmap=lazy)
        return torch.load(io.BytesIO(file.read_bytes()), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        log.debug("not a readable checkpoint: %s (%s)", file, exc)
        return None


def _acc(metrics: dict) -> float:
    value = metrics["val_acc"]
    return value if value == value else -1.0  # NaN ranks last


def _now() -> str:
    return time.strftime(TIME_FORMAT)
