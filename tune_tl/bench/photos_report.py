"""The photos benchmark's tables and the issue's targets, from measured rows (no training here).

Every search row carries its curve: (seconds since the search's start, val acc) of every epoch it
trained. "Best so far at T" is the best val acc of the epochs that ended within T seconds of that
start; a row only has figures at checkpoints within its own time budget.

    >>> row = BenchRow("digits64", "new", "120 s", 0.99, 131.0, budget=120, curve=((40.0, 0.97), (90.0, 0.99)))
    >>> best_so_far(row, 60)
    0.97
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: The rows of the issue, in the order they are run and printed.
KINDS = {
    "probe": "(a) linear probe (LogisticRegressionCV on frozen features)",
    "fine-tune": "(b) textbook fine-tune (plain loop)",
    "handwritten": "(c) hand-written Ray Tune + OptunaSearch + ASHA",
    "previous": "(d) previous default (imagefolder_before.yaml)",
    "new": "(e) new default (`tune-tl search --data DIR`)",
    "ensemble": "(f) ensemble of (e)'s probes and kept trials (chosen on val)",
}
SEARCHES = ("handwritten", "previous", "new")
#: The anytime checkpoints of the issue, in seconds since a search's start.
CHECKPOINTS = (60.0, 120.0, 300.0, 600.0)
_EPS = 1e-9


@dataclass(frozen=True)
class BenchRow:
    """One measured row: a probe or fine-tune of one backbone, or one search at one time budget."""

    dataset: str
    kind: str  #: a key of ``KINDS``
    setting: str  #: e.g. ``efficientnet_lite0, 224 px`` or ``120 s``
    best: float
    wall: float  #: seconds, data loading included
    budget: float | None = None  #: searches: their time budget
    curve: tuple[tuple[float, float], ...] = ()  #: searches: (s since the search's start, val acc) per epoch
    disk: int | None = None  #: searches: bytes their folder holds
    note: str = ""
    #: (e) and (f) on a set with a ``test/`` split: the shipped model's (the ensemble's) accuracy there, scored once.
    test: float | None = None


@dataclass(frozen=True)
class Target:
    """One of the issue's targets on one dataset: ``met`` is ``None`` when this run did not measure it."""

    name: str
    met: bool | None
    detail: str


def checkpoints(budgets: tuple[float, ...]) -> tuple[float, ...]:
    """The issue's checkpoints up to the longest budget, plus every budget itself."""
    return tuple(sorted({c for c in CHECKPOINTS if c <= max(budgets)} | set(budgets)))


def best_so_far(row: BenchRow, seconds: float) -> float | None:
    """Best val acc of ``row``'s epochs that ended within ``seconds``; ``None`` past its budget or before any epoch."""
    if row.budget is None or seconds > row.budget + _EPS:
        return None
    return max((acc for t, acc in row.curve if t <= seconds), default=None)


def reaches(a: float | None, b: float) -> bool:
    """``a`` is at least ``b``; a missing ``a`` (no epoch yet) never is."""
    return a is not None and a >= b - _EPS


def beats(a: float | None, b: float | None, margin: float = 0.0) -> bool:
    """``a`` is above ``b`` (by at least ``margin`` when one is given), or both are 100 %; a missing ``a`` never beats."""
    if a is None:
        return False
    if b is None or (a >= 1 - _EPS and b >= 1 - _EPS):
        return True
    return a >= b + margin - _EPS if margin else a > b + _EPS


def _pct(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{100 * value:.1f} %"


def _best(rows: list[BenchRow], kind: str) -> BenchRow | None:
    return max((r for r in rows if r.kind == kind), key=lambda r: r.best, default=None)


def _search_at(rows: list[BenchRow], kind: str, seconds: float) -> BenchRow | None:
    """The ``kind`` search with the shortest budget that reaches ``seconds`` (like with like across kinds)."""
    return min((r for r in rows if r.kind == kind and r.budget is not None and r.budget >= seconds - _EPS),
               key=lambda r: r.budget, default=None)


def targets(rows: list[BenchRow]) -> list[Target]:
    """The issue's three targets on one dataset's rows."""
    probe, tuned = _best(rows, "probe"), _best(rows, "fine-tune")
    bar = probe.best if probe else None
    floor = [(best_so_far(r, t), t, r.budget) for r in rows if r.kind == "new"
             for t in checkpoints((r.budget,)) if t >= CHECKPOINTS[0] - _EPS]
    name = "(e) ≥ best probe at every checkpoint from 60 s"
    if not floor or bar is None:
        first = Target(name, None, "no (e) checkpoint from 60 s on in this run")
    else:
        low, t, budget = min(floor, key=lambda f: -1.0 if f[0] is None else f[0])
        first = Target(name, all(reaches(v, bar) for v, _, _ in floor),
                       f"lowest: {_pct(low)} at {t:.0f} s of the {budget:.0f} s search; best probe {_pct(bar)} ({probe.setting})")
    late = _search_at(rows, "new", 600.0)
    if late is None or bar is None:
        second = Target("(e) at 600 s beats the best probe by ≥ 1 point (or ties at 100 %)", None, "no 600 s search in this run")
    else:
        value = best_so_far(late, 600.0)
        second = Target("(e) at 600 s beats the best probe by ≥ 1 point (or ties at 100 %)", beats(value, bar, margin=0.01),
                        f"{_pct(value)} vs {_pct(bar)}")
    early, hand = _search_at(rows, "new", 120.0), _search_at(rows, "handwritten", 120.0)
    if early is None or tuned is None or hand is None:
        third = Target("(e) at 120 s beats (b) and (c)", None, "needs (b), and (c) and (e) searches of ≥ 120 s")
    else:
        e, c = best_so_far(early, 120.0), best_so_far(hand, 120.0)
        third = Target("(e) at 120 s beats (b) and (c)", beats(e, tuned.best) and beats(e, c),
                       f"(e) {_pct(e)} vs (b) {_pct(tuned.best)} ({tuned.setting}, {tuned.wall:.0f} s) and (c) {_pct(c)} at 120 s")
    return [first, second, third]


def _yes(met: bool | None) -> str:
    return {True: "met", False: "missed", None: "not measured"}[met]


def dataset_table(rows: list[BenchRow], budgets: tuple[float, ...]) -> list[str]:
    """One dataset's rows as a Markdown table, then its targets."""
    marks = checkpoints(budgets)
    lines = ["| row | setting | best val acc | test acc | " + " | ".join(f"at {t:.0f} s" for t in marks) + " | wall | disk | notes |",
             "|---|---|---|---|" + "---|" * len(marks) + "---|---|---|"]
    for r in rows:
        at = " | ".join(_pct(best_so_far(r, t)) if r.budget is not None and t <= r.budget + _EPS else "—" for t in marks)
        disk = "—" if r.disk is None else f"{r.disk / 1e6:.1f} MB"
        wall = "—" if r.kind == "ensemble" else f"{r.wall:.0f} s"  # chosen inside (e)'s search: no wall of its own
        lines.append(f"| {KINDS[r.kind]} | {r.setting} | {_pct(r.best)} | {_pct(r.test)} | {at} | {wall} | {disk} | {r.note} |")
    lines.append("")
    lines += [f"- {t.name}: **{_yes(t.met)}** ({t.detail})" for t in targets(rows)]
    return lines


def summary_table(by_dataset: dict[str, list[BenchRow]], budgets: tuple[float, ...], real: set[str]) -> list[str]:
    """Dataset × row: the best probe, the best fine-tune, each search's final best per budget, the targets."""
    searches = [(kind, b) for kind in SEARCHES for b in budgets]
    head = ["dataset", "(a) best probe", "(b) best fine-tune", *(f"{KINDS[k][:3]} {b:.0f} s" for k, b in searches),
            "targets (e≥a · 600 s · 120 s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, rows in by_dataset.items():
        finals = [next((_pct(r.best) for r in rows if r.kind == k and r.budget == b), "—") for k, b in searches]
        met = " · ".join(_yes(t.met) for t in targets(rows))
        label = name if name in real else f"{name} (synthetic)"
        probe, tuned = (_best(rows, kind) for kind in ("probe", "fine-tune"))
        lines.append(f"| {label} | {_pct(probe and probe.best)} | {_pct(tuned and tuned.best)} | {' | '.join(finals)} | {met} |")
    return lines + ["", across_sets(by_dataset, real)]


def across_sets(by_dataset: dict[str, list[BenchRow]], real: set[str]) -> str:
    """The targets over the real sets: the first and third on every one, the second on two of three (two thirds)."""
    results = {name: targets(rows) for name, rows in by_dataset.items() if name in real}
    if not results:
        return "No real photo set in this run: the issue's targets are judged on real sets only."
    need = math.ceil(2 * len(results) / 3)
    counts = [sum(r[i].met is True for r in results.values()) for i in range(3)]
    measured = [all(r[i].met is not None for r in results.values()) for i in range(3)]
    verdicts = [measured[0] and counts[0] == len(results), measured[1] and counts[1] >= need, measured[2] and counts[2] == len(results)]
    names = ["(e) ≥ best probe from 60 s: every set", f"(e) +1 point over the probe at 600 s: {need} of {len(results)} sets",
             "(e) beats (b) and (c) at 120 s: every set"]
    return "Targets over the real sets: " + "; ".join(
        f"{n}: {counts[i]}/{len(results)}, **{_yes(verdicts[i] if measured[i] else None)}**" for i, n in enumerate(names)) + "."


def render(by_dataset: dict[str, list[BenchRow]], budgets: tuple[float, ...], real: set[str], preamble: list[str]) -> str:
    """The whole Markdown text: ``preamble``, a table per dataset with its targets, the summary table."""
    lines = list(preamble)
    for name, rows in by_dataset.items():
        lines += [f"### {name}" + ("" if name in real else " (synthetic)"), "", *dataset_table(rows, budgets), ""]
    lines += ["### Summary: each row's final best val acc", "", *summary_table(by_dataset, budgets, real)]
    return "\n".join(lines) + "\n"
