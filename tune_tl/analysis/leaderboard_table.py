"""The leaderboard as a person reads it: result columns, then only the parameters that varied.

The terminal text and the HTML table show the same columns (:func:`shown_columns`). The HTML table
fits a 1400-px window: long headers break after an underscore, and a table wider still scrolls
inside its own box (the page itself never scrolls sideways).
"""

from __future__ import annotations

import re

import pandas as pd

from tune_tl.analysis.frame import Results
from tune_tl.config.params import PARAMS

#: Result columns of the leaderboard, before the parameters.
SHOWN = ["trial_id", "status", "best_val_acc", "best_epoch", "epochs_run"]


def key_params(trials: pd.DataFrame) -> list[str]:
    """Parameter columns whose value differs between trials (a value against a missing one counts): the ones
    worth showing, and the ones importances are computed for."""
    return [c for c in trials.columns if c in PARAMS and trials[c].nunique(dropna=False) > 1]


def shown_columns(res: Results) -> list[str]:
    return SHOWN + key_params(res.trials)


def _number(v: float) -> str:
    return f"{v:.4g}"


def format_leaderboard(board: pd.DataFrame, res: Results) -> str:
    """The leaderboard as fixed-width text: result columns, then the parameters that vary."""
    running = len(set(res.epochs["trial_id"]) - set(res.trials["trial_id"]))
    head = f"{len(res.trials)} finished trial(s)" + (f", {running} running" if running > 0 else "")
    if board.empty:
        return head + ": no trial has finished yet."
    return head + "\n" + board[shown_columns(res)].to_string(float_format=_number)


def leaderboard_html(board: pd.DataFrame, res: Results) -> str:
    """The leaderboard as an HTML table in a ``div.board`` (the page's CSS lets it scroll inside that box)."""
    if board.empty:
        return "<p>No trial has finished yet.</p>"
    table = board[shown_columns(res)].reset_index().to_html(float_format=_number, na_rep="", border=0, index=False)
    # Headers like best_val_acc or label_smoothing may break after an underscore: columns as wide as their values.
    table = re.sub(r"<th>([^<]*)</th>", lambda m: "<th>" + m.group(1).replace("_", "_<wbr>") + "</th>", table)
    return f"<div class='board'>{table}</div>"
