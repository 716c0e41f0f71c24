"""``tune-tl report DIR``: a leaderboard on the terminal, PNG plots and one static HTML page.

Works on a running search (it reads whatever parts exist) and on one with no trials yet. Plots are
written next to the results, under ``<DIR>/report/``; for a search on an object store (``s3://``,
``gs://``) into ``./<name>-report/`` on this machine, where a browser can open them:

    >>> text, paths = write_report("results/demo")   # doctest: +SKIP
    >>> sorted(p.name for p in paths)
    ['accuracy_vs_freeze.png', 'accuracy_vs_lr.png', 'anytime.png', 'importances.png', 'index.html', 'learning_curves.png', 'pareto.png']

This module only orchestrates; each fact has its own file: the leaderboard's columns
(:mod:`~tune_tl.analysis.leaderboard_table`), the figures (:mod:`~tune_tl.analysis.plots`, one style in
:mod:`~tune_tl.analysis.figure_style`), the scheduler's rungs (:mod:`~tune_tl.analysis.rungs`), the
importances (:mod:`~tune_tl.analysis.importances`) and the page (:mod:`~tune_tl.analysis.html_report`).
"""

from __future__ import annotations

from pathlib import Path

from tune_tl.analysis import plots
from tune_tl.analysis.figure_style import save
from tune_tl.analysis.frame import Results, leaderboard, load_results
from tune_tl.analysis.html_report import write_html
from tune_tl.analysis.importances import importance_notes, parameter_importances
from tune_tl.analysis.leaderboard_table import format_leaderboard
from tune_tl.analysis.rungs import scheduler_rungs
from tune_tl.store.ranking import recheck_table, shipped_row
from tune_tl.store.search_run import SearchRun


def write_report(path: str | Path, top: int = 10) -> tuple[str, list[Path]]:
    """Read the search in ``path``, write plots and ``index.html``; return (leaderboard text, files).

    A figure with nothing to show (importances from too few trials, a parameter that did not vary) is
    left out, and its file from an earlier report removed.
    """
    run = SearchRun.open(path)
    res = load_results(run)
    out = run.report_dir()
    out.mkdir(exist_ok=True)
    board = leaderboard(res, top=top)
    rungs = scheduler_rungs(run)
    importances = parameter_importances(res.trials, res.epochs)
    notes = [shipped_note(res, run), *importance_notes(importances)]
    notes = [n for n in notes if n]
    figures = {"learning_curves.png": plots.learning_curves(res, rungs),
               "anytime.png": plots.anytime(res),
               "accuracy_vs_freeze.png": plots.accuracy_by_freeze(res),
               "accuracy_vs_lr.png": plots.accuracy_vs_lr(res),
               "importances.png": plots.importances_plot(importances),
               "pareto.png": plots.pareto(res)}
    files = []
    for name, fig in figures.items():
        if fig is None:
            (out / name).unlink(missing_ok=True)
        else:
            files.append(save(fig, out / name))
    caption = rungs.caption(rungs.seconds_per_unit(res.trials, res.epochs))
    files.append(write_html(res, board, files, {"learning_curves.png": caption}, notes, out / "index.html"))
    return format_leaderboard(board, res) + ("\n" + "\n".join(notes) if notes else ""), files


def shipped_note(res: Results, run: SearchRun) -> str | None:
    """The trial ``tune-tl export`` takes (``store.ranking.shipped_row``), and why; ``None`` before any trial ranks."""
    recheck = run.recheck()
    shipped = shipped_row(res.trials, recheck)
    if shipped is None:
        return None
    rechecked = recheck_table(res.trials, recheck)
    if rechecked.empty:
        why = "the best trial"
    elif shipped["trial_id"] == rechecked["trial_id"].iloc[0]:
        why = "the best mean over seeds (--recheck)"
    else:
        why = "a probe above the best mean over seeds (--recheck)"
    return f"tune-tl export takes trial {shipped['trial_id']}: {why}."
