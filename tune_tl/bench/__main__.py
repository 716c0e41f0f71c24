"""``python -m tune_tl.bench [curves|replay|gpu|portfolio|photos] ...``: the side-by-side suite, the recorded-curve tools,
the GPU figures, the backbone portfolio, or the photo-folder comparison."""

import sys

if len(sys.argv) > 1 and sys.argv[1] == "curves":
    from tune_tl.bench.curves import main
elif len(sys.argv) > 1 and sys.argv[1] == "replay":
    from tune_tl.bench.replay import main
elif len(sys.argv) > 1 and sys.argv[1] == "gpu":
    from tune_tl.bench.gpu import main
elif len(sys.argv) > 1 and sys.argv[1] == "portfolio":
    from tune_tl.bench.portfolio import main
elif len(sys.argv) > 1 and sys.argv[1] == "photos":
    from tune_tl.bench.photos import main
else:
    from tune_tl.bench.headline import main

code = main(sys.argv[2:] if len(sys.argv) > 1 and sys.argv[1] in ("curves", "replay", "gpu", "portfolio", "photos") else None)
sys.exit(code if isinstance(code, int) else 0)
