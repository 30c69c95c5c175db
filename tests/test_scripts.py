"""The GPU and benchmark scripts run end to end on the CPU at tiny sizes (dry runs)."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_throughput_dry_run(tmp_path):
    out = tmp_path / "gpu.csv"
    subprocess.run([sys.executable, "scripts/gpu_throughput.py", "--dry-run", "--backbones",
                    "vit_t", "--root", str(tmp_path / "synthetic"), "--out", str(out)],
                   cwd=ROOT, check=True, capture_output=True, timeout=600)
    table = pd.read_csv(out)
    assert set(table.method) == {"baseline", "algm"} and set(table.precision) == {"fp32", "bf16"}
    assert (table.ims > 0).all() and (table.device == "cpu").all()


@pytest.mark.slow
def test_compile_buckets_dry_run_bounds_the_graphs(tmp_path):
    out = tmp_path / "compile.csv"
    subprocess.run([sys.executable, "scripts/compile_buckets.py", "--dry-run", "--clap", "0.0",
                    "--root", str(tmp_path / "synthetic"), "--out", str(out)],
                   cwd=ROOT, check=True, capture_output=True, timeout=600)
    table = pd.read_csv(out).set_index("mode")
    assert list(table.index) == ["eager", "compiled", "compiled_bucket32"]
    assert table.loc["eager", "graphs"] == 0
    # the second pass over the same images compiles nothing new
    assert (table.graphs == table.graphs_after_second_pass).all()
    # with one bucket for every post-merge count, the compiled block needs at most 2 shapes
    # (full length before merging is never bucketed; one padded length after)
    assert table.loc["compiled_bucket32", "graphs"] <= table.loc["compiled", "graphs"]
    assert (table.ims > 0).all()


@pytest.mark.slow
def test_gpu_campaign_dry_run(tmp_path):
    out = tmp_path / "campaign.csv"
    subprocess.run([sys.executable, "scripts/gpu_campaign.py", "--dry-run", "--out", str(out)],
                   cwd=ROOT, check=True, capture_output=True, timeout=600)
    table = pd.read_csv(out)
    assert list(table.group.unique()) == ["paper", "mixed_fp32", "mixed_bf16", "fast"]
    assert set(table.method) == {"baseline", "algm"} and (table.device == "cpu").all()
    ragged = table[table.batching == "ragged"]
    assert len(ragged) == 2 and (ragged.packed_attention == "loop").all()
    assert (table.ims > 0).all() and (table.rounds == 2).all()
    # the references of each group have ratio 1 in every round
    refs = table[table.setting == table.vs]
    assert (refs.ratio == 1).all() and (refs.ratio_min == 1).all()


@pytest.mark.slow
def test_learned_compare_times_the_trained_runs_interleaved(tmp_path):
    from algm_cli.data.synthetic import SyntheticSpec, generate
    from algm_cli.engine.run import run

    from .engine.test_run_cli import cfg_for

    generate(tmp_path / "synthetic", SyntheticSpec(train=4, val=2))
    for merge in ("none", "paumer"):
        run(cfg_for(tmp_path, f"merge={merge}"))
    out = tmp_path / "bench"
    subprocess.run([sys.executable, "scripts/learned_compare.py", "--methods", "none", "paumer",
                    "--rounds", "2", "--include-smoke", "--runs-dir", str(tmp_path / "results"),
                    "--out", str(out), f"dataset.root={tmp_path / 'synthetic'}", "smoke=true",
                    f"work_dir={tmp_path / 'work'}"],
                   cwd=ROOT, check=True, capture_output=True, timeout=600)
    table = pd.read_csv(out / "learned_synthetic_vit_t.csv").set_index("method")
    assert list(table.index) == ["none", "paumer"] and (table.rounds == 2).all()
    assert table.loc["none", "speedup"] == 1 and (table.ims > 0).all()
    assert table.loc["paumer", "gflops"] > 0
