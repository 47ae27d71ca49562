"""`companion demo` as a newcomer runs it: no sound card, no network, no account, from any folder."""

from __future__ import annotations

import os
import subprocess
import sys
import wave
from pathlib import Path


def test_demo_runs_one_turn_without_a_sound_card_and_says_where_it_wrote_the_reply(tmp_path: Path) -> None:
    env = dict(os.environ, STATE_DIRECTORY=str(tmp_path / "state"), PULSE_SERVER="unix:/nonexistent")
    result = subprocess.run(
        [sys.executable, "-m", "companion", "demo"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    written = tmp_path / "companion-demo.wav"
    assert f"what the speaker played: {written}" in out
    with wave.open(str(written)) as reply:
        assert reply.getnframes() > reply.getframerate()  # more than a second of reply audio
    timeline = out.index("turn 1 (")
    assert "first sample played" in out[timeline:]
    # once the turn is shown the demo is over: no state line after it
    assert "  [" not in out[timeline:], out[timeline:]
    assert "Traceback" not in result.stderr


def test_an_output_wav_in_a_missing_folder_is_one_line_and_exit_78(tmp_path: Path) -> None:
    target = tmp_path / "no-such-folder" / "reply.wav"
    env = dict(os.environ, STATE_DIRECTORY=str(tmp_path / "state"))
    result = subprocess.run(
        [sys.executable, "-m", "companion", "run", "--input", "question.wav", "--output", str(target)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 78, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("companion: ")]
    expected = f"audio.output: cannot write the WAV file '{target}': No such file or directory"
    assert errors == [f"companion: {expected} (its folder must exist)"]
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
