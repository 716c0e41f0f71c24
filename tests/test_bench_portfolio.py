"""The portfolio benchmark compares the bundled backbones on the portfolio space and scores the cheap rankings."""

import pandas as pd

from tune_tl.bench.portfolio import PORTFOLIO_SPACE, kendall, only
from tune_tl.bench.suite import at_resolution
from tune_tl.config import load_space


def test_kendall_tau_is_one_for_the_same_order_and_minus_one_for_the_reverse():
    table = pd.DataFrame({"logme": [0.5, 0.4, 0.3], "params": [1, 2, 3], "fine_tuned_acc": [0.99, 0.98, 0.97]})
    assert kendall(table, "logme") == 1.0
    assert kendall(table, "params") == -1.0


def test_the_lite0_only_search_is_the_portfolio_space_with_one_backbone():
    spec = at_resolution(load_space(PORTFOLIO_SPACE), 64)
    assert spec.backbone.names == ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
    lite0 = only(spec, "efficientnet_lite0")
    assert lite0.backbone.names == ("efficientnet_lite0",) and not lite0.backbone.is_choice
    assert lite0.params == spec.params and spec.resolutions() == [64]
