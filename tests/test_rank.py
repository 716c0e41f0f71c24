"""`tune-tl rank`: one frozen-feature pass per backbone gives LogME, probe accuracy and cost, as a table file."""

import numpy as np
import pandas as pd
import pytest

from tune_tl.cli import main
from tune_tl.search.rank import COLUMNS

SPACE = """
data: {source: digits}
backbone: {name: [efficientnet_lite0, efficientnet_lite1], weights: imagenet}
params:
  resolution: 32
"""


@pytest.fixture
def space(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    return path


def test_rank_lists_every_candidate_of_the_space_with_finite_scores_of_imagenet_features(space, tmp_path, capsys):
    out = tmp_path / "rank.parquet"
    assert main(["rank", str(space), "--output", str(out)]) == 0
    table = pd.read_parquet(out)
    assert table.columns.tolist() == COLUMNS
    assert sorted(table["backbone"]) == ["efficientnet_lite0", "efficientnet_lite1"]
    assert np.isfinite(table["logme"]).all() and table["logme"].is_monotonic_decreasing
    assert (table["probe_acc"] > 0.8).all()  # ten digit classes: chance is 0.1
    assert (table["seconds"] > 0).all()
    assert dict(zip(table["backbone"], table["params"], strict=True)) == {"efficientnet_lite0": 3_371_008, "efficientnet_lite1": 4_135_680}
    printed = capsys.readouterr().out
    assert "efficientnet_lite1" in printed and "probe_acc" in printed


def test_data_and_backbones_flags_pick_the_images_and_candidates_and_csv_is_written(space, tmp_path):
    from tests.data.images import write_class_tree

    folder = write_class_tree(tmp_path / "photos", per_class=5)
    out = tmp_path / "sub" / "rank.csv"
    assert main(["rank", str(space), "--data", str(folder), "--backbones", "efficientnet_lite0", "--output", str(out)]) == 0
    table = pd.read_csv(out)
    assert table.columns.tolist() == COLUMNS and table["backbone"].tolist() == ["efficientnet_lite0"]
    assert np.isfinite(table.loc[0, "logme"]) and 0 <= table.loc[0, "probe_acc"] <= 1


@pytest.mark.parametrize("args, message", [
    (["--output", "rank.txt"], "--output rank.txt: the table is written as .csv or .parquet"),
    (["--backbones", "efficientnet_lite9"], "unknown backbone 'efficientnet_lite9'"),
    (["--resolution", "8"], "--resolution 8: use 32 px or more"),
])
def test_bad_rank_input_exits_2_with_one_line(space, args, message, capsys):
    assert main(["rank", str(space), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
