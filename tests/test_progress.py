"""The progress view and where Ray's output goes, without running Ray: the callback is fed like Tune feeds it."""

import logging
import pickle
import warnings
from dataclasses import dataclass, field

from rich.console import Console

from tune_tl.search.progress import SearchProgress
from tune_tl.search.ray_logs import ray_output
from tune_tl.store.search_run import trial_folder_name
from tune_tl.store.storage import Location


@dataclass
class FakeTrial:
    trial_id: str
    config: dict = field(default_factory=dict)
    status: str = "RUNNING"
    error_file: str | None = None


def run_trial(progress, trial, accs, diverged_at=None):
    progress.on_trial_start(0, [trial], trial)
    for epoch, acc in enumerate(accs, start=1):
        progress.on_trial_result(0, [trial], trial, {"epoch": epoch, "val_acc": acc, "diverged": epoch == diverged_at})


def plain_progress(tmp_path, samples=4, max_epochs=3, **kwargs):
    progress = SearchProgress(Location.parse(tmp_path / "s"), samples, max_epochs, live=False, **kwargs)
    progress.setup(total_num_samples=samples)
    return progress


def test_off_a_terminal_each_finished_trial_is_one_plain_line_with_its_status_and_best_accuracy(tmp_path, capsys):
    progress = plain_progress(tmp_path)
    a = FakeTrial("aaaa1111", {"lr": 0.01, "head": "linear", "resolution": 32})
    b = FakeTrial("bbbb2222", {"lr": 0.001, "head": "mlp", "resolution": 32})
    c = FakeTrial("cccc3333", {"lr": 3.0, "head": "mlp", "resolution": 32})
    run_trial(progress, a, [0.5, 0.7, 0.9])
    run_trial(progress, b, [0.4])
    run_trial(progress, c, [0.1, float("nan")], diverged_at=2)
    for trial in (a, b, c):
        progress.on_trial_complete(0, [], trial)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("[1/4] trial aaaa1111 completed after 3/3 epoch(s): val_acc 0.9000 (epoch 3) - best so far;")
    assert lines[1].startswith("[2/4] trial bbbb2222 pruned after 1/3 epoch(s): val_acc 0.4000 (epoch 1);")
    assert lines[2].startswith("[3/4] trial cccc3333 diverged after 2/3 epoch(s)")
    assert "lr=0.001" in lines[1] and "head=mlp" in lines[1] and "resolution" not in lines[1], "only what varies is shown"


def test_a_trial_that_raised_is_reported_with_the_last_line_of_its_error(tmp_path, capsys):
    progress = plain_progress(tmp_path)
    (tmp_path / "error.txt").write_text("Traceback (most recent call last):\n  ...\nValueError: bad head\n")
    trial = FakeTrial("eeee5555", {"lr": 0.1}, error_file=str(tmp_path / "error.txt"))
    run_trial(progress, trial, [0.3])
    progress.on_trial_error(0, [], trial)
    assert "trial eeee5555 error after 1/3 epoch(s): val_acc 0.3000 (epoch 1); ValueError: bad head" in capsys.readouterr().out
    assert progress._leader() is None, "a failed trial is never the best"



def test_the_live_view_shows_counts_best_config_time_and_running_trials(tmp_path):
    progress = plain_progress(tmp_path, samples=10)
    done = FakeTrial("aaaa1111", {"lr": 0.01, "freeze_policy": "full"})
    running = FakeTrial("bbbb2222", {"lr": 0.02, "freeze_policy": "prefix"})
    run_trial(progress, done, [0.8, 0.95, 0.9])
    done.status = "TERMINATED"
    progress.on_trial_complete(0, [], done)
    run_trial(progress, running, [0.6])
    progress.on_step_end(0, [done, running])
    console = Console(record=True, width=200)
    console.print(progress._render())
    text = console.export_text()
    assert "1/10 trials, 1 running" in text
    assert "1 completed, 0 pruned, 0 diverged" in text
    assert "best: val_acc 0.9500, trial aaaa1111 epoch 2: lr=0.01, freeze_policy=full" in text
    assert "left" in text and "epochs/s" in text
    assert "running: bbbb2222 epoch 1/3" in text


def test_remaining_time_comes_from_a_time_budget_when_the_search_has_one(tmp_path):
    progress = plain_progress(tmp_path, time_budget=3600)
    assert progress._remaining(600, 0) == "50m00s left of the time budget"
    assert plain_progress(tmp_path)._remaining(600, 2) == "~10m00s left"  # 2 of 4 trials took 10 minutes


def test_the_callback_pickles_without_its_console_and_starts_fresh(tmp_path):
    progress = plain_progress(tmp_path)
    run_trial(progress, FakeTrial("aaaa1111", {"lr": 0.1}), [0.5])
    copy = pickle.loads(pickle.dumps(progress))
    assert copy._best is None and copy.samples == 4 and copy.root == progress.root


def test_ray_and_optuna_log_lines_go_to_the_search_folder_and_the_handlers_come_back(tmp_path):
    ray_logger = logging.getLogger("ray")
    before = list(ray_logger.handlers)
    (tmp_path / "search.json").write_text("{}")
    with ray_output(Location.parse(tmp_path), verbose=0) as file:
        logging.getLogger("ray.tune.example").warning("snapshot taken")
        logging.getLogger("optuna").info("study created")  # optuna's own level decides; warning always passes
        logging.getLogger("optuna").warning("sampler note")
    assert file == tmp_path / "logs" / "ray.log"
    text = file.read_text()
    assert "snapshot taken" in text and "sampler note" in text
    assert ray_logger.handlers == before


def test_ray_log_lines_wait_in_memory_until_the_search_exists_so_a_refused_search_writes_nothing(tmp_path):
    with ray_output(Location.parse(tmp_path), verbose=0) as file:
        logging.getLogger("ray").warning("started a local Ray")  # the checks still run: no search folder yet
    assert not (tmp_path / "logs").exists()
    with ray_output(Location.parse(tmp_path), verbose=0) as file:
        logging.getLogger("ray").warning("before the search exists")
        (tmp_path / "search.json").write_text("{}")  # SearchRun.create
        logging.getLogger("ray").warning("after")
    assert file.read_text().count("before the search exists") == 1 and "after" in file.read_text()


def test_verbose_leaves_ray_output_alone(tmp_path):
    with ray_output(Location.parse(tmp_path), verbose=1) as file:
        pass
    assert file is None and not (tmp_path / "logs").exists()


def test_rays_define_by_run_timing_warning_goes_to_the_log_and_other_warnings_still_show(tmp_path):
    (tmp_path / "search.json").write_text("{}")
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with ray_output(Location.parse(tmp_path), verbose=0) as file:
            warnings.showwarning("Define-by-run function passed in the `space` argument took 3.4 seconds to run.",
                                 UserWarning, "optuna_search.py", 472)
            warnings.warn("ours", UserWarning, stacklevel=2)
    assert "Define-by-run function" in file.read_text()
    assert [str(w.message) for w in shown] == ["ours"]


def test_trials_are_named_and_filed_by_their_id():
    assert trial_folder_name(FakeTrial("4c1e2a1b")) == "4c1e2a1b"


def test_a_trial_out_of_gpu_memory_is_reported_with_the_trainables_message(tmp_path, capsys):
    progress = plain_progress(tmp_path)
    trial = FakeTrial("oooo7777", {"lr": 0.1})
    run_trial(progress, trial, [0.6])
    progress.on_trial_result(0, [], trial, {"val_acc": 0.6, "trial_status": "oom", "error": "OutOfMemoryError: CUDA out of memory"})
    progress.on_trial_complete(0, [], trial)
    assert ("trial oooo7777 oom after 1/3 epoch(s): val_acc 0.6000 (epoch 1); "
            "OutOfMemoryError: CUDA out of memory") in capsys.readouterr().out
