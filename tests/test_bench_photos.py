"""The photos benchmark builds its tables and judges the issue's targets from measured rows; a quick run goes end to end."""

import pytest

from tune_tl.bench.photo_sets import PhotoSet, given_folder, textures_folder
from tune_tl.bench.photos import BACKBONES, PREVIOUS_SPACE, PhotosPlan, main, run_dataset_jobs, unique_names
from tune_tl.bench.photos_report import BenchRow, across_sets, best_so_far, checkpoints, dataset_table, render, targets
from tune_tl.config import load_space
from tune_tl.errors import TuneTLError


def search(kind, budget, curve, dataset="ants"):
    return BenchRow(dataset, kind, f"{budget:g} s", max(a for _, a in curve), budget + 20, budget, tuple(curve), 5_000_000)


def rows(dataset="ants", probe=0.94, tuned=0.93, script=0.92, new120=((50, 0.95), (110, 0.96)), new600=((50, 0.95), (500, 0.97))):
    return [
        BenchRow(dataset, "probe", "efficientnet_lite0, 224 px", probe - 0.01, 30.0),
        BenchRow(dataset, "probe", "efficientnet_lite2, 260 px", probe, 50.0),
        BenchRow(dataset, "fine-tune", "efficientnet_lite0, 224 px", tuned, 100.0),
        search("handwritten", 120, [(70, script)], dataset),
        search("previous", 120, [(70, 0.93)], dataset),
        search("new", 120, new120, dataset),
        search("handwritten", 600, [(70, script)], dataset),
        search("new", 600, new600, dataset),
    ]


def met(rows_):
    return [t.met for t in targets(rows_)]


def test_best_so_far_counts_epochs_up_to_the_checkpoint_and_nothing_past_the_budget():
    row = search("new", 120, [(40, 0.90), (90, 0.95), (121, 0.99)])
    assert best_so_far(row, 30) is None, "no epoch had ended"
    assert best_so_far(row, 60) == 0.90 and best_so_far(row, 120) == 0.95
    assert best_so_far(row, 300) is None, "a 120 s search has no figure at 300 s"
    assert row.best == 0.99, "the final best may come from an epoch that ended while the budget closed the search"


def test_checkpoints_are_the_issues_up_to_the_longest_budget_plus_each_budget():
    assert checkpoints((120, 600)) == (60, 120, 300, 600)
    assert checkpoints((20,)) == (20,)
    assert checkpoints((90,)) == (60, 90)


def test_the_targets_are_met_when_the_new_default_clears_the_probe_the_fine_tune_and_the_script():
    assert met(rows()) == [True, True, True]


def test_a_checkpoint_below_the_best_probe_misses_the_first_target_and_a_tie_meets_it():
    assert met(rows(new120=((50, 0.93), (110, 0.96))))[0] is False
    assert met(rows(new120=((50, 0.94), (110, 0.96))))[0] is True
    assert met(rows(new120=((70, 0.96),)))[0] is False, "no epoch by 60 s is below the probe"


def test_600_s_needs_one_point_over_the_best_probe_or_a_tie_at_100_percent():
    assert met(rows(new600=((500, 0.949),)))[1] is False
    assert met(rows(new600=((500, 0.95),)))[1] is True
    assert met(rows(probe=1.0, new120=((50, 1.0),), new600=((50, 1.0),)))[1] is True
    assert met(rows(new600=((50, 0.95), (599, 0.96), (601, 0.99))))[1] is True, "the epoch after 600 s does not count"


def test_at_120_s_the_new_default_must_beat_the_best_fine_tune_and_the_script_not_tie():
    assert met(rows(tuned=0.96))[2] is False
    assert met(rows(script=0.96))[2] is False
    assert met(rows(tuned=0.955, script=0.955))[2] is True


def test_a_quick_run_says_which_targets_it_did_not_measure():
    quick = [BenchRow("ants", "probe", "efficientnet_lite0, 224 px", 0.9, 30.0), search("new", 20, [(10, 0.91)])]
    assert met(quick) == [None, None, None]
    assert "not measured" in "\n".join(dataset_table(quick, (20,)))


def test_two_of_three_real_sets_suffice_at_600_s_and_synthetic_sets_do_not_count():
    by = {"ants": rows("ants"), "flowers": rows("flowers"), "xray": rows("xray", new600=((500, 0.945),)),
          "digits64": rows("digits64", new600=((500, 0.5),))}
    line = across_sets(by, {"ants", "flowers", "xray"})
    assert "(e) +1 point over the probe at 600 s: 2 of 3 sets: 2/3, **met**" in line
    by["flowers"] = rows("flowers", new600=((500, 0.945),))
    assert "2 of 3 sets: 1/3, **missed**" in across_sets(by, {"ants", "flowers", "xray"})


def test_the_dataset_table_has_a_column_per_checkpoint_and_dashes_past_a_search_budget():
    table = dataset_table(rows(), (120, 600))
    assert table[0].startswith("| row | setting | best val acc | test acc | at 60 s | at 120 s | at 300 s | at 600 s | wall | disk |")
    new120 = next(line for line in table if line.startswith("| (e)") and "| 120 s |" in line)
    assert "| 96.0 % | — | 95.0 % | 96.0 % | — | — | 140 s | 5.0 MB |" in new120, "no test split: a dash"


def test_the_report_has_a_table_per_dataset_and_a_summary_marking_synthetic_sets():
    text = render({"ants": rows("ants"), "digits64": rows("digits64")}, (120, 600), {"ants"}, ["header", ""])
    assert text.startswith("header\n") and "### ants\n" in text and "### digits64 (synthetic)\n" in text
    assert "| digits64 (synthetic) | 94.0 % | 93.0 % | 92.0 % | 92.0 % | 93.0 % | — | 96.0 % | 97.0 % | met · met · met |" in text
    assert "Targets over the real sets:" in text


def test_the_previous_default_is_the_frozen_image_folder_space():
    spec = load_space(str(PREVIOUS_SPACE))
    assert PREVIOUS_SPACE.read_text().startswith("# THE PREVIOUS DEFAULT, FROZEN IN TIME")
    assert spec.data.source == "imagefolder" and spec.backbone.names == ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
    assert (spec.budget.samples, spec.budget.max_epochs) == (16, 6)


def test_a_folder_without_its_own_val_split_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "photos" / "train" / "cat").mkdir(parents=True)
    with pytest.raises(TuneTLError, match="no val/ folder"):
        given_folder(str(tmp_path / "photos"))
    assert main(["--quick", "--data", str(tmp_path / "photos")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --data ") and "val/" in err[0]


def test_the_generated_textures_become_a_train_and_val_folder(tmp_path):
    ds = textures_folder(tmp_path, per_class=5, size=32)
    assert not ds.real and sorted(p.name for p in ds.path.iterdir()) == ["train", "val"]
    counts = {part: len(list((ds.path / part).rglob("*.png"))) for part in ("train", "val")}
    assert counts == {"train": 24, "val": 6}, "the 0.2 stratified split a seed-0 search makes"


@pytest.mark.slow
def test_a_quick_run_measures_every_row_and_writes_the_tables(ray_local, tmp_path, capsys):
    ds = textures_folder(tmp_path / "data", per_class=5, size=32)
    out = tmp_path / "photos.md"
    assert main(["--quick", "--data", str(ds.path), "--time-budget", "10", "--out", str(out), "--keep", str(tmp_path / "kept")]) == 0
    text = out.read_text()
    for kind in ("(a) linear probe", "(b) textbook fine-tune", "(c) hand-written", "(d) previous default", "(e) new default"):
        assert kind in text
    assert "### textures\n" in text and "| at 10 s |" in text and "Targets over the real sets:" in text
    new = next(line for line in text.splitlines() if line.startswith("| (e)"))
    assert new.split(" | ")[-2].endswith(" MB"), ("the disk its search folder uses "
                                                  "(whether an epoch ends in 10 s depends on the machine's load)")
    assert {p.name for p in (tmp_path / "kept").iterdir()} >= {"textures-new-10s", "textures-previous-10s", "textures-handwritten-10s"}


def test_two_folders_with_one_base_name_get_distinct_safe_search_names(tmp_path):
    sets = unique_names([PhotoSet("my photos", tmp_path / "a"), PhotoSet("my photos", tmp_path / "b"), PhotoSet("textures", tmp_path)])
    assert [s.name for s in sets] == ["my_photos", "my_photos_", "textures"]


def test_rows_picks_which_rows_are_measured_and_a_bad_letter_is_refused_before_any_work(tmp_path, capsys):
    ds = PhotoSet("ants", tmp_path)
    jobs = run_dataset_jobs(ds, PhotosPlan(budgets=(60.0,), rows="ae"), tmp_path)
    assert [job.func.__name__ for job in jobs] == ["probe_row"] * 3 + ["new_row", "ensemble_row"], "(f) is read from (e)'s search"
    assert len(run_dataset_jobs(ds, PhotosPlan(budgets=(60.0, 120.0)), tmp_path)) == 3 + 3 + 2 * 4, "default: every row"
    (tmp_path / "photos" / "train").mkdir(parents=True)
    (tmp_path / "photos" / "val").mkdir()
    assert main(["--rows", "ax", "--data", str(tmp_path / "photos")]) == 2
    assert capsys.readouterr().err.strip() == "error: --rows ax: give letters of abcde (e.g. --rows ace), each a row to measure"


def test_fine_tune_backbones_narrows_row_b_only_and_an_unknown_name_is_refused_before_any_work(tmp_path, capsys):
    plan = PhotosPlan(budgets=(60.0,), rows="abe", fine_tune_backbones=("efficientnet_lite0",))
    jobs = run_dataset_jobs(PhotoSet("ants", tmp_path), plan, tmp_path)
    named = [(job.func.__name__, job.args[1]) for job in jobs[:4]]
    assert named == [("probe_row", b) for b in BACKBONES] + [("fine_tune_row", BACKBONES[0])]
    assert [job.func.__name__ for job in jobs[4:]] == ["new_row", "ensemble_row"]
    (tmp_path / "photos" / "train").mkdir(parents=True)
    (tmp_path / "photos" / "val").mkdir()
    assert main(["--fine-tune-backbones", "resnet50", "--data", str(tmp_path / "photos")]) == 2
    assert "--fine-tune-backbones: give names of efficientnet_lite0" in capsys.readouterr().err


def test_the_test_column_shows_the_figures_scored_once_on_a_test_split_and_a_dash_elsewhere():
    rows = [BenchRow("cells", "probe", "efficientnet_lite0, 224 px", 0.80, 30.0),
            BenchRow("cells", "new", "600 s", 0.90, 610.0, 600, ((100.0, 0.90),), test=0.875),
            BenchRow("cells", "ensemble", "600 s", 0.92, 0.0, test=0.8825)]
    lines = dataset_table(rows, (600.0,))
    assert lines[0].startswith("| row | setting | best val acc | test acc | at 60 s |")
    cells = [line.split(" | ")[3] for line in lines[2:5]]
    assert cells == ["—", "87.5 %", "88.2 %"]
    assert lines[4].split(" | ")[-3] == "—", "the ensemble was chosen inside (e)'s search: no wall of its own"
