"""What the platform clients share: state directory, private files, credentials, transport, envelopes."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from companion.cli.platforms import clip, display_width, table
from companion.errors import ConfigError
from companion.platforms import credentials
from companion.platforms.envelopes import unwrap_espai, unwrap_qiniu, unwrap_tuya
from companion.platforms.errors import (
    CredentialMissing,
    PlatformAPIError,
    PlatformAuthError,
    PlatformError,
    PlatformUnavailable,
)
from companion.platforms.fields import ApiModel, RawReply, set_fields, wire
from companion.platforms.mac import is_mac, normalise_mac, parse_mac, same_mac
from companion.platforms.transport import Reply, RetryPolicy, Transport
from companion.service.state_dir import state_dir, state_dir_path, write_private
from tests.peers.platform_http import free_port, isolate_platform_env

# -- state directory and private files -------------------------------------------------------------


def test_state_directory_follows_systemd_then_xdg_then_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path}/sd1:{tmp_path}/sd2")
    assert state_dir_path() == tmp_path / "sd1"
    monkeypatch.delenv("STATE_DIRECTORY")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state_dir_path() == tmp_path / "xdg" / "companion"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert state_dir_path() == tmp_path / "home" / ".local" / "state" / "companion"


def test_state_directory_is_created_0700_and_an_existing_one_keeps_its_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = os.umask(0)
    try:
        monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "a" / "b"))
        created = state_dir()
        assert stat.S_IMODE(created.stat().st_mode) == 0o700
        shared = tmp_path / "shared"
        shared.mkdir(mode=0o750)
        monkeypatch.setenv("STATE_DIRECTORY", str(shared))
        assert stat.S_IMODE(state_dir().stat().st_mode) == 0o750
    finally:
        os.umask(old)


def test_an_unusable_state_directory_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("STATE_DIRECTORY", str(blocker / "sub"))
    with pytest.raises(ConfigError, match="cannot create the state directory"):
        state_dir()
    monkeypatch.setenv("STATE_DIRECTORY", str(blocker))
    with pytest.raises(ConfigError, match="not a directory"):
        state_dir()


def test_private_writes_replace_the_file_atomically_with_mode_0600(tmp_path: Path) -> None:
    target = tmp_path / "secret.json"
    target.write_text("old")
    os.chmod(target, 0o644)
    old_inode = target.stat().st_ino
    old_umask = os.umask(0)
    try:
        write_private(target, b"new")
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.stat().st_ino != old_inode  # a new file was renamed over the old one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.json"]  # no temp file left


def test_a_failed_private_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "secret.json"
    target.write_text("old")

    with pytest.raises(TypeError):
        write_private(target, 42)  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.json"]


# -- credentials -----------------------------------------------------------------------------------


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate_platform_env(monkeypatch, tmp_path)


def test_qiniu_token_comes_from_env_then_stored_login_then_file(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "config" / "companion" / "credentials.toml"
    creds.parent.mkdir(parents=True)
    creds.write_text('[qiniu]\ntoken = "from-file"\n[espai]\nkey = "espai-file"\n')
    os.chmod(creds, 0o600)
    assert credentials.qiniu_token().value == "from-file"
    credentials.save_qiniu_login(credentials.StoredLogin("stored", "login", expires_at=None))
    assert credentials.qiniu_token().value == "stored"
    monkeypatch.setenv("COMPANION_QINIU_TOKEN", "from-env")
    found = credentials.qiniu_token()
    assert found.value == "from-env" and "from-env" not in repr(found)
    assert credentials.espai_key().value == "espai-file"


def test_an_expired_stored_login_falls_through_to_the_file(clean_env: Path, tmp_path: Path) -> None:
    credentials.save_qiniu_login(credentials.StoredLogin("old", "login", expires_at=1000.0))
    with pytest.raises(CredentialMissing, match="expired at"):
        credentials.qiniu_token()
    creds = tmp_path / "c.toml"
    creds.write_text('[qiniu]\ntoken = "api-key"\n')
    os.chmod(creds, 0o600)
    assert credentials.qiniu_token(creds).value == "api-key"


def test_a_corrupt_stored_login_is_ignored(clean_env: Path) -> None:
    clean_env.mkdir(mode=0o700)
    (clean_env / "qiniu-login.json").write_text("{not json")
    assert credentials.load_qiniu_login() is None
    with pytest.raises(CredentialMissing, match="no Qiniu credential"):
        credentials.qiniu_token()


def test_tuya_needs_both_keys_and_names_the_missing_one(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMPANION_TUYA_CLIENT_ID", "cid")
    with pytest.raises(CredentialMissing, match="set COMPANION_TUYA_SECRET ") as caught:
        credentials.tuya_keys()
    assert caught.value.exit_code == 78
    monkeypatch.setenv("COMPANION_TUYA_SECRET", "sec")
    client_id, secret = credentials.tuya_keys()
    assert (client_id.value, secret.value) == ("cid", "sec")


def test_systemd_credentials_are_found_and_trusted(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds_dir = tmp_path / "creds"
    creds_dir.mkdir()
    (creds_dir / "platforms.toml").write_text('[tuya]\nclient_id = "a"\nsecret = "b"\n')
    os.chmod(creds_dir / "platforms.toml", 0o440)  # systemd's own mode; its directory guards it
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds_dir))
    assert [s.value for s in credentials.tuya_keys()] == ["a", "b"]


def test_a_named_credentials_file_must_exist_and_parse(clean_env: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        credentials.espai_key(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[espai\n")
    os.chmod(broken, 0o600)
    with pytest.raises(ConfigError, match="not valid TOML"):
        credentials.espai_key(broken)


# -- transport -------------------------------------------------------------------------------------


async def test_an_unreachable_host_is_retried_then_reported_in_one_line() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    transport = Transport("Qiniu", retry=RetryPolicy(attempts=3, initial_s=0.5, cap_s=4), sleep=sleep)
    port = free_port()
    try:
        with pytest.raises(PlatformUnavailable) as caught:
            await transport.request(
                "POST", f"http://127.0.0.1:{port}/xiaozhi/device/preregister", content=b"{}"
            )
    finally:
        await transport.aclose()
    assert f"cannot reach 127.0.0.1:{port}" in str(caught.value) and "\n" not in str(caught.value)
    assert caught.value.exit_code == 69
    assert len(slept) == 2 and 0.25 <= slept[0] <= 0.5 and 0.5 <= slept[1] <= 1.0  # nothing was sent: safe


async def test_a_bad_url_is_a_platform_error() -> None:
    transport = Transport("Qiniu")
    try:
        with pytest.raises(PlatformError, match="invalid URL"):
            await transport.request("GET", "ftp://example.com/x")
    finally:
        await transport.aclose()


def reply(body: object, status: int = 200, content_type: str = "application/json") -> Reply:
    raw = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
    return Reply("P", "GET /x", status, content_type, raw)


def test_qiniu_envelope_rules() -> None:
    assert unwrap_qiniu(reply({"code": 0, "msg": "success", "data": [1]}))["data"] == [1]
    assert unwrap_qiniu(reply({"code": "0", "data": None}))["data"] is None  # a numeric string is a number
    with pytest.raises(PlatformAuthError, match="未登录"):
        unwrap_qiniu(reply({"code": 401, "msg": "未登录", "data": []}))
    with pytest.raises(PlatformAPIError, match="设备不存在"):
        unwrap_qiniu(reply({"code": 404, "message": "设备不存在"}))  # `message` instead of `msg`
    with pytest.raises(PlatformAPIError, match="Device ID is required") as ota_style:
        unwrap_qiniu(reply({"error": "Device ID is required"}, 400))
    assert ota_style.value.code == 400
    with pytest.raises(PlatformUnavailable, match="HTTP 502"):
        unwrap_qiniu(reply(b"<html>bad gateway</html>", 502, "text/html"))
    with pytest.raises(PlatformError, match="non-JSON reply \\(HTTP 200, text/html\\): <html>"):
        unwrap_qiniu(reply(b"<html>login</html>", 200, "text/html"))
    with pytest.raises(PlatformError, match="without a `code` field"):
        unwrap_qiniu(reply({"data": []}))


def test_espai_and_tuya_envelope_rules() -> None:
    assert unwrap_espai(reply({"success": True, "message": "ok", "data": []}))["data"] == []
    with pytest.raises(PlatformAPIError, match="系统错误:xxx") as espai:
        unwrap_espai(reply({"success": False, "message": "系统错误:xxx", "code": 500}))
    assert espai.value.code == 500
    assert unwrap_tuya(reply({"success": True, "result": True, "t": 1}))["result"] is True
    with pytest.raises(PlatformAPIError, match=r"permission deny.*data center: eu"):
        unwrap_tuya(reply({"success": False, "code": 1106, "msg": "permission deny"}), "data center: eu")
    with pytest.raises(PlatformAPIError, match="not authorised for this API"):
        unwrap_tuya(reply({"success": False, "error_code": "28841105", "error_msg": "no permission"}))


def test_long_multiline_server_messages_become_one_short_line() -> None:
    with pytest.raises(PlatformAPIError) as caught:
        unwrap_qiniu(reply({"code": 500, "msg": "line one\nline two " + "x" * 1000}))
    text = str(caught.value)
    assert "\n" not in text and len(text) < 400 and text.startswith("Qiniu: line one line two")


# -- MAC addresses ---------------------------------------------------------------------------------


@given(st.binary(min_size=6, max_size=6), st.sampled_from([":", "-", ""]), st.booleans())
def test_every_spelling_of_a_mac_normalises_to_one_form(raw: bytes, sep: str, upper: bool) -> None:
    text = sep.join(f"{b:02x}" for b in raw)
    text = text.upper() if upper else text
    canonical = ":".join(f"{b:02x}" for b in raw)
    assert normalise_mac(text) == canonical
    assert normalise_mac(text, upper=True) == canonical.upper()
    assert same_mac(text, canonical.upper())
    assert parse_mac(text) == raw.hex()
    assert is_mac(text)


@pytest.mark.parametrize("bad", ["", "aa:bb:cc", "gg:bb:cc:dd:ee:ff", "aa:bb:cc:dd:ee:ff:00"])
def test_things_that_are_not_macs_are_refused(bad: str) -> None:
    with pytest.raises(PlatformError, match="not a MAC address"):
        parse_mac(bad)
    assert not is_mac(bad)


# -- readable output -------------------------------------------------------------------------------


def test_tables_align_wide_characters_and_clip_long_cells() -> None:
    text = table(["NAME", "N"], [["客厅助手", 1], ["kitchen", None], ["x" * 100, True]], width=20)
    lines = text.splitlines()
    starts = {display_width(line) - display_width(line.split()[-1]) for line in lines[2:]}
    assert starts == {22}  # the second column starts at the same screen column on every row
    assert lines[3].endswith("-") and lines[4].endswith("yes") and "…" in lines[4]
    assert display_width(clip("你好世界", 5)) <= 5
    assert table(["A"], []) == "(none)"


def test_secrets_in_urls_are_masked() -> None:
    from companion.platforms.transport import redact_url

    assert (
        redact_url("https://openapi.tuyacn.com/v1.0/token/abc123def")
        == "https://openapi.tuyacn.com/v1.0/token/***"
    )
    assert (
        redact_url("https://x/xiaozhi/device/bind/agent1/605192")
        == "https://x/xiaozhi/device/bind/agent1/***"
    )
    assert redact_url("http://a/sdk/get_server_info_by_api_key?api_key=K&limit=5") == (
        "http://a/sdk/get_server_info_by_api_key?api_key=***&limit=5"
    )
    assert redact_url("https://x/xiaozhi/agent/list?limit=20") == "https://x/xiaozhi/agent/list?limit=20"


# -- declared reply models -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Part(ApiModel):
    text: str


@dataclass(frozen=True)
class _Thing(RawReply):
    wire_case = "camel"

    thing_id: str = wire(required="no thing id")
    display_name: str | None = None
    count: int | None = None
    ratio: float | None = None
    enabled: bool | None = None
    tags: list[str] = field(default_factory=list)
    parts: list[_Part] = field(default_factory=list)
    extra: dict[str, Any] | None = None
    owner: str | None = wire("ownerId", "owner_id", default=None)


def test_a_declared_reply_reads_what_the_platforms_really_send() -> None:
    data = {
        "thingId": 7,
        "count": "99",
        "ratio": "0.5",
        "enabled": "1",
        "tags": ["a", 3, None, "b"],
        "parts": [{"text": "hi"}, "junk"],
        "extra": "not an object",
        "owner_id": "u1",
        "unknown": True,
    }
    thing = _Thing.from_api(data)
    assert thing == _Thing(
        thing_id="7",
        count=99,
        ratio=0.5,
        enabled=True,
        tags=["a", "b"],
        parts=[_Part("hi"), _Part("")],
        owner="u1",
        raw=data,
    )
    assert thing.display_name is None and thing.extra is None


def test_a_reply_keeps_raw_as_a_keyword_after_its_own_fields_and_out_of_its_repr() -> None:
    thing = _Thing("7", "name", raw={"thingId": "7"})
    assert (thing.thing_id, thing.display_name, thing.raw) == ("7", "name", {"thingId": "7"})
    assert "raw" not in repr(thing) and _Thing("8").raw == {}


def test_a_reply_without_a_required_field_is_refused_with_its_message() -> None:
    with pytest.raises(PlatformError, match="no thing id"):
        _Thing.from_api({"thingId": "", "displayName": "x"})
    with pytest.raises(PlatformError, match="no thing id"):
        _Thing.from_api(None)


def test_a_request_sends_only_the_fields_that_are_set() -> None:
    part = _Thing(thing_id="1", count=0, enabled=False)
    body = set_fields(part, str.upper)
    assert body == {"THING_ID": "1", "COUNT": 0, "ENABLED": False, "TAGS": [], "PARTS": [], "RAW": {}}
