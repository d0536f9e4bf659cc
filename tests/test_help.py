"""Every `virnucpro-extract` subcommand's --help teaches by example (issue 6), including ones added later."""
from __future__ import annotations

import pytest

from conftest import cli
from virnucpro_extract.cli import main as cli_main


@pytest.mark.parametrize("command", sorted(cli_main.commands))
def test_every_subcommand_help_has_a_runnable_looking_example(command):
    result = cli(command, "--help")
    assert result.exit_code == 0, result.stderr
    example = result.stdout.split("Example:", 1)
    assert len(example) == 2, f"`virnucpro-extract {command} --help` has no example"
    assert f"virnucpro-extract {command} " in example[1]


def test_top_level_help_lists_the_commands_and_an_example():
    result = cli("--help")
    assert result.exit_code == 0 and "Example:" in result.stdout
    for command in cli_main.commands:
        assert command in result.stdout
