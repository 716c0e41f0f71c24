"""``python -m tune_tl.bench [curves|replay|gpu|portfolio] ...``: the side-by-side suite, the recorded-curve tools, the GPU
figures, or the backbone portfolio."""

import sys

if len(sys.argv) > 1 and sys.argv[1] == "curves":
    from tune_tl.bench.curves import main
elif len(sys.argv) > 1 and sys.argv[1] == "replay":
    from tune_tl.bench.replay import main
elif len(sys.argv) > 1 and sys.argv[1] == "gpu":
    from tune_tl.bench.gpu import main
elif len(sys.argv) > 1 and sys.argv[1] == "portfolio":
    from tune_tl.bench.portfolio import main
else:
    from tune_tl.bench.headline import main

main(sys.argv[2:] if len(sys.argv) > 1 and sys.argv[1] in ("curves", "replay", "gpu", "portfolio") else None)
