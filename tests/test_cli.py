"""The console script's dispatcher."""

import subprocess
import sys

from algm_cli import cli


def test_help_lists_usage(capsys):
    assert cli.main(["--help"]) == 0
    assert "usage: algm <command>" in capsys.readouterr().out


def test_unknown_command_is_a_clear_error(capsys):
    assert cli.main(["no-such-command"]) == 2
    assert "unknown command 'no-such-command'" in capsys.readouterr().err


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "algm_cli.cli", "--help"], capture_output=True,
                         text=True, check=True)
    assert "Commands:" in out.stdout
