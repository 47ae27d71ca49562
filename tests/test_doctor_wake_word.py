"""`companion doctor` with the wake word as trigger: the engine and models load, or the line says why."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from companion.bringup.doctor import Status, check_wake_word
from companion.config import Settings, WakeWordSettings


def wake_settings(**wake: object) -> Settings:
    settings = Settings(wake_word=WakeWordSettings(**wake))  # type: ignore[arg-type]
    return replace(settings, backend=replace(settings.backend, trigger="wake_word"))


def test_no_line_when_another_trigger_starts_turns() -> None:
    assert check_wake_word(Settings()) is None


def test_the_models_load_and_the_line_names_the_phrases_and_the_cost() -> None:
    result = check_wake_word(wake_settings(models=["alexa", "okay_nabu"]))
    assert result is not None and result.status is Status.PASS, result
    assert "microwakeword" in result.detail and "'Alexa'" in result.detail and "Nabu" in result.detail
    assert "ms per 60 ms block" in result.detail


def test_a_missing_custom_model_fails_naming_the_key_and_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "hey_toy.json"
    result = check_wake_word(wake_settings(models=[str(missing)]))
    assert result is not None and result.status is Status.FAIL
    assert "wake_word.models" in result.detail and str(missing) in result.detail
    assert result.fix
