"""`--help` teaches: every command has it, and its paragraphs are not broken where the source lines were."""

from __future__ import annotations

import pytest

from dicomframe.cli import _reflowed, main

COMMANDS = [
    ["scan"], ["keygen"], ["profile"], ["deidentify"], ["audit"], ["reidentify"], ["plan"], ["receive"], ["serve"], ["version"],
    ["auditlog", "verify"],
]  # fmt: skip


def _help(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main([*args, "--help"])
    assert exc.value.code in (0, None)
    return capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert "Usage: dicomframe " + " ".join(command) in _help(capsys, *command)


def test_a_paragraph_is_wrapped_by_the_terminal_not_by_the_source(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    text = _help(capsys, "deidentify")
    # two source lines of one sentence, shown as one line on a wide terminal
    assert "(names from the new UIDs only) and DST/<batch_id>/manifest.json (last)" in text
    # examples keep their own lines
    assert "\n   dicomframe keygen project.key" in text


def test_reflowed_joins_lines_and_keeps_indented_blocks() -> None:
    doc = """First line
    of a paragraph.

    Examples:

      dicomframe scan a/
      dicomframe scan b/
    """
    assert _reflowed(doc) == "First line of a paragraph.\n\nExamples:\n\n  dicomframe scan a/\n  dicomframe scan b/"


def test_receive_help_shows_how_a_site_sends(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    text = _help(capsys, "receive")
    assert "\n   echoscu -aec DICOMFRAME 127.0.0.1 11112" in text
    assert "storescu -aec DICOMFRAME" in text and "0.0.0.0" in text
