"""The receiver's setup, without a network: pynetdicom is an extra, loaded only when a receiver starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dicomframe.errors import MissingExtraError
from dicomframe.keys import ProjectKey

KEY = ProjectKey.from_bytes(bytes(range(32)))


def test_importing_dicomframe_and_the_receiver_module_does_not_load_pynetdicom() -> None:
    code = (
        "import sys, dicomframe, dicomframe.cli, dicomframe.gateway, dicomframe.gateway.scp\n"
        "print('pynetdicom' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"


def test_a_receiver_without_pynetdicom_says_which_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dicomframe.gateway.scp import Receiver

    monkeypatch.setitem(sys.modules, "pynetdicom", None)  # import pynetdicom now fails
    receiver = Receiver(tmp_path / "out", key=KEY, vault=tmp_path / "vault", port=0, spool=tmp_path / "spool")
    with pytest.raises(MissingExtraError, match=r"pip install 'dicomframe\[net\]'") as exc:
        receiver.start()
    assert exc.value.exit_code == 2
    assert not (tmp_path / "spool").exists()  # nothing was set up


@pytest.mark.parametrize("title", ["", "A" * 17, "BACK\\SLASH"])
def test_an_ae_title_that_is_not_one_is_refused(tmp_path: Path, title: str) -> None:
    from dicomframe.errors import UserInputError
    from dicomframe.gateway.scp import Receiver

    with pytest.raises(UserInputError, match="AE title of 1 to 16 characters"):
        Receiver(tmp_path / "out", key=KEY, vault=tmp_path / "vault", ae_title=title)


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [("max_associations", 0, "--max-associations must be at least 1"),
     ("request_timeout", 0, "--request-timeout must be more than 0 seconds")],
)  # fmt: skip
def test_association_limits_that_are_none_are_refused(tmp_path: Path, option: str, value: int, says: str) -> None:
    from dicomframe.errors import UserInputError
    from dicomframe.gateway.scp import Receiver

    with pytest.raises(UserInputError, match=says):
        Receiver(tmp_path / "out", key=KEY, vault=tmp_path / "vault", **{option: value})


def test_the_cli_defaults_of_the_association_limits_are_the_receivers() -> None:
    import inspect

    from dicomframe import cli
    from dicomframe.gateway import scp

    params = inspect.signature(cli.receive).parameters
    assert params["max_associations"].default == scp.DEFAULT_MAX_ASSOCIATIONS
    assert params["request_timeout"].default == scp.DEFAULT_REQUEST_TIMEOUT
