"""SearchRun owns a search folder: its record, tables, study and checkpoints, and no other module spells them."""

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tune_tl.config import load_space
from tune_tl.errors import TuneTLError
from tune_tl.search.run import SearchOptions
from tune_tl.store.search_run import CHECKPOINT_FILE, SearchRun


def test_create_records_the_spec_and_open_gives_it_back_typed(tmp_path):
    spec = load_space()
    run = SearchRun.create(tmp_path / "demo", spec, SearchOptions(name="demo"), {"classes": ["a", "b"]})
    again = SearchRun.open(tmp_path / "demo", require_metadata=True)
    assert again.spec.budget == spec.budget and again.spec.data == spec.data and again.spec.seed == spec.seed
    assert SearchOptions(**again.options).name == "demo"
    assert again.classes == ["a", "b"] and again.name == "demo"
    assert json.loads((tmp_path / "demo" / "search.json").read_text())["root"] == str(run.root)
    assert again.trials().empty and again.epochs().empty
    assert again.study_storage.endswith("demo/optuna.db")


def test_create_refuses_a_folder_that_holds_results(tmp_path):
    (tmp_path / "old" / "trials").mkdir(parents=True)
    with pytest.raises(TuneTLError, match="already holds search results"):
        SearchRun.create(tmp_path / "old", load_space(), SearchOptions())


def test_open_names_what_is_missing(tmp_path):
    with pytest.raises(TuneTLError, match="is not a search results folder"):
        SearchRun.open(tmp_path / "nothing")
    with pytest.raises(TuneTLError, match="search.json is missing"):
        SearchRun.open(tmp_path, require_metadata=True)


def state(epoch: int, accs: list[float]) -> dict:
    history = [{"epoch": e + 1, "val_acc": a} for e, a in enumerate(accs[:epoch])]
    return {"epoch": epoch, "model": {"w": torch.tensor([float(epoch)])}, "history": history}


def test_best_checkpoint_is_the_best_epoch_not_the_latest(tmp_path):
    accs = [0.4, 0.9, 0.6]
    trial = tmp_path / "ab12"  # store.search_run.trial_folder_name
    for index, epoch in ((0, 2), (1, 3)):  # what Ray keeps: the best (epoch 2) and the latest (epoch 3)
        (trial / f"checkpoint_{index:06d}").mkdir(parents=True)
        torch.save(state(epoch, accs), trial / f"checkpoint_{index:06d}" / CHECKPOINT_FILE)
    best = SearchRun(tmp_path).best_checkpoint("ab12")
    assert best["epoch"] == 2 and best["model"]["w"].item() == 2.0
    with pytest.raises(TuneTLError, match="'zz' .* has no weights on disk: .* --keep-checkpoints"):
        SearchRun(tmp_path).best_checkpoint("zz")


def test_exporting_a_trial_whose_weights_retention_deleted_names_the_kept_ones_and_how_to_keep_more(tmp_path):
    (tmp_path / "search.json").write_text(json.dumps({"checkpoints": {"keep": 2, "kept": [{"trial_id": "aa11"}, {"trial_id": "bb22"}]}}))
    (tmp_path / "cc33").mkdir()  # Ray's folder stays; its checkpoint folders are gone
    with pytest.raises(TuneTLError) as raised:
        SearchRun(tmp_path).best_checkpoint("cc33")
    assert "top 2 trials only (--keep-checkpoints 2; kept: aa11, bb22)" in str(raised.value)
    assert f"tune-tl retrain {tmp_path} --trial cc33" in str(raised.value)


def test_pruning_keeps_one_checkpoint_folder_and_an_unreadable_copy_is_not_a_checkpoint(tmp_path):
    accs = [0.4, 0.9, 0.6]
    for index, epoch in ((0, 2), (1, 3)):
        (tmp_path / "ab12" / f"checkpoint_{index:06d}").mkdir(parents=True)
        torch.save(state(epoch, accs), tmp_path / "ab12" / f"checkpoint_{index:06d}" / CHECKPOINT_FILE)
    (tmp_path / "ab12" / "checkpoint_000002").mkdir()
    (tmp_path / "ab12" / "checkpoint_000002" / CHECKPOINT_FILE).write_bytes(b"PK\x03\x04 cut short")  # a copy a kill interrupted
    run = SearchRun(tmp_path)
    assert run.checkpoint_epoch(run.trial_dir("ab12") / "checkpoint_000002") is None
    assert run.checkpoint_epoch(run.trial_dir("ab12") / "checkpoint_000001") == (3, 0.6)
    best = run.best_checkpoint_path("ab12")
    assert best.name == "checkpoint_000000"
    assert run.prune_checkpoints("ab12", keep=best) == ["checkpoint_000001", "checkpoint_000002"]
    assert sorted(p.name for p in (tmp_path / "ab12").iterdir()) == ["checkpoint_000000"]
    assert run.prune_checkpoints("ab12") == ["checkpoint_000000"] and run.checkpoint_paths("ab12") == []


def test_update_metadata_keeps_what_another_writer_added_since_it_was_read(tmp_path):
    run = SearchRun.create(tmp_path / "demo", load_space(), SearchOptions(name="demo"))
    assert run.metadata["name"] == "demo"  # read (and cached) here
    SearchRun(tmp_path / "demo").update_metadata(checkpoints={"keep": 3, "kept": []})  # the retention callback
    run.update_metadata(end_time="now")
    assert json.loads((tmp_path / "demo" / "search.json").read_text())["checkpoints"] == {"keep": 3, "kept": []}


def test_a_checkpoint_kept_only_at_the_latest_epoch_is_not_passed_off_as_the_best(tmp_path):
    trial = tmp_path / "ab12" / "checkpoint_000002"
    trial.mkdir(parents=True)
    torch.save(state(3, [0.4, 0.9, 0.6]), trial / CHECKPOINT_FILE)
    with pytest.raises(TuneTLError, match="best epoch is not on disk"):
        SearchRun(tmp_path).best_checkpoint("ab12")


def test_no_module_but_search_run_spells_the_folder_file_names():
    package = Path(__file__).resolve().parents[1] / "tune_tl"
    names = ('"search.json"', '"optuna.db"', '"tuner.pkl"', '"skipped_images.txt"', '/ "feature_cache"', '/ "trials"', '/ "epochs"',
             '"ray.log"', '/ "logs"', '"scheduler.json"')
    offenders = [f"{path.relative_to(package)}: {name}" for path in package.rglob("*.py") if path.name != "search_run.py"
                 for name in names if name in path.read_text()]
    assert offenders == []


def import_graph() -> dict[str, set[str]]:
    """Module → the tune_tl modules it imports anywhere (top level or inside functions); packages left out."""
    package = Path(__file__).resolve().parents[1] / "tune_tl"
    modules = {".".join(p.relative_to(package.parent).with_suffix("").parts): p for p in package.rglob("*.py") if p.name != "__init__.py"}
    return {name: {d for d in imported_names(path) if d in modules and d != name} for name, path in modules.items()}


def imported_names(path: Path) -> set[str]:
    """Every name a file imports anywhere (top level or inside functions): ``a.b`` and, for ``from a.b import c``, ``a.b.c``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


def test_no_module_imports_itself_back_even_inside_a_function():
    graph = import_graph()

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            for dep in graph[todo.pop()] - seen:
                if dep == goal:
                    return True
                seen.add(dep)
                todo.append(dep)
        return False

    circles = sorted({tuple(sorted((a, b))) for a in graph for b in graph[a] if reaches(b, a)})
    assert circles == []


#: The space's resolver (``SearchSpec.sub_spaces``: block symbols and ``native`` per backbone) and its two wrappers.
RESOLVER = {"sub_spaces", "define_by_run", "check_blocks"}


def calls_by_module(names: set[str]) -> dict[str, set[str]]:
    """Module path (relative to tune_tl/) -> which of ``names`` it calls, as a function or a method."""
    package = Path(__file__).resolve().parents[1] / "tune_tl"
    found = {}
    for path in package.rglob("*.py"):
        called = {node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
                  for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Call)}
        if called & names:
            found[path.relative_to(package).as_posix()] = called & names
    return found


def test_only_the_plan_resolves_the_space():
    assert calls_by_module(RESOLVER) == {"search/plan.py": {"sub_spaces"}, "config/spec.py": {"sub_spaces"}}
    assert set(calls_by_module({"resolve_all", "resolve_native"})) == {"config/spec.py"}, "the resolver's parts, called by it alone"


def test_only_search_run_reads_the_search_record_s_keys():
    package = Path(__file__).resolve().parents[1] / "tune_tl"
    offenders = [f"{path.relative_to(package)}: {reading}" for path in package.rglob("*.py") if path.name != "search_run.py"
                 for reading in (".metadata.get(", ".metadata[") if reading in path.read_text()]
    assert offenders == []


def test_is_this_an_epoch_is_written_once():
    package = Path(__file__).resolve().parents[1] / "tune_tl"
    writers = [path.relative_to(package).as_posix() for path in package.rglob("*.py") if '"trial_status" not in result' in path.read_text()]
    assert writers == ["store/trial_record.py"]


def imported_packages() -> dict[str, set[str]]:
    """Module (relative path) -> every ``tune_tl`` module or package it imports, anywhere in the file."""
    package = Path(__file__).resolve().parents[1] / "tune_tl"
    return {path.relative_to(package).as_posix(): {n for n in imported_names(path) if n.startswith("tune_tl.")}
            for path in package.rglob("*.py")}


@pytest.mark.parametrize("lower, upper", [("search", "analysis"), ("analysis", "search")])
def test_search_and_analysis_never_import_each_other(lower, upper):
    arrows = sorted(f"{module} -> {name}" for module, names in imported_packages().items() if module.startswith(f"{lower}/")
                    for name in names if name == f"tune_tl.{upper}" or name.startswith(f"tune_tl.{upper}."))
    assert arrows == []


def test_trial_workers_and_drivers_start_without_the_libraries_they_may_not_need():
    # Every trial worker imports the trainable; scikit-learn (and the SciPy it brings) cost each start about 1.3 s,
    # and a trial never needs them (the driver splits the data and fits the probes). timm and torchvision (which
    # imports torch._dynamo) cost a worker or a driver about 2 s more; the builds that use them load them, and a
    # search on a registered backbone, or one that skips its probes, never does. One process checks both, in turn.
    code = textwrap.dedent("""
        import sys
        import tune_tl.search.trainable
        print(sorted(m for m in ("sklearn", "scipy", "timm", "torchvision", "torch._dynamo") if m in sys.modules))
        import tune_tl.cli, tune_tl.search.run
        print(sorted(m for m in ("timm", "torchvision", "torch._dynamo") if m in sys.modules))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    worker, driver = done.stdout.split("\n")[:2]
    assert (worker, driver) == ("[]", "[]"), done.stdout + done.stderr
