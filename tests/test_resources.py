"""A trial the Ray cluster can never hold fails at once (exit 2, one line) instead of waiting PENDING."""

import pytest
from spaces import write_tiny_space

from tune_tl.cli import main
from tune_tl.errors import TuneTLError
from tune_tl.search.resources import check_resources, largest_node, trial_slots
from tune_tl.search.run import SearchOptions


def test_the_largest_node_is_counted_per_resource_and_dead_nodes_are_not():
    nodes = [
        {"Alive": True, "Resources": {"CPU": 4.0, "GPU": 1.0}},
        {"Alive": True, "Resources": {"CPU": 8.0}},
        {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}},
    ]
    assert largest_node(nodes) == {"CPU": 8.0, "GPU": 1.0}


@pytest.mark.processes  # starts Ray (the session's runtime and its workers): not the fast tier
@pytest.mark.slow
def test_two_gpus_per_trial_on_a_cluster_without_gpus_is_refused_naming_the_flag(ray_local):
    with pytest.raises(TuneTLError, match=r"--gpus-per-trial 2 needs 2 GPUs on one node, but the largest Ray node has 0"):
        check_resources(SearchOptions(gpus_per_trial=2))


@pytest.mark.processes  # starts Ray (the session's runtime and its workers): not the fast tier
@pytest.mark.slow
def test_more_cpus_per_trial_than_any_node_has_is_refused(ray_local):
    cpus = largest_node(ray_local.nodes())["CPU"]
    with pytest.raises(TuneTLError, match="--cpus-per-trial"):
        check_resources(SearchOptions(cpus_per_trial=cpus + 1))
    check_resources(SearchOptions(cpus_per_trial=cpus))  # exactly one node's worth fits


@pytest.mark.processes  # starts Ray (the session's runtime and its workers): not the fast tier
@pytest.mark.slow
def test_trial_slots_counts_the_trials_the_nodes_hold_at_once(ray_local):
    # A search without --concurrency runs at most this many (Ray Tune would otherwise queue trials PENDING, each
    # admitted by the clock of when it was asked for).
    cpus = int(largest_node(ray_local.nodes())["CPU"])
    assert trial_slots(SearchOptions(cpus_per_trial=1)) == cpus
    assert trial_slots(SearchOptions(cpus_per_trial=cpus)) == 1
    assert trial_slots(SearchOptions(cpus_per_trial=0.5)) == 2 * cpus


@pytest.mark.processes  # starts Ray (the session's runtime and its workers): not the fast tier
@pytest.mark.slow
def test_search_with_more_gpus_than_the_cluster_has_exits_2_before_writing_results(ray_local, tmp_path, capsys):
    space = write_tiny_space(tmp_path)
    code = main(["search", str(space), "--gpus-per-trial", "2", "--output", str(tmp_path / "out"), "--name", "gpus"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("tune-tl: error: --gpus-per-trial 2 needs 2 GPUs")
    assert not (tmp_path / "out" / "gpus").exists(), "nothing is written for a search that cannot run"


@pytest.mark.parametrize(
    "options, message",
    [
        (SearchOptions(workers_per_trial=0), "--workers-per-trial must be at least 1"),
        (SearchOptions(gpus_per_trial=2, workers_per_trial=3), "--workers-per-trial must be 2"),
        (SearchOptions(gpus_per_trial=0.5, workers_per_trial=2), "one whole GPU per worker"),
        (SearchOptions(gpus_per_trial=1, workers_per_trial=2), "use --gpus-per-trial 2"),
    ],
)
def test_worker_and_gpu_counts_that_do_not_match_are_rejected_before_ray(options, message):
    with pytest.raises(TuneTLError, match=message):
        options.validate()


def test_gpus_per_trial_above_one_means_one_worker_per_gpu():
    assert SearchOptions(gpus_per_trial=2).workers == 2
    assert SearchOptions(gpus_per_trial=0.5).workers == 1
    assert SearchOptions(workers_per_trial=3).workers == 3
