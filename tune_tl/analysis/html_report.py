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
             "<h2>Leaderboard</h2>", leaderboard_html(board, res), "<h2>Plots</h2>",
             "<div class='plots'>", *figures, "</div>",
             *[f"<p><em>{html.escape(n)}</em></p>" for n in notes], "</body></html>"]
    tmp = file.with_name(f".{file.name}.tmp")
    tmp.write_text("\n".join(parts))
    tmp.replace(file)
    return file
