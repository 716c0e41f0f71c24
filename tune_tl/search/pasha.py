"""PASHA: ASHA with a progressively growing maximum budget (Bohdal et al., 2023).

ASHA spends most of its compute on the few trials it lets run to ``max_epochs``. PASHA starts with a
maximum of the second rung and raises it one rung at a time only while the top two rungs rank the
trials differently: if the ranking at ``r_k`` already agrees with the ranking at ``r_{k-1}``, training
longer would not change which configuration wins, so no trial is trained past ``r_k``.

This is the stopping variant on Ray's ``ASHAScheduler`` (Ray has no PASHA): the usual ASHA cutoffs
apply at every rung, and a trial that reaches the current maximum is stopped, unless its result makes
the rankings disagree, which raises the maximum and lets it (and every later trial) continue. Trials
stopped at an earlier maximum are not resumed (Syne Tune's promotion variant would). Rankings are
"soft" as in the paper: two values closer than ``epsilon`` count as a tie; ``epsilon`` is fixed (one
accuracy point by default) rather than estimated from the noise of the curves.

    >>> PASHA(metric="val_acc", mode="max", max_epochs=9, grace_period=1, reduction_factor=3)  # doctest: +SKIP
"""

from __future__ import annotations

import logging

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from tune_tl.compat import asha_rungs, asha_settings, count_stopped

log = logging.getLogger(__name__)


class PASHA(ASHAScheduler):
    """Progressive ASHA on ``epoch`` rungs (see the module docstring).

    Args:
        metric, mode: The objective.
        max_epochs: The largest budget PASHA may grow to.
        grace_period: The first rung, in epochs.
        reduction_factor: Rung spacing and ASHA's keep fraction.
        epsilon: Values closer than this are ranked equal (soft ranking).
    """

    def __init__(self, *, metric: str, mode: str, max_epochs: int, grace_period: int = 1,
                 reduction_factor: float = 3, epsilon: float = 0.01):
        super().__init__(time_attr="epoch", metric=metric, mode=mode, max_t=max_epochs, grace_period=grace_period,
                         reduction_factor=reduction_factor, stop_last_trials=True)
        levels = sorted({int(m) for m in asha_rungs(self)} | {max_epochs})
        self.levels: list[int] = levels
        self.top = min(1, len(levels) - 1)  # index into levels of the current maximum budget
        self.epsilon = epsilon
        self._values: dict[int, dict[str, float]] = {level: {} for level in levels}

    @property
    def max_resource(self) -> int:
        """The current maximum epochs a trial may train."""
        return self.levels[self.top]

    def on_trial_result(self, tune_controller, trial, result):
        asha = asha_settings(self)
        if asha.time_attr not in result or asha.metric not in result:
            return TrialScheduler.CONTINUE
        epoch = int(result[asha.time_attr])
        if epoch in self._values and trial.trial_id not in self._values[epoch]:
            self._values[epoch][trial.trial_id] = asha.metric_op * float(result[asha.metric])
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP or epoch < self.max_resource:
            return action
        if self.top < len(self.levels) - 1 and not self.rankings_agree():
            self.top += 1
            log.info("PASHA: rankings at the top rungs disagree; maximum budget raised to %d epochs", self.max_resource)
            return TrialScheduler.CONTINUE
        count_stopped(self)
        return TrialScheduler.STOP

    def rankings_agree(self) -> bool:
        """Whether trials in both top rungs are ranked alike there (no pair swaps by more than epsilon)."""
        upper, lower = self._values[self.levels[self.top]], self._values[self.levels[self.top - 1]]
        both = [t for t in upper if t in lower]
        for i, a in enumerate(both):
            for b in both[i + 1:]:
                up, low = upper[a] - upper[b], lower[a] - lower[b]
                if (up > self.epsilon and low < -self.epsilon) or (up < -self.epsilon and low > self.epsilon):
                    return False
        return True
