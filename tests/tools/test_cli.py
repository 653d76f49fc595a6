"""The umbrella command: every sub-command listed, a broken sub-command module fails loudly."""
from __future__ import annotations

import pytest

from nnunet_gsd import cli


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for name in ("demo", "convert", "preview", "evaluate-raters", "last-k", "search-tau", "plans-variant", "overlay",
                 "boundary-offset"):
        assert name in out


def test_a_subcommand_that_fails_to_import_is_not_hidden(monkeypatch):
    monkeypatch.setattr(cli, "SUBCOMMANDS", [*cli.SUBCOMMANDS, "nnunet_gsd.tools.no_such_tool"])
    with pytest.raises(ModuleNotFoundError, match="no_such_tool"):
        cli.build_parser()


@pytest.mark.parametrize("command, option", [("demo", "-device"), ("search-tau", "-d"), ("plans-variant", "-p"),
                                             ("last-k", "-np"), ("overlay", "-djfile")])
def test_nnunet_style_options(command, option, capsys):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    assert f" {option} " in capsys.readouterr().out
