"""Ragged batching: every image of a mixed batch gets exactly its batch-size-1 result."""

import pytest
import torch

from algm_cli.models.schedule import MergeSchedule, MergeStepSpec, algm_schedule
from algm_cli.models.segmenter import Segmenter


def mixed_images(n=4, size=64):
    """Return images from flat (very mergeable) to noisy (barely mergeable)."""
    g = torch.Generator().manual_seed(0)
    flat = torch.randn(n, 3, 1, 1, generator=g).expand(n, 3, size, size)
    noise = torch.randn(n, 3, size, size, generator=g) * torch.linspace(0, 1, n).view(n, 1, 1, 1)
    return flat + noise


@pytest.mark.parametrize("decoder", ["mask", "linear"])
@pytest.mark.parametrize("metric", ["tokens", "keys"])
def test_ragged_batch_equals_batch_size_one(decoder, metric):
    torch.manual_seed(0)
    schedule = MergeSchedule(algm_schedule(0.3, 0.3, gbm_layers=(3,)).steps, metric=metric)
    model = Segmenter("vit_t", 5, decoder, 64, schedule, batching="ragged").eval()
    images = mixed_images()
    with torch.no_grad():
        batched, stats = model.forward_with_stats(images)
        singles = [model.forward_with_stats(img[None]) for img in images]
    alone = torch.cat([s[0] for s in singles])
    assert torch.allclose(batched, alone, atol=1e-4)
    kept = [s[1]["L3:gbm"] for s in singles]
    assert len(set(kept)) > 1  # the images really merge differently
    assert stats["L3:gbm"] == pytest.approx(sum(kept) / len(kept))


def test_min_batching_differs_from_per_image_counts():
    torch.manual_seed(0)
    model = Segmenter("vit_t", 5, "mask", 64, algm_schedule(0.3, 0.3, gbm_layers=(3,))).eval()
    images = mixed_images()
    with torch.no_grad():
        _, stats = model.forward_with_stats(images)
        kept = [model.forward_with_stats(img[None])[1]["L3:gbm"] for img in images]
    assert stats["L3:gbm"] == pytest.approx(max(kept))  # everyone merges the least mergeable's count


def test_ragged_without_merging_equals_the_batched_baseline():
    torch.manual_seed(0)
    base = Segmenter("vit_t", 5, "mask", 64).eval()
    ragged = Segmenter("vit_t", 5, "mask", 64, batching="ragged").eval()
    ragged.load_state_dict(base.state_dict())
    images = mixed_images()
    with torch.no_grad():
        assert torch.allclose(base(images), ragged(images), atol=1e-5)


@pytest.mark.parametrize(
    "backend,schedule",
    [("nested", MergeSchedule(algm_schedule(0.3, 0.3, gbm_layers=(3,)).steps)),
     ("flex", MergeSchedule(algm_schedule(0.3, 0.3, gbm_layers=(3,)).steps,
                            proportional_attention=True)),
     ("loop", MergeSchedule(algm_schedule(0.3, None, gbm_layers=(3,), gbm_rule="released").steps,
                            proportional_attention=True, placement="after_mlp")),
     ("loop", MergeSchedule((MergeStepSpec(2, "tome", r=5),), proportional_attention=True))],
)
def test_ragged_backends_and_schedules_equal_batch_size_one(backend, schedule):
    torch.manual_seed(0)
    model = Segmenter("vit_t", 5, "mask", 64, schedule, batching="ragged",
                      packed_attention=backend).eval()
    images = mixed_images()
    with torch.no_grad():
        batched, _ = model.forward_with_stats(images)
        alone = torch.cat([model.forward_with_stats(img[None])[0] for img in images])
    assert torch.allclose(batched, alone, atol=1e-4)


def test_unknown_packed_attention_backend_is_rejected():
    with pytest.raises(ValueError, match="packed_attention must be one of"):
        Segmenter("vit_t", 5, "mask", 64, batching="ragged", packed_attention="fast")
