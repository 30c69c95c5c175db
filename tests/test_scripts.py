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
