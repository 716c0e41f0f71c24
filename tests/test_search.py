"""run_search refuses bad options and never overwrites an earlier search, before any Ray work."""

import pytest

from tune_tl import SearchOptions, TuneTLError, load_space, run_search


@pytest.mark.parametrize("leftover", ["trials", "epochs", "optuna.db", "tuner.pkl"])
def test_a_folder_holding_an_earlier_search_is_never_reused(tmp_path, leftover):
    root = tmp_path / "s"
    root.mkdir()
    (root / leftover).mkdir()
    with pytest.raises(TuneTLError, match=r"already holds search results; .* `tune-tl resume "):
        run_search(load_space(), SearchOptions(output=str(tmp_path), name="s"))


@pytest.mark.parametrize(
    "options, message",
    [
        (SearchOptions(cpus_per_trial=0), "--cpus-per-trial must be positive"),
        (SearchOptions(gpus_per_trial=1.5), "--gpus-per-trial must be a fraction"),
        (SearchOptions(concurrency=0), "--concurrency must be at least 1"),
        (SearchOptions(scheduler="hyperband"), "--scheduler must be one of cost-asha, asha, pasha, fifo"),
        (SearchOptions(name="a/b"), "--name must be a plain folder name"),
        (SearchOptions(max_failures=-1), "--max-failures must be 0 or more"),
    ],
)
def test_bad_options_are_rejected_naming_the_flag(options, message):
    with pytest.raises(TuneTLError, match=message):
        run_search(load_space(), options)


def test_an_object_store_output_that_cannot_be_written_fails_before_any_data_is_loaded(tmp_path):
    from s3_server import LocalS3

    server = LocalS3()
    try:
        options = SearchOptions(output=server.uri("no-such-bucket/results"), name="s")
        with pytest.raises(TuneTLError, match=r"--output s3://no-such-bucket/results: cannot write there .*Bucket"):
            run_search(load_space(), options)
    finally:
        server.stop()
