"""Running a search on Ray Tune: ``options`` (how), ``run`` (the driver), ``tuner`` (its wiring), ``resume``,
``trainable`` (what each trial runs), the schedulers, the Optuna bridge (``sampler``) and the progress view.

Import from the modules (or the names ``tune_tl`` exports); this package imports nothing, so the CLI stays quick.
"""
