"""Data-parallel workers (gloo on CPU): each trains on its slice of a batch, the gradients are averaged,
so two workers take the step one worker takes on the whole batch."""

import atexit
import copy
import os

import numpy as np
import pytest
import torch
from torch import nn

from tune_tl.data.types import Split
from tune_tl.training.distributed import Shard, WorkerFailed, run_workers
from tune_tl.training.loop import FitConfig, fit


def test_each_worker_gets_its_own_slice_of_every_global_batch_and_together_they_cover_it():
    batches = [np.arange(10), np.arange(10, 17), np.arange(17, 20)]  # the last is too small for 2 × 2 images
    parts = [Shard(rank, 2).local(batches) for rank in range(2)]
    assert [len(p) for p in parts] == [2, 2]
    for i, whole in enumerate(batches[:2]):
        assert sorted(np.concatenate([parts[0][i], parts[1][i]]).tolist()) == whole.tolist()
    assert not set(parts[0][0]) & set(parts[1][0])


def _split() -> Split:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 40)
    images = rng.integers(0, 255, (40, 3, 8, 8)).astype(np.uint8)
    return Split(images[:16], labels[:16], images[16:], labels[16:])


def _model() -> nn.Module:
    # No BatchNorm or dropout: their batch statistics would differ between a whole batch and its halves.
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def _config(**kw) -> FitConfig:
    # One epoch of 16 training images in one batch of 16: exactly one optimizer step.
    return FitConfig(**{"epochs": 1, "batch_size": 16, "optimizer": "sgd", "lr": 0.5, "momentum": None, "weight_decay": 0.0,
                        "mean": (0.5,) * 3, "std": (0.5,) * 3, "seed": 1, **kw})


def one_step_worker(link, job):
    """A worker of the test: one ``fit`` step on its half of the batch; worker 0 sends back the weights."""
    torch.set_num_threads(1)
    model = _model()
    cfg = _config(shard=Shard(link.rank, link.world_size), device=link.device, epochs=(job or {}).get("epochs", 1))
    history = fit(model, _split(), cfg, resume=(job or {}).get("resume"))
    if link.rank == 0:
        state = {k: v.cpu() for k, v in model.state_dict().items()}
        link.send("result", {"state": state, "train_loss": history[-1].train_loss})


def failing_worker(link, job):
    if link.rank == 1:
        raise ValueError("worker 1 broke")
    torch.distributed.barrier()  # would wait for worker 1 forever; the trial must not


def worker_aborted_after_its_work(link, job):
    """Worker 1 does its share, then its process aborts on the way out, as gloo's teardown once did (exit -6)."""
    if link.rank == 1:
        atexit.register(os.abort)
    one_step_worker(link, job)


def worker_aborted_in_its_work(link, job):
    if link.rank == 1:
        os.abort()
    torch.distributed.barrier()


def _run(use_gpus: bool = False, job: dict | None = None) -> dict:
    got = {}
    run_workers(2, one_step_worker, job, lambda kind, payload: got.update(payload), use_gpus=use_gpus)
    return got


@pytest.mark.slow
def test_two_workers_take_the_step_one_worker_takes_on_the_concatenated_batch():
    model = _model()
    one = fit(model, _split(), _config())
    two = _run()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(two["state"][name], value, rtol=1e-5, atol=1e-6)
    assert two["train_loss"] == pytest.approx(one[-1].train_loss, rel=1e-5)

    # Without the all-reduce, worker 0 would step on its half (images 0-7) alone and end elsewhere.
    alone = _model()
    sliced = Split(_split().train_x[:8], _split().train_y[:8], _split().val_x, _split().val_y)
    fit(alone, sliced, _config(batch_size=8))
    assert any(not torch.allclose(alone.state_dict()[n], v, atol=1e-6) for n, v in model.state_dict().items())


@pytest.mark.slow
def test_two_workers_resume_a_one_worker_checkpoint_and_end_where_one_worker_would():
    # As a retried trial does: epoch 1 ran (here on one worker), epoch 2 runs on two from the saved state.
    states = []
    fit(_model(), _split(), _config(epochs=2), on_state=lambda m, state: states.append(copy.deepcopy(state)))
    whole = _model()
    fit(whole, _split(), _config(epochs=2))
    two = _run(job={"epochs": 2, "resume": states[0]})
    for name, value in whole.state_dict().items():
        torch.testing.assert_close(two["state"][name], value, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_worker_that_raises_fails_the_run_with_its_error_and_no_worker_is_left_waiting():
    with pytest.raises(WorkerFailed, match="worker 1: ValueError: worker 1 broke"):
        run_workers(2, failing_worker, None, lambda kind, payload: None)


@pytest.mark.slow
def test_a_worker_that_dies_after_its_work_is_done_does_not_fail_the_run_but_one_that_dies_in_it_does():
    got = {}
    run_workers(2, worker_aborted_after_its_work, None, lambda kind, payload: got.update(payload))
    assert set(got) == {"state", "train_loss"}
    with pytest.raises(WorkerFailed, match="worker 1 exited with code -6"):
        run_workers(2, worker_aborted_in_its_work, None, lambda kind, payload: None)


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL workers need two CUDA GPUs")
def test_two_nccl_workers_on_two_gpus_take_the_one_gpu_step_up_to_mixed_precision():
    model = _model()
    fit(model, _split(), _config(device="cuda"))
    two = _run(use_gpus=True)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(two["state"][name], value.cpu(), rtol=1e-2, atol=5e-3)  # bf16/fp16 autocast
