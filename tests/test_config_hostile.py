"""Hostile configuration input: every bad value, file or environment is one line and exit 78, never a
traceback, a hang or a busy loop, and a secret's value is never echoed back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from companion.config import load_settings
from companion.errors import ConfigError


def run_cli(
    *args: str, env_extra: dict[str, str] | None = None, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPANION_")}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "companion", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)  # fmt: skip


def assert_one_line_78(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 78, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------------------ non-finite numbers

FLOAT_KEYS = (
    "vad.max_utterance_s", "backend.reconnect_max_s", "xiaozhi.idle_timeout_s", "xiaozhi.hello_timeout_s",
    "chatbot_v3.speed", "chatbot_v3.reply_idle_s", "bridge.timeout_s",
)  # fmt: skip


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_numbers_in_the_file_are_refused(tmp_path: Path, key: str, value: str) -> None:
    section, name = key.split(".")
    path = tmp_path / "c.toml"
    path.write_text(f"[{section}]\n{name} = {value}\n")
    with pytest.raises(ConfigError, match=rf"{path}: {key}: expected a finite number, got {value}"):
        load_settings(path)


@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_non_finite_numbers_in_set_are_refused(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"--set {key}: expected a finite number, got nan"):
        load_settings(None, [f"{key}=nan"])


def test_a_nan_utterance_limit_exits_78_with_one_line() -> None:
    result = run_cli("run", "--set", "vad.max_utterance_s=nan")
    assert_one_line_78(result, "vad.max_utterance_s: expected a finite number, got nan")


def test_set_errors_name_set_as_their_source() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(None, ["audio.volume=200"])
    assert str(err.value).startswith("--set audio.volume: expected a value ≤ 100, got 200")
    with pytest.raises(ConfigError) as err:
        load_settings(None, ["audio.loudness=3"])
    assert str(err.value).startswith("--set audio.loudness: unknown key")


# ------------------------------------------------------------------------------------ hostile files


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(bytes(range(256)) * 4, id="binary"),
        pytest.param("[vad]\naggressiveness = 3\n".encode("utf-16"), id="utf-16"),
        pytest.param(os.urandom(10 * 1024 * 1024), id="10MB-random"),
    ],
)
def test_a_file_that_is_not_text_exits_78_with_one_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(content)
    assert_one_line_78(run_cli("run", "--config", str(path)), str(path))


def test_a_deeply_nested_inline_table_exits_78_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("x = " + "{a = " * 500 + "1" + " }" * 500 + "\n")
    assert_one_line_78(run_cli("run", "--config", str(path)), str(path))


def test_a_deeply_nested_set_value_exits_78_with_one_line() -> None:
    result = run_cli("run", "--set", "xiaozhi.custom_replace_prompt=" + "{a = " * 500 + "1" + " }" * 500)
    assert_one_line_78(result, "--set xiaozhi.custom_replace_prompt")


def test_companion_config_naming_a_missing_file_exits_78(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    result = run_cli("run", env_extra={"COMPANION_CONFIG": str(missing)})
    assert_one_line_78(result, "COMPANION_CONFIG", str(missing))


def test_a_directory_as_config_exits_78_with_one_line(tmp_path: Path) -> None:
    assert_one_line_78(run_cli("run", "--config", str(tmp_path)), str(tmp_path))


def test_a_fifo_as_config_exits_78_instead_of_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "companion.toml"
    os.mkfifo(fifo)
    assert_one_line_78(run_cli("run", "--config", str(fifo), timeout=10), str(fifo), "not a regular file")


@pytest.mark.parametrize("colour", ["orange", "#12345", "#1234567", "rgb(1,2,3)"])
def test_an_idle_colour_that_is_not_rrggbb_is_refused_at_load(tmp_path: Path, colour: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[leds]\nidle_color = {colour!r}\n")
    line = assert_one_line_78(run_cli("run", "--config", str(path)), str(path), "leds.idle_color")
    assert "a colour like '#ff8000'" in line


@pytest.mark.parametrize("colour", ["#201008", "201008", "#FFaa00", ""])
def test_idle_colours_as_rrggbb_load(colour: str) -> None:
    assert load_settings(None, [f"leds.idle_color={colour!r}"]).leds.idle_color == colour


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_config_exits_78_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[vad]\naggressiveness = 3\n")
    path.chmod(0)
    assert_one_line_78(run_cli("run", "--config", str(path)), str(path))


# ------------------------------------------------------------------------------------------ secrets

SECRET = "918273645546372819"


@pytest.mark.parametrize(
    ("section", "name"),
    [
        ("xiaozhi", "token"),
        ("xiaozhi", "mqtt_password"),
        ("chatbot_v3", "api_key"),
        ("chatbot_v3", "device_token"),
    ],
)
def test_a_type_error_on_a_secret_never_shows_its_value(tmp_path: Path, section: str, name: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[{section}]\n{name} = {SECRET}\n")
    line = assert_one_line_78(run_cli("run", "--config", str(path)), f"{section}.{name}: expected a string")
    assert SECRET[:4] not in line


@pytest.mark.parametrize(
    ("key", "env_var"),
    [
        ("xiaozhi.token", "COMPANION_XIAOZHI_TOKEN"),
        ("chatbot_v3.api_key", "COMPANION_MINDCRAFT_KEY"),
        ("chatbot_v3.device_token", "COMPANION_MINDCRAFT_DEVICE_TOKEN"),
        ("xiaozhi.mqtt_password", "COMPANION_XIAOZHI_MQTT_PASSWORD"),
        ("espai_device.api_key", "COMPANION_ESPAI_DEVICE_KEY"),
    ],
)
def test_secrets_are_refused_on_the_command_line(key: str, env_var: str) -> None:
    line = assert_one_line_78(run_cli("run", "--set", f"{key}={SECRET}"), f"--set {key}", env_var)
    assert SECRET[:4] not in line


def test_the_environment_wins_over_the_config_file_and_a_credential_over_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[xiaozhi]\ntoken = 'from-file'\n[chatbot_v3]\napi_key = 'MC-file'\n")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.delenv("COMPANION_XIAOZHI_TOKEN", raising=False)
    monkeypatch.delenv("COMPANION_MINDCRAFT_KEY", raising=False)
    assert load_settings(path).xiaozhi.token == "from-file"
    monkeypatch.setenv("COMPANION_XIAOZHI_TOKEN", "from-env")
    monkeypatch.setenv("COMPANION_MINDCRAFT_KEY", "MC-env")
    settings = load_settings(path)
    assert settings.xiaozhi.token == "from-env"
    assert settings.chatbot_v3.api_key == "MC-env"
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "xiaozhi-token").write_text("from-credential\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    settings = load_settings(path)
    assert settings.xiaozhi.token == "from-credential"
    assert settings.chatbot_v3.api_key == "MC-env"


def test_the_espai_device_key_comes_from_its_environment_variable_or_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[espai_device]\napi_key = 'from-file'\n")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setenv("COMPANION_ESPAI_DEVICE_KEY", "from-env")
    assert load_settings(path).espai_device.api_key == "from-env"
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "espai-device-key").write_text("from-credential\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    assert load_settings(path).espai_device.api_key == "from-credential"


# ------------------------------------------------------------------------------- cross-field checks


def test_more_voiced_frames_than_the_window_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[vad]\nstart_voiced = 8\nstart_window = 6\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    message = str(err.value)
    assert message.startswith(str(path))
    assert "vad.start_voiced" in message and "vad.start_window" in message and "\n" not in message


def test_equal_voiced_frames_and_window_is_accepted() -> None:
    assert load_settings(None, ["vad.start_voiced=6", "vad.start_window=6"]).vad.start_voiced == 6


# --------------------------------------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    ("key", "url"),
    [
        ("xiaozhi.websocket_url", "ftp://example.com/x"),
        ("xiaozhi.websocket_url", "example.com:8000/xiaozhi/v1/"),
        ("xiaozhi.websocket_url", "ws://example.com:99999/"),
        ("xiaozhi.websocket_url", "https://example.com/"),
        ("xiaozhi.websocket_url", "ws:///nohost"),
        ("xiaozhi.ota_url", "ws://example.com/ota/"),
        ("xiaozhi.ota_url", "https://example.com:0/ota/"),
        ("chatbot_v3.url", "http://example.com/"),
        ("chatbot_v3.rest_url", "ftp://example.com/v1/"),
        ("xiaozhi.mqtt_endpoint", "broker.example.com:99999"),
        ("xiaozhi.mqtt_endpoint", "mqtt://broker.example.com"),
    ],
)
def test_bad_urls_are_refused_at_load(tmp_path: Path, key: str, url: str) -> None:
    section, name = key.split(".")
    path = tmp_path / "c.toml"
    path.write_text(f'[{section}]\n{name} = "{url}"\n')
    with pytest.raises(ConfigError, match=rf"^{path}: {key}: expected "):
        load_settings(path)


@pytest.mark.parametrize(
    ("key", "url"),
    [
        ("xiaozhi.websocket_url", "ws://127.0.0.1:8000/xiaozhi/v1/"),
        ("xiaozhi.websocket_url", "wss://[::1]/x"),
        ("xiaozhi.websocket_url", ""),
        ("xiaozhi.ota_url", ""),
        ("xiaozhi.ota_url", "http://192.168.1.5:8003/xiaozhi/ota/"),
        ("chatbot_v3.url", "wss://api.mindcraft.com.cn/socket-v1/?x=1"),
        ("xiaozhi.mqtt_endpoint", "broker.example.com:1883"),
        ("xiaozhi.mqtt_endpoint", "broker.example.com"),
    ],
)
def test_good_urls_are_accepted(key: str, url: str) -> None:
    section, name = key.split(".")
    assert getattr(getattr(load_settings(None, [f'{key}="{url}"']), section), name) == url


def test_an_ftp_websocket_url_exits_78_instead_of_retrying() -> None:
    result = run_cli("run", "--set", "xiaozhi.websocket_url=ftp://127.0.0.1/x")
    assert_one_line_78(result, "--set xiaozhi.websocket_url: expected a ws:// or wss:// URL")


def test_a_non_finite_number_inside_a_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[xiaozhi]\ncustom_replace_prompt = { weight = nan }\n")
    with pytest.raises(ConfigError, match=rf"{path}: xiaozhi.custom_replace_prompt: expected finite numbers"):
        load_settings(path)


def test_a_file_saved_with_a_utf8_byte_order_mark_loads(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(b"\xef\xbb\xbf[vad]\naggressiveness = 3\n")
    assert load_settings(path).vad.aggressiveness == 3


def test_the_bridge_microphone_without_a_bridge_is_refused_at_load() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(None, ["audio.input=bridge"])
    assert str(err.value).startswith("--set: audio.input")
    assert "bridge.port" in str(err.value)
    assert load_settings(None, ["audio.input=bridge", "bridge.port=auto"]).audio.input == "bridge"


def test_without_companion_config_the_systemd_configuration_directory_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COMPANION_CONFIG", raising=False)
    monkeypatch.setenv("CONFIGURATION_DIRECTORY", str(tmp_path))
    (tmp_path / "companion.toml").write_text("[vad]\naggressiveness = 1\n")
    assert load_settings().source == str(tmp_path / "companion.toml")


def test_a_url_in_an_error_never_shows_its_query_or_credentials(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[xiaozhi]\nwebsocket_url = "ftp://user:pw-5521@host/x?token=tk-7731"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert "pw-5521" not in str(err.value) and "tk-7731" not in str(err.value)
    assert "ftp://" in str(err.value)
