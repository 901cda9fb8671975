"""Every `scripts/*.py` command and subcommand prints its help for `--help` and exits 0."""

import subprocess
import sys

import pytest
from conftest import ROOT, script_module

from bundle.cli import run_commands

SCRIPTS = sorted(p.stem for p in (ROOT / "scripts").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_subcommand_prints_help(script, capsys):
    commands = script_module(script).COMMANDS
    names = [[]] + ([[name] for name in commands] if isinstance(commands, dict) else [])
    for argv in names:
        for flag in ("--help", "-h"):
            with pytest.raises(SystemExit) as done:
                run_commands(commands, [*argv, flag], name=f"{script}.py")
            captured = capsys.readouterr()
            text = captured.out + captured.err
            assert done.value.code == 0 and "SYNOPSIS" in text, (script, argv, flag, text[-500:])


def test_help_through_the_command_line_of_a_command_that_takes_keyword_overrides():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "phantom.py"), "make", "--help"], capture_output=True, text=True, timeout=120)
    text = result.stdout + result.stderr
    assert result.returncode == 0 and "phantom.py make" in text and "--output_dir" in text, text[-2000:]
