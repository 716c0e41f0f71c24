"""One preprocessing rule for training data and predict, and resolution ranges that prepare every size."""

import numpy as np
import pytest
import torch
from PIL import Image

from tests.data.images import image
from tune_tl.config import load_space
from tune_tl.data.imagefolder import decode
from tune_tl.data.preprocess import Preprocessing, square_arrays, square_uint8
from tune_tl.errors import TuneTLError


def test_a_wide_photo_is_centre_cropped_not_squashed():
    left, right = np.zeros((30, 20, 3), np.uint8), np.full((30, 20, 3), 255, np.uint8)
    wide = Image.fromarray(np.concatenate([left, np.full((30, 20, 3), 128, np.uint8), right], axis=1))  # 60×30
    out = square_uint8(wide, 30)
    assert out.shape == (3, 30, 30) and abs(int(out.mean()) - 128) <= 2, "only the grey middle survives the crop"


def test_training_data_and_predict_see_the_same_pixels(tmp_path):
    file = tmp_path / "x.png"
    image(1, size=(40, 30)).save(file)
    pre = Preprocessing(32, (0.5, 0.4, 0.3), (0.2, 0.2, 0.2))
    (trained,) = decode(str(file), (32,))
    with Image.open(file) as im:
        assert torch.equal(pre.batch([im]), (torch.from_numpy(trained.copy())[None].float()
                                             - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1) * 255)
                           / (torch.tensor([0.2] * 3).view(1, 3, 1, 1) * 255))
    arrays = np.stack([np.asarray(image(0, size=(16, 16))).transpose(2, 0, 1)])
    with Image.open(file):
        assert np.array_equal(square_arrays(arrays, 32)[0], square_uint8(image(0, size=(16, 16)), 32))
    assert Preprocessing.from_dict(pre.to_dict()) == pre


def write(tmp_path, params: str):
    f = tmp_path / "s.yaml"
    f.write_text("params:\n" + params)
    return f


def test_a_resolution_range_with_a_step_prepares_every_size_it_can_sample(tmp_path):
    assert load_space(write(tmp_path, "  resolution: {low: 96, high: 224, step: 32}\n")).resolutions() == [96, 128, 160, 192, 224]
    assert load_space(write(tmp_path, "  resolution: [64, 32]\n")).resolutions() == [32, 64]


def test_a_resolution_range_without_a_usable_grid_is_a_clear_error(tmp_path):
    with pytest.raises(TuneTLError, match=r"params.resolution: a range needs a 'step'"):
        load_space(write(tmp_path, "  resolution: {low: 96, high: 224}\n"))
    with pytest.raises(TuneTLError, match="gives 33 resolutions; at most 16"):
        load_space(write(tmp_path, "  resolution: {low: 96, high: 224, step: 4}\n"))
    assert load_space(write(tmp_path, "  resolution: {low: 96, high: 128, step: 16}\n")).resolutions() == [96, 112, 128]
