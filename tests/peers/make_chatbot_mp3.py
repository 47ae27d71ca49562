"""Makes the MP3 fixtures of the chat_bot_v3 tests (tests/fixtures/chatbot_v3/*.mp3), once.

The files are committed, so the tests need neither espeak-ng nor an MP3 encoder. Run this again only to
change them: `python -m tests.peers.make_chatbot_mp3` (needs espeak-ng and ffmpeg with libmp3lame).
The four sentences are spoken English with different rates, channel counts and headers, as TTS
services send them: a LAME Info tag (CBR), none at all (a streamed file), and a Xing tag (VBR stereo).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "chatbot_v3"

SENTENCES = (
    ("s0", "Hello there, nice to meet you.", ["-ar", "24000", "-ac", "1", "-b:a", "32k"]),
    ("s1", "Today the weather is sunny and warm.", ["-ar", "32000", "-ac", "1", "-b:a", "40k"]),
    (
        "s2",
        "Would you like to hear a story?",
        ["-ar", "16000", "-ac", "1", "-b:a", "24k", "-write_xing", "0"],
    ),
    ("s3", "Goodbye, see you tomorrow.", ["-ar", "44100", "-ac", "2", "-q:a", "9"]),
)


def main() -> None:
    FIXTURES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, text, options in SENTENCES:
            wav = Path(tmp) / f"{name}.wav"
            subprocess.run(["espeak-ng", "-v", "en-us", "-s", "170", "-w", str(wav), text], check=True)
            out = FIXTURES / f"{name}.mp3"
            subprocess.run(
                ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(wav), "-c:a", "libmp3lame",
                 *options, "-id3v2_version", "0", "-map_metadata", "-1", str(out)],
                check=True,
            )  # fmt: skip
            print(f"{out}: {out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
