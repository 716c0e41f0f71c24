"""Draw configs from a define-by-run space the way a search does, on a throwaway Optuna study."""

import optuna


def sample_many(fn, n=40):
    """``n`` configs (sampled parameters plus the constants ``fn`` returns) from random trials."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    configs = []
    for _ in range(n):
        trial = study.ask()
        constants = fn(trial) or {}
        configs.append({**trial.params, **constants})
        study.tell(trial, 0.0)
    return configs
