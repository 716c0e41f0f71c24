"""Prepared data reaches Ray workers from the object store zero-copy, and loading needs a path."""

import pytest

from tests.data.images import write_class_tree
from tune_tl.config import DataSpec
from tune_tl.data import load_data
from tune_tl.errors import TuneTLError


@pytest.mark.processes  # starts Ray (the session's runtime and its workers): not the fast tier
@pytest.mark.slow
def test_workers_map_the_prepared_arrays_read_only_instead_of_copying_them(ray_local, tmp_path):
    ray = ray_local
    root = write_class_tree(tmp_path / "tree", per_class=6)
    loaded = load_data(DataSpec(source="imagefolder", path=str(root), val_fraction=0.25), [32], seed=0)
    ref = ray.put(loaded.data)  # what tune.with_parameters does with the TrialContext

    @ray.remote(num_cpus=0.1)
    def look(box):
        split = ray.get(box[0]).splits[32]
        return split.train_x.flags.writeable, split.train_x.flags.owndata, int(split.train_x.sum())

    writeable, owndata, total = ray.get(look.remote([ref]))
    assert not writeable and not owndata, "a view of the shared object-store buffer, not a private copy"
    assert total == int(loaded.data.splits[32].train_x.sum())


def test_an_image_folder_source_without_a_path_says_how_to_give_one():
    with pytest.raises(TuneTLError, match=r"data.path: data.source imagefolder needs the folder's path \(or pass --data PATH\)"):
        load_data(DataSpec(source="imagefolder"), [32], seed=0)


def test_the_data_step_logs_which_path_it_took(tmp_path, caplog):
    root = write_class_tree(tmp_path / "tree", per_class=6)
    caplog.set_level("INFO", logger="tune_tl")
    load_data(DataSpec(source="imagefolder", path=str(root), val_fraction=0.25), [32, 64], seed=0)
    assert "in memory" in caplog.text
    load_data(DataSpec(source="imagefolder", path=str(root), val_fraction=0.25, memory_budget_mb=0.05), [32, 64], seed=0)
    # 18 images × 3 channels × (32² + 64²) bytes = 0.264 MB, compared with the budget
    assert "streaming from files: decoded arrays would need 0.264 MB > data.memory_budget_mb 0.05" in caplog.text
