"""Which recorded digits-64 configs TPE picks first: density ratio ÷ cost (old) vs ÷ cost^α cooling + no dominated (new).

Sequential, no scheduler: each proposal is evaluated by its nearest untried recorded config (as TPEReplay does);
cost = the recorded curve's total seconds (the replay has no backbones); α = 1 − trials/N for the new one.
"""
import optuna
from optuna.trial import TrialState

from tune_tl.bench.curves import CURVES_DIR, read_curves
from tune_tl.bench.replay_samplers import nearest, space_of
from tune_tl.bench.sim import curves_from_table
from tune_tl.compat import TPESamplerWithCost

optuna.logging.set_verbosity(optuna.logging.WARNING)
table, _ = read_curves(CURVES_DIR / "digits64.parquet")
curves = curves_from_table(table)
dists = space_of(curves)
PROBE = 0.942  # the digits-64 probe the issue quotes (94.2 %)


def dominated(p):
    return p.get("freeze_policy") == "head_only" and p.get("head", "linear") == "linear"


def run(seed, new, n=12):
    pool = list(curves)
    state = {"k": 0}
    def cost(p):
        c = nearest(p, pool or curves, dists)
        if new and dominated({**c.params, **p}):
            return float("inf")
        return float(c.cost)
    sampler = TPESamplerWithCost(cost, (lambda: 1 - state["k"] / n) if new else None, seed=seed, n_startup_trials=3, multivariate=True)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    chosen = []
    for k in range(n):
        state["k"] = k
        allowed = [c for c in pool if not (new and dominated(c.params))]
        for _ in range(16):
            t = study.ask(dists)
            c = nearest(t.params, pool, dists)
            if not (new and dominated(c.params)):
                break
            study.tell(t, state=TrialState.FAIL)
        else:
            t = study.ask(dists)
            c = nearest(t.params, allowed, dists)
        pool.remove(c)
        chosen.append(c)
        study.tell(t, float(max(c.val_acc)))
    return chosen


for seed in range(3):
    for new in (False, True):
        chosen = run(seed, new)
        ho = sum(c.params.get("freeze_policy") == "head_only" for c in chosen)
        print(f"seed {seed} {'cooled+no-dominated' if new else 'ratio/cost (old)'}: head_only {ho}/12, "
              f"best {max(max(c.val_acc) for c in chosen):.4f}, seconds {sum(c.cost for c in chosen):.0f}: "
              + " ".join(f"{c.trial_id}:{c.params.get('freeze_policy')[:4]}" for c in chosen))
