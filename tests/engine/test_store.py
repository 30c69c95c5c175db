"""The results store writes files with the umask's mode (not mkstemp's 0600)."""

import os
import stat

import pytest

from algm_cli.engine import store


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_rows_get_the_umask_mode(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        path = store.write_row(tmp_path, {"run_id": "abc", "miou": 1.0})
        text = tmp_path / "calibration" / "x.json"
        store.write_atomic(text, "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert stat.S_IMODE(text.stat().st_mode) == mode
    assert os.umask(old) == old  # the umask is left as it was
