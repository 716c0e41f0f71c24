"""The bad-input table: every mistake a careless or hostile user can make is one line and exit 2.

Each case builds its inputs under ``tmp_path``, runs ``tune_tl.cli.main`` in-process and checks: exit
status 2, exactly one line on stderr (``tune-tl: error: ...``) that names the key, flag, file or
folder, no traceback, and nothing written (the tree under ``tmp_path`` is the same before and after).
Only the two resource cases need Ray (they fail right after it connects); the rest fail before it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from faults import Driver
from spaces import tiny_space

from tests.data.images import write_class_tree
from tune_tl.cli import main

# Text, not a dict: the cases below edit it as text (duplicate keys, YAML 1.1 strings, ...).
TINY = tiny_space(budget={"samples": 1}, params={"freeze_blocks": "all"})


def snapshot(root: Path) -> dict[str, int]:
    """Every path under ``root`` (symlinks not followed) with its size: 'nothing written' compares two of these."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(folder) / name
            out[str(p.relative_to(root))] = p.lstat().st_size if not p.is_dir() else -1
    return out


def search(tmp: Path, space_text: str | None = None, *flags: str, suffix: str = ".yaml") -> list[str]:
    """``search SPACE --output tmp/out FLAGS`` with ``space_text`` (default: the tiny digits space)."""
    space = tmp / f"space{suffix}"
    space.write_text(TINY if space_text is None else space_text)
    return ["search", str(space), "--output", str(tmp / "out"), *flags]


def yaml_case(text: str):
    return lambda tmp: search(tmp, text)


def param_case(line: str):
    """The tiny space with one more (or a replaced) ``params`` line."""
    return lambda tmp: search(tmp, TINY + f"  {line}\n")


def py_case(body: str):
    return lambda tmp: search(tmp, body, suffix=".py")


def flags_case(*flags: str):
    return lambda tmp: search(tmp, None, *flags)


def data_case(build):
    """``--data FOLDER`` where ``build(folder)`` makes the (bad) image folder."""
    def make(tmp: Path) -> list[str]:
        folder = tmp / "photos"
        folder.mkdir()
        build(folder)
        return search(tmp, None, "--data", str(folder))
    return make


# -------------------------------------------------------------------------------- data folders


def one_class(folder):
    write_class_tree(folder, classes=("a",))


def empty_class(folder):
    write_class_tree(folder, classes=("a", "b"))
    (folder / "c").mkdir()


def val_without_train(folder):
    write_class_tree(folder / "val", classes=("a", "b"))


def class_mismatch(folder):
    write_class_tree(folder / "train", classes=("a", "b"))
    write_class_tree(folder / "val", classes=("a", "c"))


def corrupt_image(folder):
    write_class_tree(folder, classes=("a", "b"))
    data = (folder / "a" / "0.png").read_bytes()
    (folder / "a" / "0.png").write_bytes(data[: len(data) // 2])


def empty_file(folder):
    write_class_tree(folder, classes=("a", "b"))
    (folder / "b" / "0.png").write_bytes(b"")


def text_file(folder):
    write_class_tree(folder, classes=("a", "b"))
    (folder / "a" / "notes.txt").write_text("not an image\n")


def folder_symlink_loop(folder):
    write_class_tree(folder, classes=("a", "b"))
    os.symlink("..", folder / "a" / "again")  # a/again -> photos: walks photos/a/again/a/again/...


def file_symlink_loop(folder):
    write_class_tree(folder, classes=("a", "b"))
    os.symlink("self.png", folder / "b" / "self.png")


def dangling_symlink(folder):
    write_class_tree(folder, classes=("a", "b"))
    os.symlink("/nonexistent/x.png", folder / "a" / "gone.png")


def too_few_to_split(folder):
    write_class_tree(folder, classes=("a", "b"), per_class=1)


def cifar_not_a_pickle(folder):
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(b"this is not a pickle")


def missing_data(tmp):
    return search(tmp, None, "--data", str(tmp / "nope"))


def data_is_a_file(tmp):
    (tmp / "photos.zip").write_bytes(b"PK")
    return search(tmp, None, "--data", str(tmp / "photos.zip"))


# -------------------------------------------------------------------------------- outputs and names


def output_is_a_file(tmp):
    (tmp / "results").write_text("a file")
    return search(tmp, None)[:2] + ["--output", str(tmp / "results")]


def output_under_a_file(tmp):
    (tmp / "results").write_text("a file")
    return search(tmp, None)[:2] + ["--output", str(tmp / "results" / "deeper")]


def output_unwritable(tmp):
    return search(tmp, None)[:2] + ["--output", "/proc/tune_tl_cannot_write_here"]


def output_bad_uri(tmp):
    return search(tmp, None)[:2] + ["--output", "nosuchscheme://bucket/prefix"]


def output_already_a_search(tmp):
    (tmp / "out" / "s" / "trials").mkdir(parents=True)
    return search(tmp, None, "--name", "s")


# -------------------------------------------------------------------------------- resume


def search_folder(tmp: Path, space_file: Path, text: str, **meta) -> Path:
    import hashlib

    root = tmp / "out" / "s"
    root.mkdir(parents=True)
    (root / "tuner.pkl").write_bytes(b"")
    base = {"space_file": str(space_file), "space_path": str(space_file), "space_text": text,
            "space_sha256": hashlib.sha256(text.encode()).hexdigest(), "options": {}, "seed": 0, "root": str(root),
            "data": {"source": "digits"}, "backbone": {"name": "efficientnet_lite0"},
            "budget": {"samples": 2, "max_epochs": 1, "grace_period": 1, "reduction_factor": 2.0}}
    (root / "search.json").write_text(json.dumps({**base, **meta}))
    return root


PY_OK = ('SETTINGS = {"resolutions": [32]}\n'
         'def space(trial):\n    trial.suggest_float("lr", 1e-3, 1e-2, log=True)\n    return {"resolution": 32}\n')


def resume_py_changed(tmp):
    space = tmp / "space.py"
    space.write_text(PY_OK)
    root = search_folder(tmp, space, PY_OK)
    space.write_text(PY_OK + "import os  # planted\n")
    return ["resume", str(root), "--space", str(space)]


def resume_py_gone(tmp):
    root = search_folder(tmp, tmp / "gone.py", PY_OK)
    return ["resume", str(root), "--space", str(tmp / "gone.py")]


def resume_py_without_space(tmp):
    space = tmp / "space.py"
    space.write_text(PY_OK)
    return ["resume", str(search_folder(tmp, space, PY_OK))]


def resume_fewer_samples(tmp):
    space = tmp / "space.yaml"
    root = search_folder(tmp, space, TINY)
    return ["resume", str(root), "--samples", "1"]


def resume_moved(tmp):
    root = search_folder(tmp, tmp / "space.yaml", TINY, root="/elsewhere/s")
    return ["resume", str(root)]


def resume_not_a_search(tmp):
    (tmp / "out").mkdir()
    return ["resume", str(tmp / "out")]


# -------------------------------------------------------------------------------- the table

CASES = [
    # ---- YAML space files: values the search would otherwise fail on, or silently misuse
    ("head_dropout_1", param_case("head: mlp\n  head_dropout: 1.0"), "params.head_dropout: must be in [0, 1)"),
    ("head_dropout_range_above_1", param_case("head: mlp\n  head_dropout: {low: 0.5, high: 1.5}"), "params.head_dropout.high"),
    ("range_step_0", param_case("lr: {low: 0.001, high: 0.1, step: 0}"), "params.lr.step: must be positive"),
    ("range_step_negative", param_case("head_hidden: {low: 16, high: 64, step: -16}"), "params.head_hidden.step"),
    ("range_step_wider_than_range", param_case("head_hidden: {low: 16, high: 32, step: 64}"), "params.head_hidden.step"),
    ("int_range_fractional_step", param_case("head_hidden: {low: 16, high: 64, step: 0.5}"), "params.head_hidden.step: expected int"),
    ("step_with_log", param_case("lr: {low: 0.001, high: 0.1, step: 0.01, log: true}"), "params.lr: 'step' and 'log'"),
    ("batch_size_1", yaml_case(TINY.replace("batch_size: 128", "batch_size: 1")), "params.batch_size: must be in [2,"),
    ("batch_size_choice_1", yaml_case(TINY.replace("batch_size: 128", "batch_size: [1, 64]")), "params.batch_size"),
    ("huge_resolution", yaml_case(TINY.replace("resolution: 32", "resolution: 100000")), "params.resolution: must be in [32, 1024]"),
    ("tiny_resolution", yaml_case(TINY.replace("resolution: 32", "resolution: 8")), "params.resolution"),
    ("duplicate_top_key", yaml_case(TINY + "seed: 5\n"), "key 'seed' appears twice"),
    ("duplicate_param_key", yaml_case(TINY + "  resolution: 64\n"), "key 'resolution' appears twice"),
    ("duplicate_flow_key", yaml_case(TINY.replace("{source: digits,", "{source: digits, source: cifar10,")), "key 'source' appears twice"),
    ("negative_seed", yaml_case(TINY.replace("seed: 0", "seed: -1")), ": seed: must be between 0 and"),
    ("seed_too_large", yaml_case(TINY.replace("seed: 0", "seed: 4294967296")), ": seed: must be between 0 and"),
    ("seed_not_int", yaml_case(TINY.replace("seed: 0", "seed: 1.5")), "seed: expected int"),
    ("unknown_top_key", yaml_case(TINY + "sed: 1\n"), "unknown key 'sed'"),
    ("unknown_param", param_case("learning_rate: 0.01"), "unknown key 'params.learning_rate'"),
    ("lr_zero", param_case("lr: {low: 0, high: 0.1}"), "params.lr.low: must be positive"),
    ("lr_nan", param_case("lr: .nan"), "params.lr: nan is not a finite number"),
    ("lr_inf", param_case("lr: .inf"), "params.lr: inf is not a finite number"),
    ("lr_yaml11_string", param_case("lr: 1e-4"), "params.lr: expected float, got '1e-4'"),
    ("lr_low_above_high", param_case("lr: {low: 0.1, high: 0.01}"), "params.lr: low (0.1) is greater than high"),
    ("momentum_1", param_case("optimizer: sgd\n  momentum: 1.0"), "params.momentum: must be in [0, 1)"),
    ("layer_decay_0", param_case("layer_decay: 0"), "params.layer_decay: must be in (0, 1]"),
    ("weight_decay_negative", param_case("weight_decay: -0.1"), "params.weight_decay: must be 0 or more"),
    ("head_hidden_0", param_case("head: mlp\n  head_hidden: 0"), "params.head_hidden: must be in [1,"),
    ("aug_rotate_360", param_case("aug_rotate: 360"), "params.aug_rotate: must be in [0, 180]"),
    ("aug_crop_scale_0", param_case("aug_crop_scale: 0"), "params.aug_crop_scale: must be in (0, 1]"),
    ("freeze_blocks_negative", yaml_case(TINY.replace("freeze_blocks: all", "freeze_blocks: -1")), "params.freeze_blocks"),
    ("freeze_blocks_beyond_backbone", yaml_case(TINY.replace("freeze_blocks: all", "freeze_blocks: 99")),
     "params.freeze_blocks: 99 is outside"),
    ("optimizer_unknown", param_case("optimizer: rmsprop"), "params.optimizer: 'rmsprop' is not one of"),
    ("empty_choices", param_case("head: []"), "params.head: an empty list of choices"),
    ("samples_0", yaml_case(TINY.replace("samples: 1", "samples: 0")), "budget.samples must be at least 1"),
    ("max_epochs_negative", yaml_case(TINY.replace("max_epochs: 1", "max_epochs: -1")), "budget.max_epochs must be at least 1"),
    ("grace_above_max", yaml_case(TINY.replace("grace_period: 1", "grace_period: 3")), "budget.grace_period (3) exceeds"),
    ("reduction_factor_inf", yaml_case(TINY.replace("reduction_factor: 2", "reduction_factor: .inf")), "budget.reduction_factor"),
    ("val_fraction_0", yaml_case(TINY.replace("val_fraction: 0.2", "val_fraction: 0")), "data.val_fraction must be between 0 and 1"),
    ("source_unknown", yaml_case(TINY.replace("source: digits", "source: mnist")), "data.source: 'mnist' is not one of"),
    ("memory_budget_negative", yaml_case(TINY.replace("val_fraction: 0.2", "val_fraction: 0.2, memory_budget_mb: -5")),
     "data.memory_budget_mb must be positive"),
    ("backbone_unknown", yaml_case(TINY.replace("efficientnet_lite0", "resnet9000")), "resnet9000"),
    ("weights_file_missing", yaml_case(TINY.replace("weights: imagenet", "weights: /nope/model.pt")), "/nope/model.pt"),
    ("top_level_list", yaml_case("- just\n- a list\n"), "expected a mapping at the top level"),
    ("yaml_syntax_error", yaml_case("params: [\n"), "not valid YAML"),
    ("not_utf8", lambda tmp: (tmp / "space.yaml").write_bytes(b"seed: \xff\xfe\n")
     and ["search", str(tmp / "space.yaml"), "--output", str(tmp / "out")], "is not UTF-8 text"),
    ("space_is_a_folder", lambda tmp: ["search", str(tmp), "--output", str(tmp / "out")], "is not a file"),
    ("space_missing", lambda tmp: ["search", str(tmp / "nope.yaml"), "--output", str(tmp / "out")], "nope.yaml does not exist"),
    # ---- Python space files: the user's code fails or answers wrongly
    ("py_space_raises", py_case("def space(trial):\n    return 1 / 0\n"), "space(trial) raised ZeroDivisionError"),
    ("py_space_returns_list", py_case("def space(trial):\n    return [1, 2]\n"), "space(trial) must return a dict"),
    ("py_space_returns_int", py_case("def space(trial):\n    return 3\n"), "got int"),
    ("py_no_space_function", py_case("SETTINGS = {}\n"), "must define a function space(trial)"),
    ("py_syntax_error", py_case("def space(trial)\n    pass\n"), "failed to import: SyntaxError"),
    ("py_import_raises", py_case("import nonexistent_module_xyz\n"), "failed to import: ModuleNotFoundError"),
    ("py_exits_at_import", py_case("import sys\nsys.exit(0)\n"), "failed to import: SystemExit"),
    ("py_settings_not_a_dict", py_case("SETTINGS = [1]\ndef space(trial):\n    pass\n"), "SETTINGS must be a dict"),
    ("py_unknown_parameter", py_case("def space(trial):\n    trial.suggest_float('learning_rate', 0.001, 0.1)\n"), "unknown parameter"),
    ("py_head_dropout_1", py_case("def space(trial):\n    return {'head': 'mlp', 'head_dropout': 1.0, 'resolution': 64}\n"),
     "head_dropout"),
    ("py_undeclared_resolution", py_case("def space(trial):\n    trial.suggest_categorical('resolution', [32, 96])\n"),
     "not in SETTINGS['resolutions']"),
    ("py_space_takes_no_argument", py_case("def space():\n    return {}\n"), "space(trial) raised TypeError"),
    # ---- data folders (--data)
    ("data_missing", missing_data, "nope does not exist"),
    ("data_is_a_file", data_is_a_file, "photos.zip is not a folder"),
    ("data_empty_folder", data_case(lambda f: None), "no class folders"),
    ("data_one_class", data_case(one_class), "found only 'a'"),
    ("data_empty_class", data_case(empty_class), "class folder"),
    ("data_val_without_train", data_case(val_without_train), "has a val/ folder but no train/ folder"),
    ("data_class_mismatch", data_case(class_mismatch), "class folder"),
    ("data_corrupt_image", data_case(corrupt_image), "0.png"),
    ("data_empty_file", data_case(empty_file), "is empty (0 bytes)"),
    ("data_text_file", data_case(text_file), "notes.txt"),
    ("data_folder_symlink_loop", data_case(folder_symlink_loop), "symlink loop"),
    ("data_file_symlink_loop", data_case(file_symlink_loop), "self.png"),
    ("data_dangling_symlink", data_case(dangling_symlink), "gone.png"),
    ("data_too_few_to_split", data_case(too_few_to_split), "data.val_fraction: cannot split"),
    ("data_cifar_not_a_pickle", data_case(cifar_not_a_pickle), "data_batch_1"),
    # ---- flags
    ("samples_flag_0", flags_case("--samples", "0"), "budget.samples must be at least 1"),
    ("samples_flag_text", flags_case("--samples", "abc"), "--samples: invalid int value: 'abc'"),
    ("max_epochs_flag_0", flags_case("--max-epochs", "0"), "budget.max_epochs must be at least 1"),
    ("grace_flag_above_max", flags_case("--grace-period", "5"), "budget.grace_period (5) exceeds"),
    ("reduction_factor_flag_1", flags_case("--reduction-factor", "1"), "budget.reduction_factor must be greater than 1"),
    ("reduction_factor_flag_nan", flags_case("--reduction-factor", "nan"), "budget.reduction_factor"),
    ("seed_flag_negative", flags_case("--seed", "-1"), "--seed: must be between 0 and"),
    ("cpus_nan", flags_case("--cpus-per-trial", "nan"), "--cpus-per-trial must be a finite number"),
    ("cpus_inf", flags_case("--cpus-per-trial", "inf"), "--cpus-per-trial must be a finite number"),
    ("cpus_0", flags_case("--cpus-per-trial", "0"), "--cpus-per-trial must be positive"),
    ("gpus_negative", flags_case("--gpus-per-trial", "-1"), "--gpus-per-trial"),
    ("gpus_1_5", flags_case("--gpus-per-trial", "1.5"), "--gpus-per-trial must be a fraction"),
    ("gpus_nan", flags_case("--gpus-per-trial", "nan"), "--gpus-per-trial must be a finite number"),
    ("concurrency_0", flags_case("--concurrency", "0"), "--concurrency must be at least 1"),
    ("max_failures_negative", flags_case("--max-failures", "-1"), "--max-failures must be 0 or more"),
    ("scheduler_unknown", flags_case("--scheduler", "hyperband"), "--scheduler: invalid choice"),
    ("unknown_flag", flags_case("--samplez", "3"), "unrecognized arguments: --samplez"),
    ("name_300_chars", flags_case("--name", "n" * 300), "--name is 300 bytes long"),
    ("name_with_slash", flags_case("--name", "a/b"), "--name must be a plain folder name"),
    ("name_hidden", flags_case("--name", ".x"), "--name must be a plain folder name"),
    ("name_empty", flags_case("--name", ""), "--name must be a plain folder name"),
    ("name_control_char", flags_case("--name", "a\tb"), "--name must be a plain folder name"),
    ("no_command", lambda tmp: [], "the following arguments are required: command"),
    # ---- outputs
    ("output_is_a_file", output_is_a_file, "--output"),
    ("output_under_a_file", output_under_a_file, "--output"),
    ("output_unwritable", output_unwritable, "--output"),
    ("output_bad_uri", output_bad_uri, "--output 'nosuchscheme://bucket/prefix'"),
    ("output_already_holds_a_search", output_already_a_search, "already holds search results"),
    # ---- resume, validate and the other commands
    ("resume_py_space_changed", resume_py_changed, "its SHA-256 differs from the space"),
    ("resume_py_space_gone", resume_py_gone, "gone.py: no such file"),
    ("resume_py_space_not_named", resume_py_without_space, "pass that file with --space FILE"),
    ("resume_fewer_samples", resume_fewer_samples, "--samples 1 is fewer than"),
    ("resume_moved_folder", resume_moved, "was moved from /elsewhere/s"),
    ("resume_not_a_search", resume_not_a_search, "is not a tune_tl search folder"),
    ("validate_missing", lambda tmp: ["validate", str(tmp / "nope.yaml")], "nope.yaml does not exist"),
    ("validate_py_raises", lambda tmp: ["validate", search(tmp, "def space(trial):\n    raise RuntimeError('boom')\n", suffix=".py")[1]],
     "RuntimeError: boom"),
    ("report_not_a_search", lambda tmp: ["report", str(tmp / "nope")], "is not a search results folder"),
    ("retrain_not_a_search", lambda tmp: ["retrain", str(tmp / "nope")], "nope"),
    ("predict_no_model", lambda tmp: ["predict", str(tmp / "nope"), "x.png"], "expected a model folder"),
]


def run_case(build, expected: str, tmp_path: Path, capsys) -> str:
    work = tmp_path / "case"
    work.mkdir()
    argv = build(work)
    capsys.readouterr()
    before, before_output = snapshot(tmp_path), snapshot(work / "out")
    code = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("tune-tl: error: "), captured.err
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    assert expected in lines[0], lines[0]
    assert snapshot(work / "out") == before_output, "a refused command changed the --output folder"
    assert snapshot(tmp_path) == before, "a refused command wrote something"
    return lines[0]


@pytest.mark.parametrize("build,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_input_is_one_line_exit_2_and_writes_nothing(build, expected, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_case(build, expected, tmp_path, capsys)


RESOURCE_CASES = [
    ("gpus_beyond_the_machine", ("--gpus-per-trial", "2"), "--gpus-per-trial 2 needs 2 GPUs on one node, but the largest Ray node has 0"),
    ("cpus_beyond_the_machine", ("--cpus-per-trial", "64"),
     "--cpus-per-trial 64 needs 64 CPUs on one node, but the largest Ray node has 2"),
]


@pytest.mark.slow
@pytest.mark.parametrize("flags,expected", [c[1:] for c in RESOURCE_CASES], ids=[c[0] for c in RESOURCE_CASES])
def test_resources_the_cluster_lacks_are_refused_right_after_ray_connects_not_left_pending(ray_local, flags, expected, tmp_path, capsys):
    run_case(flags_case(*flags), expected, tmp_path, capsys)


@pytest.mark.slow
def test_a_search_refused_after_its_own_ray_started_leaves_the_output_folder_as_it_was(tmp_path):
    """The real process: it starts Ray, whose log lines must not create ``<output>/<name>/logs`` before the search
    exists (in-process, the cases above join the session's running Ray, which logs nothing)."""
    out = tmp_path / "out"
    (out / "earlier").mkdir(parents=True)
    (out / "earlier" / "search.json").write_text("{}")
    before = snapshot(out)
    space = search(tmp_path, None)[1]
    driver = Driver(["search", space, "--output", str(out), "--name", "g", "--gpus-per-trial", "2"], tmp_path / "search.log")
    assert driver.wait(timeout=300) == 2, driver.tail()
    assert driver.tail().strip().splitlines()[-1].startswith("tune-tl: error: --gpus-per-trial 2 needs 2 GPUs"), driver.tail()
    assert snapshot(out) == before, "the refused search left something in its --output folder"


@pytest.mark.parametrize("build", [flags_case(), lambda tmp: ["resume", str(search_folder(tmp, tmp / "space.yaml", TINY))]],
                         ids=["search", "resume"])
def test_a_bad_frozen_dtype_in_the_environment_is_refused_before_the_data_and_ray(build, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TUNE_TL_FROZEN_DTYPE", "float16")
    run_case(build, "TUNE_TL_FROZEN_DTYPE='float16': use float32 or bfloat16", tmp_path, capsys)


def test_the_table_has_at_least_60_cases():
    assert len(CASES) + len(RESOURCE_CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.slow
@pytest.mark.parametrize("args", [["validate", "nope.yaml"], ["search", "--samples", "0"], ["search", "--name", "n" * 300]])
def test_the_installed_command_prints_exactly_one_line_on_stderr(args, tmp_path):
    """The real process, not the in-process ``main``: no warnings or log lines around the error."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-m", "tune_tl.cli", *args, "--output", str(tmp_path / "out")] if args[0] == "search"
                          else [sys.executable, "-m", "tune_tl.cli", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("tune-tl: error: "), done.stderr
    assert not (tmp_path / "out").exists()
