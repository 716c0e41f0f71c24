"""Rank candidate backbones on the target data before any fine-tuning: ``tune-tl rank``.

For each backbone, one pass of its frozen, pooled features over the train and val images (the same
features the search's feature cache holds) gives three cheap signals: LogME on the train features
(You et al. 2021; higher = the features explain the labels better), the val accuracy of the linear
probe a search's stage 0 fits (``training.linear_probe``: standardised features, L2 logistic regression
with C chosen by cross-validation), and the cost (feature seconds, parameter count). Later work found model
size alone a strong baseline, which is why ``params`` is a column: compare before trusting either score.

    >>> table = rank_backbones(load_space("search_spaces/portfolio.yaml"))
    >>> table.columns.tolist()
    ['backbone', 'logme', 'probe_acc', 'seconds', 'params']
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tune_tl.config.spec import SearchSpec
from tune_tl.errors import TuneTLError
from tune_tl.models import Backbone
from tune_tl.training.context import PreparedSearch, prepare_context
from tune_tl.training.linear_probe import measure_probe

log = logging.getLogger(__name__)

COLUMNS = ["backbone", "logme", "probe_acc", "seconds", "params"]
OUTPUT_SUFFIXES = (".csv", ".parquet")
#: The bundled portfolio: what ``tune-tl rank`` compares when no space names candidates.
PORTFOLIO = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


@dataclass(frozen=True)
class RankOptions:
    """What to rank and how: candidates, input side, where the table goes."""

    #: Candidate backbones; empty = the space's ``backbone.name`` (its list when it is a choice).
    backbones: tuple[str, ...] = ()
    #: Input side in pixels; ``None`` = the largest resolution the space allows.
    resolution: int | None = None
    #: ``.csv`` or ``.parquet`` file for the table; ``None`` = print only.
    output: str | None = None
    batch_size: int = 128
    device: str | None = None  # None: cuda when available

    def validate(self) -> None:
        if self.output is not None and Path(self.output).suffix not in OUTPUT_SUFFIXES:
            raise TuneTLError(f"--output {self.output}: the table is written as .csv or .parquet; name the file so")
        if self.resolution is not None and self.resolution < 32:
            raise TuneTLError(f"--resolution {self.resolution}: use 32 px or more (ImageNet backbones)")


def rank_backbones(spec: SearchSpec, options: RankOptions = RankOptions()) -> pd.DataFrame:
    """The ranking table (best LogME first; columns :data:`COLUMNS`) of the candidates on ``spec``'s data.

    Every backbone is built (and its weights checked) before the data is loaded, so a bad name fails first.
    """
    options.validate()
    resolution = options.resolution or max(spec.resolutions())
    prepared = prepare_context(spec, resolutions=[resolution], backbones=options.backbones or spec.backbone.names)
    table = rank_prepared(prepared, resolution, options.batch_size, options.device)
    if options.output:
        write_table(table, options.output)
    return table


def rank_prepared(prepared: PreparedSearch, resolution: int, batch_size: int = 128, device: str | None = None) -> pd.DataFrame:
    """Rank the backbones of an already prepared search on its split at ``resolution`` (best LogME first), with the
    same probe a search's stage 0 fits (``training.linear_probe.measure_probe``)."""
    split = prepared.context.data.splits[resolution]
    rows = []
    for name, backbone in prepared.backbones.items():
        measured = measure_probe(backbone, split, prepared.context.data.num_classes, prepared.context.seed, device=device,
                                 batch_size=batch_size)
        rows.append(ranking_row(name, backbone, measured.logme, measured.val_acc, measured.seconds))
        log.info("ranked %s: %s", name, rows[-1])
    return ranking_table(rows)


def ranking_row(name: str, backbone: Backbone, logme: float, probe_acc: float, seconds: float) -> dict:
    """One backbone's row of the ranking table (:data:`COLUMNS`)."""
    return {"backbone": name, "logme": logme, "probe_acc": probe_acc, "seconds": seconds,
            "params": sum(p.numel() for p in backbone.features.parameters())}


def ranking_table(rows: list[dict]) -> pd.DataFrame:
    """The ranking table from :func:`ranking_row` rows, best LogME first."""
    return pd.DataFrame(rows, columns=COLUMNS).sort_values("logme", ascending=False, ignore_index=True)


def write_table(table, output: str) -> None:
    """``.csv`` or ``.parquet`` by the file's suffix, written under a temporary name and renamed."""
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".csv":
        table.to_csv(tmp, index=False)
    else:
        table.to_parquet(tmp, index=False)
    tmp.replace(path)


def format_table(table) -> str:
    """The table as a person reads it: best first, scores rounded, parameters in millions."""
    shown = table.assign(params=(table["params"] / 1e6).map("{:.1f}M".format))
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4f}")


def select_backbones(spec: SearchSpec, table) -> SearchSpec:
    """``spec`` with only the ``backbone_selection.top`` best backbones of ``table``, best first.

    The best-ranked backbone leads the list, so it is the search's default backbone (the one a config
    without ``backbone`` means).
    """
    selection = spec.backbone_selection
    ranked = table.sort_values(selection.by, ascending=False, kind="stable")["backbone"].tolist()
    kept = tuple(ranked[: selection.top])
    name = kept[0] if len(kept) == 1 else kept
    log.info("backbone_selection: top %d by %s of %s: %s", selection.top, selection.by, ", ".join(ranked), ", ".join(kept))
    return dataclasses.replace(spec, backbone=dataclasses.replace(spec.backbone, name=name))
