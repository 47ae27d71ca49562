"""Configuration: every bad input exits 78 with one line naming file, key, expectation and finding."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from companion.config import Settings, load_settings, settings_from_mapping
from companion.errors import ConfigError


def run_cli(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "companion", *args], capture_output=True, text=True,
                          timeout=60, env=env)  # fmt: skip


def test_defaults_are_the_official_xiaozhi_server() -> None:
    settings = Settings()
    assert settings.backend.kind == "xiaozhi"
    assert settings.xiaozhi.ota_url == "https://api.tenclass.net/xiaozhi/ota/"
    assert settings.xiaozhi.listen_mode == "auto"


def test_the_shipped_config_loads_and_equals_the_defaults() -> None:
    shipped = Path(__file__).resolve().parent.parent / "configs" / "companion.toml"
    loaded = load_settings(shipped)
    assert dataclass_values(loaded) == dataclass_values(Settings())


def dataclass_values(settings: Settings) -> dict[str, object]:
    import dataclasses

    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings) if f.name != "source"}


def test_set_overrides_parse_toml_values_and_bare_words() -> None:
    settings = load_settings(
        None, ["vad.aggressiveness=3", "audio.input=mic.wav", "leds.show_emotions=false"]
    )
    assert settings.vad.aggressiveness == 3
    assert settings.audio.input == "mic.wav"
    assert settings.leds.show_emotions is False


def test_a_model_id_the_seed_does_not_list_is_accepted_for_the_backend_to_warn_about() -> None:
    settings = load_settings(None, ["chatbot_v3.llm_model=GLM-4.5-Flash", "chatbot_v3.tts_model=NEW_TTS_x"])
    assert (settings.chatbot_v3.llm_model, settings.chatbot_v3.tts_model) == ("GLM-4.5-Flash", "NEW_TTS_x")


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[vad]\naggressiveness = 7\n", "vad.aggressiveness: expected a value ≤ 3, got 7"),
        ("[vad]\naggressiveness = 'high'\n", "vad.aggressiveness: expected an integer, got a string 'high'"),
        ("[audio]\nmicrophone = 'x'\n", "audio.microphone: unknown key"),
        ("[speakers]\nx = 1\n", "[speakers]: unknown section"),
        (
            "[xiaozhi]\nlisten_mode = 'sometimes'\n",
            "xiaozhi.listen_mode: expected 'auto' or 'manual' or 'realtime'",
        ),
        (
            "[backend]\nkind = 'openai'\n",
            "backend.kind: expected 'xiaozhi' or 'chatbot_v3' or 'espai', got 'openai'",
        ),
        (
            "[chatbot_v3]\nauth = 'password'\n",
            "chatbot_v3.auth: expected 'api_key' or 'device_token', got 'password'",
        ),
        ("[backend]\nkind = 'espai'\n", "espai_device.url is empty but backend.kind = 'espai'"),
        ("[espai_device]\next = { ext8 = 'x' }\n", "espai_device.ext.ext8: unknown key"),
        ("[espai_device]\next = { ext2 = 3 }\n", "espai_device.ext.ext2: expected a string, got"),
        ("[espai_device]\nurl = 'http://h:8088'\n", "espai_device.url: expected a ws:// or wss:// URL"),
        ("[audio\ninput = 1\n", "not valid TOML"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, toml: str, needle: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert str(path) in str(err.value)
    assert needle in str(err.value)


def test_bad_config_exits_78_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[vad]\nhangover_ms = 10\n")
    result = run_cli("run", "--config", str(path))
    assert result.returncode == 78
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"{path}: vad.hangover_ms: expected a value ≥ 100, got 10" in lines[0]
    assert "Traceback" not in result.stderr


def test_bad_set_override_exits_78() -> None:
    result = run_cli("run", "--set", "audio.volume=200")
    assert result.returncode == 78
    assert "audio.volume: expected a value ≤ 100, got 200" in result.stderr


def test_missing_config_file_exits_78() -> None:
    result = run_cli("run", "--config", "/nonexistent/companion.toml")
    assert result.returncode == 78
    assert "/nonexistent/companion.toml" in result.stderr


def test_float_settings_accept_integers() -> None:
    settings = settings_from_mapping({"vad": {"max_utterance_s": 10}})
    assert settings.vad.max_utterance_s == 10.0
    assert isinstance(settings.vad.max_utterance_s, float)


def test_the_shipped_config_is_the_rendered_default_with_every_key() -> None:
    from companion.config import default_toml

    shipped = Path(__file__).resolve().parent.parent / "configs" / "companion.toml"
    assert shipped.read_text() == default_toml(), "regenerate configs/companion.toml from default_toml()"
