"""What a frozen backbone's no-grad passes compute in: bfloat16 where the CPU multiplies it natively, else float32."""

import pytest
import torch

from tune_tl.data.digits import load_digits_images
from tune_tl.data.prepare import prepare
from tune_tl.data.preprocess import Normaliser
from tune_tl.data.types import LabelledImages
from tune_tl.errors import TuneTLError
from tune_tl.models import build_backbone
from tune_tl.training.batches import FROZEN_DTYPE_ENV, frozen_dtype
from tune_tl.training.device import cpu_runs_bfloat16
from tune_tl.training.frozen_features import float32_slowdown


def test_the_installed_torch_still_says_whether_the_cpu_runs_bfloat16():
    # Private probes of torch.cpu; without them frozen passes would quietly stay float32 (half the speed here).
    assert callable(torch.cpu._is_avx512_bf16_supported) and callable(torch.cpu._is_amx_tile_supported)
    assert isinstance(cpu_runs_bfloat16(), bool)


def test_the_cpu_passes_run_in_bfloat16_only_where_it_is_native_and_cuda_keeps_autocast(monkeypatch):
    monkeypatch.delenv(FROZEN_DTYPE_ENV, raising=False)
    assert frozen_dtype(torch.device("cpu")) == (torch.bfloat16 if cpu_runs_bfloat16() else torch.float32)
    assert frozen_dtype(torch.device("cuda")) == torch.float32


@pytest.mark.parametrize("value, dtype", [("float32", torch.float32), ("bfloat16", torch.bfloat16), (" Float32 ", torch.float32)])
def test_the_environment_decides_when_set(monkeypatch, value, dtype):
    monkeypatch.setenv(FROZEN_DTYPE_ENV, value)
    assert frozen_dtype(torch.device("cpu")) == dtype


def test_an_unknown_dtype_in_the_environment_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv(FROZEN_DTYPE_ENV, "float16")
    with pytest.raises(TuneTLError, match="TUNE_TL_FROZEN_DTYPE='float16': use float32 or bfloat16"):
        frozen_dtype(torch.device("cpu"))


def digits_split():
    digits = load_digits_images()
    return prepare(LabelledImages(digits.images[:40], digits.labels[:40], digits.classes), [32], 0.25, 0).splits[32]


def test_where_the_passes_are_float32_they_are_not_timed_against_it(monkeypatch):
    monkeypatch.setenv(FROZEN_DTYPE_ENV, "float32")
    backbone = build_backbone("efficientnet_lite0")
    monkeypatch.setattr(backbone.features, "forward", lambda x: pytest.fail("timed a pass it did not need"))
    assert float32_slowdown(backbone.features, digits_split(), Normaliser(backbone.mean, backbone.std)) == 1.0


def test_in_bfloat16_the_slowdown_is_measured_and_the_backbone_left_as_it_was(monkeypatch):
    monkeypatch.setenv(FROZEN_DTYPE_ENV, "bfloat16")
    backbone = build_backbone("efficientnet_lite0")
    backbone.features.train()
    before = {k: v.clone() for k, v in backbone.features.state_dict().items()}
    factor = float32_slowdown(backbone.features, digits_split(), Normaliser(backbone.mean, backbone.std))
    assert factor >= 1.0 and backbone.features.training
    assert all(torch.equal(v, before[k]) and v.dtype == before[k].dtype for k, v in backbone.features.state_dict().items())
