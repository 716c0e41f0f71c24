"""The report's one static HTML page: the search's record, the leaderboard, the figures, the notes.

Laid out for a browser window of 1400 px (checked in headless Chromium by ``tests/test_report_browser.py``):
the leaderboard fits or scrolls inside its own box, figures keep their own size (readable labels) and
sit side by side where the window is wide enough, each with its caption.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from tune_tl.analysis.frame import Results
from tune_tl.analysis.leaderboard_table import leaderboard_html
from tune_tl.store.ranking import ensemble_ships

CSS = """body{font-family:sans-serif;margin:2em;color:#222}
.board{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:13px}
th{vertical-align:bottom;padding:2px 5px;border-bottom:1px solid #999;text-align:right}
td{padding:2px 5px;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}
tbody tr:hover{background:#f4f4f4}
.plots{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
figure{margin:0}
figure img{max-width:100%;height:auto;display:block}
figcaption{max-width:640px;font-size:13px;color:#444}"""


def write_html(res: Results, board: pd.DataFrame, plots: list[Path], captions: dict[str, str], notes: list[str], file: Path) -> Path:
    """Write the page to ``file`` atomically; ``plots`` are files beside it, ``captions`` by file name."""
    name = html.escape(str(res.search.get("name", file.parent.parent.name)))
    meta = {k: res.search.get(k) for k in ("start_time", "end_time", "seed", "host") if res.search.get(k) is not None}
    figures = [f"<figure><img src='{html.escape(p.name)}' alt='{html.escape(p.stem)}'>"
               + (f"<figcaption>{html.escape(captions[p.name])}</figcaption>" if captions.get(p.name) else "") + "</figure>"
               for p in plots]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>tune_tl report: {name}</title>",
             f"<style>{CSS}</style>",
             f"</head><body><h1>Search {name}</h1>",
             "<p>" + ", ".join(f"{k}: {html.escape(str(v))}" for k, v in meta.items()) + "</p>",
             f"<p>{len(res.trials)} finished trial(s); {res.epochs['trial_id'].nunique()} with results.</p>",
             *estimate_html(res.search),
             "<h2>Leaderboard</h2>", leaderboard_html(board, res), "<h2>Plots</h2>",
             "<div class='plots'>", *figures, "</div>",
             *[f"<p><em>{html.escape(n)}</em></p>" for n in notes], "</body></html>"]
    tmp = file.with_name(f".{file.name}.tmp")
    tmp.write_text("\n".join(parts))
    tmp.replace(file)
    return file


def estimate_html(search: dict) -> list[str]:
    """What ``export`` ships and how good it is: the test score and the ensemble ``search.json`` records (``search.held_out``,
    ``search.ensemble``); nothing for a search that ended before either was kept."""
    test, ensemble = search.get("test"), search.get("ensemble")
    if not test and not ensemble:
        return []
    lines = []
    if test:
        lines.append(f"Single winner {html.escape(str(test['trial_id']))}: val {test['val_acc']:.4f}, <b>test {test['test_acc']:.4f}</b> "
                     f"on {test['test_images']} held-out images (scored once at the end, never used to choose).")
    else:
        lines.append("No test split: the best val accuracy is the maximum over every trial, so optimistic; put held-out images "
                     "in &lt;data&gt;/test/&lt;class&gt;/ for an honest figure.")
    if ensemble and len(ensemble.get("members", ())) > 1:
        members = ", ".join(f"{html.escape(str(m['trial_id']))} {m['weight']:.2f}" for m in ensemble["members"])
        on_test = (f", test {test['ensemble_test_acc']:.4f}" if test and test.get("ensemble_test_acc") is not None else "")
        ships = "tune-tl export ships it" if ensemble_ships(ensemble) else "tune-tl export ships the best single (--ensemble exports it)"
        lines.append(f"Ensemble chosen on val ({members}): val {ensemble['val_acc']:.4f} against the best single's "
                     f"{ensemble['best_single_val_acc']:.4f}{on_test}; {ships}.")
    elif ensemble:
        lines.append("Ensemble: no average of the search's models beat its best single one on val.")
    return ["<h2>What export ships</h2>", *[f"<p>{line}</p>" for line in lines]]
