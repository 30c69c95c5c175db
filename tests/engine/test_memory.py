"""Training memory tracker and meter: exact byte counts on known allocations."""

import torch

from algm_cli.engine.memory import MIB, TensorMemoryTracker, TrainMeter, module_tensors


def test_tracker_counts_live_storages_and_their_peak():
    a = torch.zeros(1024, 256)  # 1 MiB, alive before tracking
    tracker = TensorMemoryTracker([a])
    with tracker:
        b = a + 1  # +1 MiB
        view = b[:10]  # a view: no new storage
        del b, view  # freed
        c = a * 2  # +1 MiB, reusing nothing counted twice
        d = torch.cat([a, c])  # +2 MiB
    assert tracker.peak_bytes == 4 * MIB
    assert tracker.live_bytes == 4 * MIB
    del c, d


def test_module_tensors_counts_parameters_gradients_and_optimizer_state():
    model = torch.nn.Linear(16, 8)  # 136 parameters
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 16)).sum().backward()
    opt.step()
    tensors = module_tensors(model, opt)
    floats = sum(t.numel() for t in tensors if t.is_floating_point() and t.dim() > 0)
    assert floats == 136 * 4  # parameters, gradients, exp_avg, exp_avg_sq


def test_meter_times_the_untracked_iterations_and_reports_the_tracked_peak():
    model = torch.nn.Linear(64, 64)
    meter = TrainMeter(torch.device("cpu"), total=4)
    for it in range(4):
        x = torch.randn(8, 64)
        with meter.iteration(it, 8, model, x):
            model(x).sum().backward()
    result = meter.result()
    assert result["train_mem_method"] == "tensor_storage_peak"
    assert result["train_peak_mem_mb"] * MIB >= sum(p.numel() * 4 for p in model.parameters())
    assert result["train_ims"] > 0 and meter.timed_images == 16  # iterations 2 and 3
    assert TrainMeter(torch.device("cpu"), total=0).result()["train_ims"] is None
