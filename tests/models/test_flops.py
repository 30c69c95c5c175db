"""Baseline GFLOPs of Segmenter against the ALGM paper's tables (fvcore, +-2%)."""

import pytest
import torch

from algm_cli.engine.flops import count_gflops
from algm_cli.models.schedule import algm_schedule
from algm_cli.models.segmenter import Segmenter

# (backbone, crop, classes, decoder blocks, paper GFLOPs, source)
PAPER = [
    ("vit_t", 512, 150, 2, 12.8, "Tab. 1 ADE20K"),
    ("vit_s", 512, 150, 2, 38.6, "Tab. 1 ADE20K"),
    ("vit_b", 512, 150, 2, 130, "Tab. 1 ADE20K"),
    ("vit_l", 640, 150, 2, 672, "Tab. 1 ADE20K"),
    ("vit_s", 768, 19, 2, 116, "Tab. 2b Cityscapes"),
    ("vit_l", 768, 19, 1, 1005, "Tab. 2b Cityscapes (1-block mask decoder, see Segmenter doc)"),
    ("vit_s", 480, 59, 2, 32.1, "Tab. 2c Pascal-Context"),
    ("vit_l", 480, 59, 2, 343, "Tab. 2c Pascal-Context"),
    ("vit_s", 512, 171, 2, 39, "Tab. 2a COCO-Stuff-10K"),
    ("vit_b", 512, 171, 2, 130, "Tab. 2a COCO-Stuff-10K"),
    ("vit_l", 512, 171, 2, 401, "Tab. 2a COCO-Stuff-10K"),
]


def gflops(backbone, crop, classes, layers=2, schedule=None):
    kw = {} if schedule is None else {"schedule": schedule}
    model = Segmenter(backbone, classes, "mask", crop, decoder_layers=layers, **kw)
    return count_gflops(model, torch.randn(1, 3, crop, crop))


@pytest.mark.parametrize(
    "backbone, crop, classes, layers, paper, source",
    [pytest.param(*row, marks=pytest.mark.slow if row[0] in ("vit_b", "vit_l") else ())
     for row in PAPER],
)
def test_baseline_gflops_match_paper(backbone, crop, classes, layers, paper, source):
    assert gflops(backbone, crop, classes, layers) == pytest.approx(paper, rel=0.02), source


@pytest.mark.slow
def test_vit_l_cityscapes_with_two_decoder_blocks_is_4_percent_above_paper():
    # documents the one mismatch: Segmenter's default 2-block decoder gives 1045 GFLOPs
    assert gflops("vit_l", 768, 19, 2) == pytest.approx(1045.2, rel=0.002)


def test_merging_cuts_counted_flops():
    torch.manual_seed(0)
    base = gflops("vit_t", 256, 10)
    forced = gflops("vit_t", 256, 10, schedule=algm_schedule(-1.0, -1.0))
    assert forced < 0.45 * base  # CLAP keeps 1/4 of the tokens from layer 1 on
