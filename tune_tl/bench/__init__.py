"""Side-by-side benchmarks: ``python -m tune_tl.bench``."""
