"""Outside a terminal the progress bars print a line per 30 s at most (quiet CI / SLURM logs)."""

import os

from algm_cli.cli import quiet_progress_in_logs


def test_progress_interval_is_set_outside_a_terminal(monkeypatch, capsys):
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    quiet_progress_in_logs()  # pytest captures stderr: not a terminal
    assert os.environ["TQDM_MININTERVAL"] == "30"
    monkeypatch.setenv("TQDM_MININTERVAL", "5")
    quiet_progress_in_logs()  # a user's own setting wins
    assert os.environ["TQDM_MININTERVAL"] == "5"
