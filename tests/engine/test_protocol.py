"""protocol=paper|quick, window batching, pretrained=PATH, the offline error, calibration guard."""

import pytest
import timm
import torch
from hydra import compose, initialize_config_module

from algm_cli.engine.evaluate import sliding_window
from algm_cli.engine.protocol import check_calibration_base, eval_windows, protocol_columns
from algm_cli.engine.setup import ConfigError
from algm_cli.models.pretrained import weights_spec
from algm_cli.models.vit import ViTEncoder


def cfg(*overrides):
    with initialize_config_module("algm_cli.conf", version_base="1.3"):
        return compose("run", list(overrides))


def test_paper_is_the_real_datasets_default_and_quick_the_synthetic_one():
    ade = cfg("dataset=ade20k")
    assert ade.protocol == "paper" and ade.model.pretrained is True
    assert ade.merge.clap_threshold == "released" and ade.eval.calibration_images is None
    assert eval_windows(ade) == (512, 480, 4)
    cols = protocol_columns(ade, {"calibration_images": None})
    assert cols["eval_stride"] == 480 and cols["window_batch"] == 4
    assert cols["calibration_images"] == "all" and cols["flops_convention"] == "fvcore"
    syn = cfg()
    assert syn.protocol == "quick" and syn.model.pretrained is False
    assert eval_windows(syn) == (128, 96, 1)
    assert cfg("dataset=ade20k", "protocol=quick").model.pretrained is False


def test_window_rules_per_dataset_and_model():
    assert eval_windows(cfg("dataset=ade20k", "backbone=vit_l")) == (640, 608, 4)
    assert eval_windows(cfg("dataset=ade20k", "eval.windows=training")) == (512, 512, 1)
    assert eval_windows(cfg("dataset=ade20k", "backbone=vit_l", "eval.windows=training")) == (640, 640, 1)
    assert eval_windows(cfg("dataset=pascal_context", "eval.windows=training")) == (480, 320, 1)
    assert eval_windows(cfg("dataset=cityscapes")) == (768, 512, 4)
    assert eval_windows(cfg("dataset=ade20k", "model=setr", "backbone=vit_l")) == (512, 341, 1)
    assert eval_windows(cfg("dataset=ade20k", "eval.window_batch=2")) == (512, 480, 2)


def test_windows_batched_equal_windows_alone_for_a_batch_independent_model():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    calls = []

    def forward(x):
        calls.append(x.shape[0])
        return conv(x), {"kept": 1.0}

    image = torch.randn(1, 3, 40, 70)
    with torch.no_grad():
        one, _ = sliding_window(forward, image, 4, 32, 16, window_batch=1)
        n = len(calls)
        four, stats = sliding_window(forward, image, 4, 32, 16, window_batch=4)
    assert n == 2 * 4 and calls[n:] == [4, 4] and len(stats) == 2  # rows 0, 8; columns 0, 16, 32, 38
    torch.testing.assert_close(one, four)


def test_pretrained_path_loads_a_timm_state_dict(tmp_path):
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_384", num_classes=3)
    path = tmp_path / "vit_t.pth"
    torch.save({"model": vit.state_dict()}, path)
    enc = ViTEncoder("vit_t", 64, pretrained=str(path))
    torch.testing.assert_close(enc.blocks[3].mlp.fc1.weight, vit.blocks[3].mlp.fc1.weight)
    torch.testing.assert_close(enc.cls_token, vit.cls_token)
    grid = vit.pos_embed[:, 1:].reshape(1, 24, 24, -1).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(4, 4), mode="bilinear", align_corners=False)
    torch.testing.assert_close(enc.pos_embed[:, 1:], expected.flatten(2).transpose(1, 2))
    bad = tmp_path / "bad.pth"
    torch.save({"blocks.0.norm1.weight": torch.ones(3)}, bad)
    with pytest.raises(ValueError, match="does not fit the backbone: missing keys"):
        ViTEncoder("vit_t", 64, pretrained=str(bad))


def test_pretrained_values_and_offline_error():
    assert weights_spec("true") is True and weights_spec(False) is False
    with pytest.raises(ValueError, match="expected true, false or a path"):
        weights_spec("weights.txt")
    with pytest.raises(ValueError) as err:  # HF_HUB_OFFLINE=1 and no cache on test machines
        ViTEncoder("vit_t", 64, pretrained=True)
    message = str(err.value)
    assert "timm/vit_tiny_patch16_384.augreg_in21k_ft_in1k" in message
    assert "model.pretrained=PATH" in message and "\n" not in message


def test_paper_calibration_refuses_random_weights():
    paper = cfg("dataset=ade20k", "model.pretrained=false")
    with pytest.raises(ConfigError, match="calibrate.allow_untrained=true"):
        check_calibration_base(paper, "init:x", None)
    check_calibration_base(cfg("dataset=ade20k", "model.pretrained=false",
                               "calibrate.allow_untrained=true"), "init:x", None)
    check_calibration_base(cfg("dataset=ade20k"), "init:x", None)  # pretrained: fine
    check_calibration_base(cfg(), "init:x", None)  # quick: as before


def test_paper_calibration_names_a_baseline_still_in_training(tmp_path):
    path = tmp_path / "base.pt"
    torch.save({"model": {}, "iteration": 500}, path)
    with pytest.raises(ConfigError, match="iteration 500 of 160000"):
        check_calibration_base(cfg("dataset=ade20k"), "trained:k", path)
