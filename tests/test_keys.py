"""The project key file: created safely, loaded strictly, never shown."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import pickle
import stat
from pathlib import Path

import pytest

from dicomframe.errors import KeyFileError, UserInputError
from dicomframe.keys import FileKeyProvider, KeyProvider, ProjectKey, generate_key_file, load_key

posix_only = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")

ZERO_KEY = ProjectKey.from_bytes(b"\0" * 32)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _hkdf_sha256(secret: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 written out with hmac only: an independent check of the derivation."""
    prk = hmac.new(b"\0" * 32, secret, hashlib.sha256).digest()  # salt=None → zeros
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def _write_key_text(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def _valid_text(secret: bytes = b"\x01" * 32) -> str:
    key = ProjectKey.from_bytes(secret)
    encoded = base64.urlsafe_b64encode(secret).decode()
    return f"dicomframe-key v1\nkey_id: {key.key_id}\nsecret: {encoded}\n# keep it safe\n"


# ------------------------------------------------------------ generate / load


@posix_only
def test_a_new_key_file_is_private_and_loads_back_to_the_same_key(tmp_path: Path) -> None:
    path = tmp_path / "project.key"
    key = generate_key_file(path)

    assert _mode(path) == 0o600
    loaded = load_key(path)
    assert loaded == key
    assert loaded.key_id == key.key_id
    assert loaded.subkey("uid") == key.subkey("uid")


def test_the_key_file_has_the_documented_text_format(tmp_path: Path) -> None:
    path = tmp_path / "project.key"
    key = generate_key_file(path)
    lines = path.read_text().splitlines()

    assert lines[0] == "dicomframe-key v1"
    assert lines[1] == f"key_id: {key.key_id}"
    assert lines[2].startswith("secret: ")
    assert base64.urlsafe_b64decode(lines[2].removeprefix("secret: ")) == key.secret
    assert lines[3].startswith("#")
    assert "back" in lines[3].lower() and "never share" in lines[3].lower()
    assert len(lines) == 4


def test_two_generated_keys_differ(tmp_path: Path) -> None:
    first = generate_key_file(tmp_path / "a.key")
    second = generate_key_file(tmp_path / "b.key")
    assert first != second
    assert first.key_id != second.key_id


@posix_only
def test_a_key_file_is_private_even_when_the_umask_is_permissive(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        generate_key_file(tmp_path / "project.key")
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "project.key") == 0o600


def test_generating_leaves_no_temporary_file_behind(tmp_path: Path) -> None:
    generate_key_file(tmp_path / "project.key")
    assert [p.name for p in tmp_path.iterdir()] == ["project.key"]


def test_an_existing_key_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "project.key"
    original = generate_key_file(path)
    before = path.read_bytes()

    with pytest.raises(KeyFileError) as excinfo:
        generate_key_file(path)

    message = str(excinfo.value)
    assert str(path) in message
    assert "already exists" in message
    assert "choose another path" in message and "delete" in message
    assert path.read_bytes() == before
    assert load_key(path) == original
    assert [p.name for p in tmp_path.iterdir()] == ["project.key"]


def test_any_existing_file_blocks_key_generation(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a key")
    with pytest.raises(KeyFileError, match="already exists"):
        generate_key_file(path)
    assert path.read_text() == "not a key"


def test_generating_into_a_missing_folder_says_which_folder(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist; create it first") as excinfo:
        generate_key_file(tmp_path / "nowhere" / "project.key")
    assert str(tmp_path / "nowhere") in str(excinfo.value)


# ------------------------------------------------------------- load failures


def test_loading_a_missing_key_file_says_how_to_create_one(tmp_path: Path) -> None:
    path = tmp_path / "absent.key"
    with pytest.raises(KeyFileError) as excinfo:
        load_key(path)
    message = str(excinfo.value)
    assert f"key file {path} does not exist" in message
    assert "dicomframe keygen" in message


@posix_only
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602, 0o660])
def test_a_key_file_readable_or_writable_by_others_is_refused_with_the_chmod_fix(
    tmp_path: Path, mode: int
) -> None:
    path = tmp_path / "project.key"
    generate_key_file(path)
    path.chmod(mode)

    with pytest.raises(KeyFileError) as excinfo:
        load_key(path)

    message = str(excinfo.value)
    assert f"`chmod 600 {path}`" in message
    assert f"mode {mode:04o}" in message

    path.chmod(0o600)
    assert load_key(path).key_id


@posix_only
def test_the_chmod_hint_is_quoted_for_a_path_with_spaces(tmp_path: Path) -> None:
    path = tmp_path / "my keys" / "project.key"
    path.parent.mkdir()
    generate_key_file(path)
    path.chmod(0o644)
    with pytest.raises(KeyFileError) as excinfo:
        load_key(path)
    assert f"`chmod 600 '{path}'`" in str(excinfo.value)


@posix_only
def test_an_owner_read_only_key_file_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "project.key"
    key = generate_key_file(path)
    path.chmod(0o400)
    assert load_key(path) == key


def test_a_folder_is_not_a_key_file(tmp_path: Path) -> None:
    folder = tmp_path / "project.key"
    folder.mkdir(mode=0o700)
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_key(folder)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "first line must be 'dicomframe-key v1'"),
        ("hello\n", "first line must be 'dicomframe-key v1'"),
        ("dicomframe-key v1\nkey_id: 0011223344556677\n", "the 'secret' line is missing"),
        ("dicomframe-key v1\nsecret: AAAA\n", "the 'key_id' line is missing"),
        (
            "dicomframe-key v1\nkey_id: 0011223344556677\nsecret: !!not base64!!\n",
            "not URL-safe base64",
        ),
        (
            "dicomframe-key v1\nkey_id: 0011223344556677\nsecret: AQEB+/8=\n",
            "not URL-safe base64",
        ),
        ("dicomframe-key v1\nkey_id: 00\ncolour: blue\nsecret: AAAA\n", "unexpected line 3"),
        ("dicomframe-key v1\nkey_id: 00\nkey_id: 00\n", "'key_id' appears twice"),
        ("dicomframe-key v1\nkey_id: 00\nsecret: \xe9\n", "it is not ASCII text"),
    ],
)
def test_a_malformed_key_file_is_refused_with_what_is_wrong(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "project.key"
    path.write_bytes(text.encode("latin-1"))
    path.chmod(0o600)
    with pytest.raises(KeyFileError) as excinfo:
        load_key(path)
    message = str(excinfo.value)
    assert expected in message
    assert f"key file {path} is malformed" in message


def test_a_key_file_from_a_newer_version_asks_for_an_upgrade(tmp_path: Path) -> None:
    path = _write_key_text(tmp_path / "project.key", _valid_text().replace(" v1", " v2"))
    with pytest.raises(KeyFileError, match=r"unsupported format version.*upgrade dicomframe"):
        load_key(path)


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_a_secret_of_the_wrong_length_is_refused(tmp_path: Path, length: int) -> None:
    encoded = base64.urlsafe_b64encode(b"\x07" * length).decode()
    text = f"dicomframe-key v1\nkey_id: 0011223344556677\nsecret: {encoded}\n"
    if length == 0:
        text = "dicomframe-key v1\nkey_id: 0011223344556677\nsecret: \n"
    path = _write_key_text(tmp_path / "project.key", text)
    with pytest.raises(KeyFileError) as excinfo:
        load_key(path)
    message = str(excinfo.value)
    if length:
        assert f"holds a secret of {length} bytes" in message
        assert "exactly 32 bytes" in message
    else:
        assert "not URL-safe base64" in message


def test_an_edited_secret_is_caught_by_the_key_id(tmp_path: Path) -> None:
    secret = b"\x01" * 32
    text = _valid_text(secret).replace(
        base64.urlsafe_b64encode(secret).decode(), base64.urlsafe_b64encode(b"\x02" * 32).decode()
    )
    path = _write_key_text(tmp_path / "project.key", text)
    with pytest.raises(KeyFileError) as excinfo:
        load_key(path)
    message = str(excinfo.value)
    assert "key_id does not match its secret" in message
    assert "restore the file from your backup" in message
    assert base64.urlsafe_b64encode(b"\x02" * 32).decode() not in message


def test_a_hand_written_key_file_in_the_format_loads(tmp_path: Path) -> None:
    path = _write_key_text(tmp_path / "project.key", _valid_text())
    assert load_key(path) == ProjectKey.from_bytes(b"\x01" * 32)


def test_error_messages_never_contain_the_secret(tmp_path: Path) -> None:
    path = tmp_path / "project.key"
    key = generate_key_file(path)
    text = path.read_text()
    encoded = text.splitlines()[2].removeprefix("secret: ")
    path.write_text(text + "extra: line\n")
    path.chmod(0o600)
    with pytest.raises(KeyFileError) as excinfo:
        load_key(path)
    assert encoded not in str(excinfo.value)
    assert key.secret.hex() not in str(excinfo.value)


# ----------------------------------------------------------------- the key


def test_repr_shows_the_key_id_and_hides_the_secret() -> None:
    secret = bytes(range(32))
    key = ProjectKey.from_bytes(secret)
    shown = repr(key) + str(key) + f"{key}" + repr([key])

    assert repr(key) == f"ProjectKey(key_id={key.key_id!r})"
    for form in (secret.hex(), base64.urlsafe_b64encode(secret).decode(), repr(secret)):
        assert form not in shown


def test_the_key_id_is_a_public_fingerprint_of_the_secret() -> None:
    secret = bytes(range(32))
    expected = hmac.new(secret, b"dicomframe key id", hashlib.sha256).hexdigest()[:16]
    assert ProjectKey.from_bytes(secret).key_id == expected
    # pinned: a change in the derivation must break loudly
    assert ZERO_KEY.key_id == "7f55db5575132432"


@pytest.mark.parametrize("length", [0, 16, 31, 33])
def test_a_raw_secret_must_be_32_bytes(length: int) -> None:
    with pytest.raises(KeyFileError, match=f"exactly 32 bytes, got {length}"):
        ProjectKey.from_bytes(b"\x01" * length)


def test_a_raw_secret_must_be_bytes() -> None:
    with pytest.raises(KeyFileError, match="must be bytes, not str"):
        ProjectKey("x" * 32)  # type: ignore[arg-type]


def test_subkeys_differ_per_purpose() -> None:
    key = ProjectKey.from_bytes(bytes(range(32)))
    purposes = ["uid", "token", "date-shift", "vault"]
    subkeys = {purpose: key.subkey(purpose) for purpose in purposes}
    assert len(set(subkeys.values())) == len(purposes)
    assert all(len(value) == 32 for value in subkeys.values())
    assert key.secret not in subkeys.values()


def test_subkeys_are_stable_across_calls_and_key_objects() -> None:
    first = ProjectKey.from_bytes(bytes(range(32)))
    second = ProjectKey.from_bytes(bytes(range(32)))
    for purpose in ["uid", "token", "date-shift", "vault"]:
        assert first.subkey(purpose) == first.subkey(purpose) == second.subkey(purpose)


def test_subkeys_are_hkdf_sha256_with_the_documented_info() -> None:
    secret = bytes(range(32))
    key = ProjectKey.from_bytes(secret)
    for purpose in ["uid", "token", "date-shift", "vault"]:
        for length in (16, 32, 64):
            expected = _hkdf_sha256(secret, b"dicomframe/" + purpose.encode(), length)
            assert key.subkey(purpose, length) == expected


@pytest.mark.parametrize(
    ("purpose", "expected"),
    [
        ("uid", "e6d8e10bcdf2c76d8ce85dab350eec74d0e37ab8d705b423431842735e02dcab"),
        ("token", "ed08613bc601882f2f38306bcada21cd425b10ba55fb2ce65bc1d0376db275d8"),
        ("date-shift", "12a7dd4eca9b7c4dbf49177c5b1b4c41e9e0c65ba1b2447638694af330bbdebb"),
        ("vault", "c3462b49fbea36967af9a0acba4a83b56c45f2cf2bdf6843049f0ca09216a139"),
    ],
)
def test_subkeys_of_a_fixed_key_never_change(purpose: str, expected: str) -> None:
    # pinned: every pseudonym and the vault depend on these forever
    assert ZERO_KEY.subkey(purpose).hex() == expected


@pytest.mark.parametrize(
    ("purpose", "length", "expected"),
    [("", 32, "non-empty string"), ("uid", 0, "between 1 and 8160"), ("uid", 8161, "between")],
)
def test_bad_subkey_arguments_are_refused(purpose: str, length: int, expected: str) -> None:
    with pytest.raises(UserInputError, match=expected):
        ZERO_KEY.subkey(purpose, length)


def test_a_key_survives_pickling_for_worker_processes() -> None:
    key = ProjectKey.from_bytes(bytes(range(32)))
    key.subkey("uid")
    clone = pickle.loads(pickle.dumps(key))
    assert clone == key
    assert clone.subkey("token") == key.subkey("token")


def test_a_key_is_immutable() -> None:
    with pytest.raises(AttributeError):
        ZERO_KEY.secret = b"\x01" * 32  # type: ignore[misc]


# ---------------------------------------------------------------- providers


def test_the_file_provider_loads_the_key_file(tmp_path: Path) -> None:
    path = tmp_path / "project.key"
    key = generate_key_file(path)
    provider = FileKeyProvider(path)
    assert isinstance(provider, KeyProvider)
    assert provider.get_key() == key
    assert provider.get_key() is provider.get_key()
    assert key.secret.hex() not in repr(provider)


def test_the_file_provider_reports_a_missing_file_when_asked_for_the_key(tmp_path: Path) -> None:
    provider = FileKeyProvider(tmp_path / "absent.key")
    with pytest.raises(KeyFileError, match="does not exist"):
        provider.get_key()


def test_a_site_can_plug_in_its_own_key_service() -> None:
    class FakeKms:
        def get_key(self) -> ProjectKey:
            return ProjectKey.from_bytes(b"\x05" * 32)

    provider: KeyProvider = FakeKms()
    assert isinstance(provider, KeyProvider)
    assert provider.get_key().key_id == ProjectKey.from_bytes(b"\x05" * 32).key_id


def test_a_key_is_its_own_provider() -> None:
    assert isinstance(ZERO_KEY, KeyProvider)
    assert ZERO_KEY.get_key() is ZERO_KEY
