"""``python -m tune_tl.bench gpu``: its measuring code runs (here on the CPU), and without CUDA it says so."""

import pytest
import torch

from tune_tl.bench import gpu


@pytest.mark.parametrize("name, weights", gpu.MODELS)
def test_the_fine_tune_throughput_step_trains_both_benchmark_models(name, weights):
    # The same code the GPU run times, on the CPU at a toy size: it must build, train and count.
    assert gpu.images_per_second(name, weights, resolution=32, batch_size=2, steps=1, warmup=0, device="cpu") > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_the_gpu_benchmark_prints_one_line_and_returns(capsys):
    gpu.main([])
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["python -m tune_tl.bench gpu: no CUDA GPU on this machine; nothing measured"]
