"""chat_bot_v3 playout: MP3 URL received → first sample handed to PortAudio, and the silence inserted
between consecutive sentences.

Runs the real parts on loopback: the HTTP server of tests/peers/chatbot_server.py serves the MP3
fixtures, a ReplyPlayer with the backend's TtsFetcher downloads and decodes them, and a DeviceSpeaker
plays into a private PulseAudio null sink (started and stopped here).

- first_sample: `announce(0, url)` → the PortAudio callback that hands out the reply's first sample
  (targets ≤ 100 ms). The speaker's pre-buffer is part of it.
- gaps: the URLs arrive as a streaming TTS service sends them, each `lead` seconds before the sentence
  before it ends playing; every block of zeros the PortAudio callback had to play between two pieces of
  the reply is inserted silence (target ≤ 5 ms). `mp3_padding_ms` is what an MP3 carries at its ends and
  what a player without gapless trimming would add at each join. `just_in_time_silence_max_ms` is the
  same gap measure when each URL arrives exactly as the sentence before it ends (lead 0): the cost of
  download and decode on loopback, which the pre-buffer has to absorb.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import miniaudio
import numpy as np

from companion.audio.mp3 import parse_stream_start
from companion.backends.chatbot_v3.fetcher import TtsFetcher
from companion.backends.reply_player import ReplyPlayer
from companion.config import ChatbotV3Settings
from companion.events import BackendEvent, SpeechAudio, SpeechEnded, SpeechStarted

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "chatbot_v3"
NAMES = ("s0", "s1", "s2", "s3")
RATE = 24000
PREBUFFER_MS = 120


class GapMeter:
    """Wraps the jitter buffer's pull (PortAudio thread): runs of zeros played between audio samples."""

    def __init__(self, buffer: Any) -> None:
        self._pull = buffer.pull
        buffer.pull = self.pull
        self.started = False
        self.pending = 0
        self.gaps: list[int] = []

    def pull(self, out: np.ndarray) -> int:
        n = int(self._pull(out))
        if n and self.started and self.pending:
            self.gaps.append(self.pending)
            self.pending = 0
        if n:
            self.started = True
            self.pending = len(out) - n  # zeros after the audio in this block: a gap if more audio follows
        elif self.started:
            self.pending += len(out)
        return n


async def _one_reply(urls: list[str], durations: list[float], lead: float | None) -> dict[str, Any]:
    from companion.audio.speaker import DeviceSpeaker

    speaker = DeviceSpeaker("default", RATE, PREBUFFER_MS)
    meter = GapMeter(speaker.buffer)
    done = asyncio.Event()

    def sink(event: BackendEvent) -> None:
        if isinstance(event, SpeechStarted):
            speaker.begin()
        elif isinstance(event, SpeechAudio):
            asyncio.get_running_loop().create_task(speaker.write(event.payload))
        elif isinstance(event, SpeechEnded):
            done.set()

    fetcher = TtsFetcher(ChatbotV3Settings(), RATE, verify=False)
    player = ReplyPlayer(sink, fetcher, rate=RATE)
    t0 = time.monotonic()
    player.announce(0, urls[0])
    if lead is None:
        for index, url in enumerate(urls[1:], 1):
            player.announce(index, url)
    else:
        await asyncio.sleep(max(0.0, durations[0] - lead))
        for index, url in enumerate(urls[1:], 1):
            player.announce(index, url)
            await asyncio.sleep(durations[index] if index + 1 < len(urls) else 0.0)
    player.end_of_turn()
    await asyncio.wait_for(done.wait(), 30)
    await asyncio.sleep(0.05)  # let the queued writes reach the ring
    speaker.end()
    await speaker.wait_drained(sum(durations) + 5)
    await speaker.close()
    await fetcher.aclose()
    first = speaker.buffer.first_sample_time
    return {"first_sample_ms": None if first is None else (first - t0) * 1000, "gaps": meter.gaps}


async def _measure(trials: int, lead: float) -> dict[str, Any]:
    from tests.peers.chatbot_server import ChatbotServer

    files = {name: (FIXTURES / f"{name}.mp3").read_bytes() for name in NAMES}
    starts = [parse_stream_start(data) for data in files.values()]
    padding_ms = [
        (s.skip_start + s.skip_end) / s.sample_rate * 1000 for s in starts if s is not None and s.skip_end
    ]
    async with ChatbotServer(files) as server:
        urls = [server.file_url(name) for name in NAMES]
        durations = [miniaudio.mp3_get_info(data).duration for data in files.values()]
        firsts: list[float] = []
        for _ in range(trials):
            result = await _one_reply(urls[:1], durations[:1], None)
            if result["first_sample_ms"] is not None:
                firsts.append(result["first_sample_ms"])
        streamed = await _one_reply(urls, durations, lead)
        at_once = await _one_reply(urls, durations, None)
        late = await _one_reply(urls, durations, 0.0)
    gaps = [g * 1000 / RATE for g in streamed["gaps"] + at_once["gaps"]]
    late_gaps = [g * 1000 / RATE for g in late["gaps"]]
    return {
        "first_sample_p50_ms": round(statistics.median(firsts), 1),
        "first_sample_max_ms": round(max(firsts), 1),
        "first_sample_prebuffer_ms": PREBUFFER_MS,
        "first_sample_trials": len(firsts),
        "inserted_silence_max_ms": round(max(gaps, default=0.0), 1),
        "inserted_silence_total_ms": round(sum(gaps), 1),
        "joins_measured": 2 * (len(NAMES) - 1),
        "url_lead_s": lead,
        "mp3_padding_ms": round(statistics.mean(padding_ms), 1),
        "just_in_time_silence_max_ms": round(max(late_gaps, default=0.0), 1),
    }


def measure(trials: int = 10, lead: float = 0.3) -> dict[str, Any]:
    """Both figures through a private PulseAudio (started and stopped here)."""
    from tests.peers.pulse import pulse_environment

    with pulse_environment():
        return asyncio.run(_measure(trials, lead))


if __name__ == "__main__":
    import json

    print(json.dumps(measure(), indent=2))
