"""The headline benchmark runs the searches the issue names: digits at 64 px, 16 trials, ≤ 6 epochs."""

from tune_tl.bench.headline import HeadlineRow, headline_spec, print_headline
from tune_tl.config import Fixed, load_space


def test_headline_spec_is_the_default_space_at_64_px_with_16_trials_of_6_epochs():
    spec = headline_spec(load_space())
    assert spec.resolutions() == [64]
    assert dict((p.name, p.dist) for p in spec.params)["resolution"] == Fixed(64)
    assert (spec.budget.samples, spec.budget.max_epochs) == (16, 6)
    assert [p.name for p in spec.params] == [p.name for p in load_space().params]


def test_headline_table_gives_accuracy_and_wall_relative_to_the_single_fine_tune(capsys):
    curve = ((60.0, 0.90), (120.0, 0.97), (160.0, 0.98))
    print_headline([HeadlineRow("(a) textbook", 0.96, 80.0), HeadlineRow("(c) new default", 0.98, 160.0, curve=curve)])
    out = capsys.readouterr().out
    assert "| (c) new default | 98.0 % | 160 s | +2.0 pts | 2.00× | 120 s (1.50×) |" in out, "the first epoch at (a)'s accuracy"


def test_a_search_that_never_reaches_the_fine_tune_says_never(capsys):
    print_headline([HeadlineRow("(a) textbook", 0.99, 80.0), HeadlineRow("(b) old", 0.95, 200.0, curve=((50.0, 0.95),))])
    assert "| -4.0 pts | 2.50× | never |" in capsys.readouterr().out
