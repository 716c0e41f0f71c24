"""One look for every report figure: fonts, sizes, width, colours and the accuracy axis, set here only.

A figure is built inside :func:`styled` (one matplotlib rc applied to all of them) on a :func:`new_figure`
of the one width, so the page shows them side by side at the same scale. Figures are plain
``matplotlib.figure.Figure`` objects, never pyplot's: nothing global changes (no backend switch) and
nothing has to be closed.

    >>> fig, (ax,) = new_figure()                # doctest: +SKIP
    >>> save(fig, Path("report/plot.png"))       # doctest: +SKIP
"""

from __future__ import annotations

import functools
from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, SymmetricalLogLocator

from tune_tl.store.schema import STATUSES

STATUS_COLOURS = {"completed": "tab:green", "pruned": "tab:orange", "diverged": "tab:red", "oom": "tab:purple",
                  "error": "tab:gray", "running": "tab:blue"}
assert set(STATUS_COLOURS) == set(STATUSES) | {"running"}, "one status vocabulary (tune_tl.store.schema.STATUSES)"

#: Inches at ``DPI``: 640 × 400 px, so two figures sit side by side in a 1400-px browser window.
WIDTH, HEIGHT, DPI = 6.4, 4.0, 100
#: An accuracy axis whose zoomed bottom would fall below this starts at 0 (zooming would gain little).
FROM_ZERO = 0.2
STYLE = {
    "font.family": "DejaVu Sans", "font.size": 10, "axes.titlesize": 12, "axes.titleweight": "normal",
    "axes.labelsize": 10, "xtick.labelsize": 9, "ytick.labelsize": 9, "legend.fontsize": 8, "figure.titlesize": 12,
    "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
    "figure.dpi": DPI, "figure.constrained_layout.use": True,
}


def styled(build):
    """Run a figure builder under :data:`STYLE` (text takes its font and size when it is created)."""
    @functools.wraps(build)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return build(*args, **kwargs)
    return wrapper


def new_figure(ncols: int = 1, height: float = HEIGHT, **kwargs) -> tuple[Figure, list]:
    """A figure of the report's width with ``ncols`` axes side by side (call inside :func:`styled`)."""
    fig = Figure(figsize=(WIDTH, height))
    return fig, list(fig.subplots(1, ncols, squeeze=False, **kwargs)[0])


def accuracy_axis(ax, values, label: str) -> None:
    """Label the y axis ``label`` and fit it to ``values`` with a margin: 0.83 and 0.97 must not look alike.

    An axis that would start below ``FROM_ZERO`` starts at 0 (zooming gains nothing); one that starts above
    says so in its label, so nobody reads a difference in height as a ratio.
    """
    values = pd.Series(values, dtype=float).dropna()
    if values.empty:
        ax.set_ylabel(label)
        return
    low, high = float(values.min()), float(values.max())
    margin = max(0.08 * (high - low), 0.01)
    bottom = low - margin if low - margin > FROM_ZERO else 0.0
    ax.set_ylim(bottom, high + margin)
    ax.set_ylabel(label + (" (axis not from 0)" if bottom > 0 else ""))


def log_x_axis(ax, linear_below: float | None = None) -> None:
    """A log x axis whose ticks read as plain numbers at 1, 2 and 5 per decade (0.0005, 20k, 2M), not as
    crowded 3×10⁻⁴ labels; ``linear_below``: symmetric log, linear from 0 up to that value (so 0 fits)."""
    if linear_below is None:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    else:
        ax.set_xscale("symlog", linthresh=linear_below)
        ax.xaxis.set_major_locator(SymmetricalLogLocator(ax.xaxis.get_transform(), subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _short(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _short(v: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= size:
            return f"{v / size:g}{suffix}"
    return f"{v:g}"


def save(fig: Figure, file: Path) -> Path:
    """Write ``fig`` as PNG to ``file`` atomically (a reader of a running search never sees half a file)."""
    tmp = file.with_name(f".{file.name}.tmp.png")
    with matplotlib.rc_context(STYLE):
        fig.savefig(tmp, dpi=DPI)
    tmp.replace(file)
    return file
