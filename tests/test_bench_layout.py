"""The layout benchmark times both layouts, and the folded frozen pass, on one backbone; all give the same features."""

from tune_tl.bench.layout import FOLDED, LAYOUTS, markdown, measure_layouts


def test_both_layouts_are_timed_side_by_side_and_agree_on_the_features():
    row = measure_layouts("efficientnet_lite0", resolution=32, batch_size=4, repeats=1)
    timed = [row[f"{kind}, {name}"] for kind in ("eval", "train") for name in LAYOUTS] + [row[FOLDED]]
    assert len(timed) == 5 and all(v > 0 for v in timed)
    assert row["eval outputs differ by"] < 1e-4 and row["folded outputs differ by"] < 1e-4  # float32 sums in another order at most
    table = markdown([row]).splitlines()
    assert len(table) == 3 and table[2].startswith("| efficientnet_lite0 | 32 |") and table[2].count("x |") == 3
