from tune_tl.bench.suite import main

main()
