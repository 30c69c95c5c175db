"""Resume equals an uninterrupted run; a corrupt checkpoint falls back; parallel jobs share work."""

import multiprocessing
import threading
import time

import pytest
import torch
from torch import nn

from algm_cli.data.synthetic import SyntheticSpec, generate
from algm_cli.engine import store
from algm_cli.engine.train import previous, train
from algm_cli.models.base import SegmentationModel


class Tiny(SegmentationModel):
    """A 1x1-conv segmenter with dropout: its training draws from the global torch RNG."""

    num_classes = 3

    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.5)
        self.conv = nn.Conv2d(3, 3, 1)

    def forward_with_stats(self, images):
        return self.conv(self.drop(images)), {}


def batches(start, stop_at=None):
    """Batches that depend on the iteration only; raise at `stop_at` (a killed job)."""
    it = start
    while True:
        if it == stop_at:
            raise KeyboardInterrupt("killed")
        g = torch.Generator().manual_seed(it)
        yield torch.randn(2, 3, 4, 4, generator=g), torch.randint(3, (2, 4, 4), generator=g)
        it += 1


def fit(path, iterations=6, stop_at=None, seed=0):
    torch.manual_seed(seed)
    model = Tiny()
    train(model, lambda start: batches(start, stop_at), iterations=iterations, lr=0.1,
          checkpoint=path, checkpoint_every=2, min_lr=0.0)
    return model.state_dict()


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_resumed_run_equals_the_uninterrupted_one(tmp_path, capsys):
    whole = fit(tmp_path / "whole.pt")
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "cut.pt", stop_at=3)  # killed after the checkpoint of iteration 2
    resumed = fit(tmp_path / "cut.pt", seed=123)  # a new process: another RNG state
    assert "resuming from iteration 2 of 6" in capsys.readouterr().out
    assert same(whole, resumed)


def test_corrupt_checkpoint_is_moved_aside_and_the_previous_one_used(tmp_path, capsys):
    whole = fit(tmp_path / "whole.pt")
    path = tmp_path / "cut.pt"
    with pytest.raises(KeyboardInterrupt):
        fit(path, stop_at=5)  # checkpoints of iterations 2 (kept as .prev) and 4
    assert previous(path).is_file()
    path.write_bytes(path.read_bytes()[:100])  # truncated
    resumed = fit(path, seed=7)
    out = capsys.readouterr()
    assert f"checkpoint {path} is unreadable" in out.err and f"moved to {path}.corrupt" in out.err
    assert f"resuming from iteration 2 of 6 ({path}.prev)" in out.out
    assert (tmp_path / "cut.pt.corrupt").is_file() and same(whole, resumed)


def test_unreadable_checkpoint_without_a_previous_one_restarts(tmp_path, capsys):
    whole = fit(tmp_path / "whole.pt")
    path = tmp_path / "cut.pt"
    path.write_bytes(b"")
    assert same(whole, fit(path))
    assert f"checkpoint {path} is unreadable" in capsys.readouterr().err


def test_a_second_job_waits_for_the_lock_holder(tmp_path, capsys):
    events = []

    def second():
        with store.exclusive(tmp_path / "model.pt", "training this model"):
            events.append("second")

    with store.exclusive(tmp_path / "model.pt", "training this model"):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.3)
        events.append("first done")
    thread.join(timeout=10)
    assert events == ["first done", "second"]
    assert "waiting for another job training this model" in capsys.readouterr().out


def _generate(root):
    generate(root, SyntheticSpec(train=6, val=2))


def test_concurrent_first_runs_generate_the_synthetic_data_once(tmp_path):
    ctx = multiprocessing.get_context("fork")
    jobs = [ctx.Process(target=_generate, args=(tmp_path / "data",)) for _ in range(3)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=120)
    assert [job.exitcode for job in jobs] == [0, 0, 0]
    images = list((tmp_path / "data" / "ADEChallengeData2016" / "images").rglob("*.png"))
    assert len(images) == 8
