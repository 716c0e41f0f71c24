"""Continue a search whose driver died, or extend a finished one, through Ray Tune's own restore.

``tune.Tuner.restore`` brings back the trials (unfinished ones continue from their last epoch
checkpoint), the searcher (the Optuna study and sampler, pickled by Ray with the experiment), the
scheduler as it was created, and the Parquet sink. What Ray does not restore is rebuilt here or by
the objects themselves: the trial context (data, backbone weights) from ``search.json``, ASHA's
rung records (``ReplayASHA`` replays the Parquet epochs) and the sink's bookkeeping (``setup``).

    >>> resume_search("results/demo")               # doctest: +SKIP
    >>> resume_search("results/demo", samples=20)   # 20 trials in all  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from ray.tune.search import SearchGenerator

from tune_tl.errors import TuneTLError
from tune_tl.store.storage import Location

log = logging.getLogger(__name__)


class SampleTarget(SearchGenerator):
    """Ray's ``SearchGenerator`` whose sample count can be raised when a search is restored.

    Ray restores a generator's ``total_samples`` from the experiment snapshot and offers no way to
    change it, so ``tune-tl resume --samples N`` sets ``extend_to`` for the duration of the restored
    ``fit``; ``set_state`` (called by Ray's restore) then raises the target. The searcher and its
    study are Ray's restored ones, so new trials are sampled with everything learned so far.
    """

    extend_to: int | None = None  # class-level: set only by ``extending`` in the driver process

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        if SampleTarget.extend_to is not None and SampleTarget.extend_to > self._total_samples:
            log.info("extending the search from %d to %d trials", self._total_samples, SampleTarget.extend_to)
            self._total_samples = SampleTarget.extend_to
            self._finished = False

    @staticmethod
    @contextmanager
    def extending(samples: int | None):
        SampleTarget.extend_to = samples
        try:
            yield
        finally:
            SampleTarget.extend_to = None


def resume_search(path: str | Path, samples: int | None = None):
    """Continue the search in ``path`` until it has ``samples`` trials (default: its own budget)."""
    from ray import tune

    from tune_tl.search.resources import check_resources
    from tune_tl.search.sampler import study_file
    from tune_tl.search.run import SearchOptions, _prepare_context, init_ray, make_trainable, storage_config, summarize, with_feature_cache

    root = Location.parse(path)
    meta = _read_metadata(root)
    spec = spec_from_metadata(meta, root)
    target = max(samples or 0, spec.budget.samples)
    if samples is not None and samples < spec.budget.samples:
        raise TuneTLError(f"--samples {samples} is fewer than the search's {spec.budget.samples} trials; give at least that many")
    options = SearchOptions(**meta["options"])
    context, _, _ = _prepare_context(spec)  # before Ray: bad weights or data fail here
    context = with_feature_cache(context, options, root)
    init_ray(options.address)
    check_resources(options)
    log.info("resuming search %s: %d trials in all", root, target)
    study_file(root, fresh=False)  # an object store's study: fetch its copy before Ray unpickles the searcher
    with SampleTarget.extending(target):
        tuner = tune.Tuner.restore(root.path, trainable=make_trainable(context, options), resume_unfinished=True,
                                   resume_errored=False, storage_filesystem=storage_config(root).get("storage_filesystem"))
        tuner.fit()

    from tune_tl.store.results import write_json_atomic

    budget = {**meta["budget"], "samples": target}
    resumes = meta.get("resumed", []) + [time.strftime("%Y-%m-%dT%H:%M:%S%z")]
    write_json_atomic({**meta, "budget": budget, "resumed": resumes, "end_time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, root / "search.json")
    return summarize(root)


def spec_from_metadata(meta: dict, root: Location):
    """The ``SearchSpec`` the search ran with: its stored space text plus budget and seed overrides."""
    from tune_tl.config.space import BudgetSpec, DataSpec, load_space

    suffix = Path(meta.get("space_file") or "space.yaml").suffix or ".yaml"
    with tempfile.TemporaryDirectory(prefix="tune_tl-space-") as tmp:
        file = Path(tmp) / f"space{suffix}"
        file.write_text(meta["space_text"])
        spec = load_space(file) if meta["space_text"].strip() else load_space()
    data = DataSpec(**meta["data"]) if isinstance(meta.get("data"), dict) else spec.data
    return dataclasses.replace(spec, data=data, budget=BudgetSpec(**meta["budget"]), seed=meta["seed"], source=meta.get("space_file", spec.source))


def _read_metadata(root: Location) -> dict:
    if not (root / "search.json").is_file() or not (root / "tuner.pkl").is_file():
        raise TuneTLError(f"{root} is not a tune_tl search folder to resume (expected {root}/search.json and {root}/tuner.pkl)")
    meta = json.loads((root / "search.json").read_text())
    if "budget" not in meta:
        raise TuneTLError(f"{root}/search.json was written by a tune_tl without resume support; start a new search")
    if meta.get("root") and meta["root"] != str(root):
        # The sink and the scheduler were pickled with the original folder; they would write there.
        raise TuneTLError(f"{root} was moved from {meta['root']}; resume it in its original place")
    return meta
