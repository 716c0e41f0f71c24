"""``python -m tune_tl.bench [curves|replay] ...``: the side-by-side suite, or the recorded-curve tools."""

import sys

if len(sys.argv) > 1 and sys.argv[1] == "curves":
    from tune_tl.bench.curves import main
elif len(sys.argv) > 1 and sys.argv[1] == "replay":
    from tune_tl.bench.replay import main
else:
    from tune_tl.bench.suite import main

main(sys.argv[2:] if len(sys.argv) > 1 and sys.argv[1] in ("curves", "replay") else None)
