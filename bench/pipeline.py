"""Uplink and downlink cost of the pipeline as it runs, against calling libopus/webrtcvad directly.

Uplink: capture blocks (16 kHz, or 48 kHz for a device that needs it) → resample to 16 kHz →
endpointer (webrtcvad) → 60 ms Opus encode.
Raw: webrtcvad on the same 30 ms frames + libopus encode of the same 60 ms frames.
Downlink: 24 kHz Opus packets → decode → jitter buffer push/pull (what the playback path does).
Raw: libopus decode of the same packets.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import opuslib_next
import webrtcvad

from companion.audio.endpointer import AudioFrame, Endpointer, SpeechBegan
from companion.audio.jitter import JitterBuffer
from companion.audio.opus import OpusDecoder, OpusEncoder
from companion.audio.resample import MonoResampler
from companion.audio.uplink import UplinkEncoder
from companion.config import AudioSettings, VadSettings
from companion.events import UplinkFormat

from .speech import speech_16k

SECONDS = 60.0


def _best_of(runs: int, func: Any) -> float:
    return min(func() for _ in range(runs))


def uplink(seconds: float = SECONDS, device_rate: int = 16000) -> dict[str, float]:
    """Pipeline and raw CPU seconds for `seconds` of speech captured at `device_rate`, and their ratio.

    The pipeline opens the microphone at 16 kHz when the device takes it (PulseAudio, most USB
    microphones), so no resampling runs; at 48 kHz the soxr stage is added.
    """
    audio16 = speech_16k(seconds)
    captured = MonoResampler(16000, device_rate).process(audio16, last=True)
    block = device_rate * 20 // 1000
    blocks = [captured[i : i + block] for i in range(0, len(captured) - block + 1, block)]
    frames30 = [audio16[i : i + 480].tobytes() for i in range(0, len(audio16) - 479, 480)]
    frames60 = [audio16[i : i + 960].tobytes() for i in range(0, len(audio16) - 959, 960)]

    def pipeline() -> float:
        resampler = MonoResampler(device_rate, 16000)
        endpointer = Endpointer(VadSettings(), emit_quiet=True)
        encoder = UplinkEncoder(UplinkFormat(), AudioSettings())
        t0 = time.process_time()
        for block in blocks:
            pcm = resampler.process(block).tobytes()
            for event in endpointer.feed(pcm):
                if isinstance(event, SpeechBegan | AudioFrame):  # the turn streams everything
                    encoder.feed(event.fresh if isinstance(event, SpeechBegan) else event.audio)
        return time.process_time() - t0

    def raw() -> float:
        vad = webrtcvad.Vad(2)
        enc = opuslib_next.Encoder(16000, 1, opuslib_next.APPLICATION_AUDIO)
        enc.bitrate, enc.complexity, enc.dtx = 24000, 0, 1
        t0 = time.process_time()
        for frame in frames30:
            vad.is_speech(frame, 16000)
        for frame in frames60:
            enc.encode(frame, 960)
        return time.process_time() - t0

    p, r = _best_of(3, pipeline), _best_of(3, raw)
    suffix = "" if device_rate == 16000 else f"_{device_rate // 1000}k_device"
    return {f"uplink_pipeline_s{suffix}": round(p, 4), f"uplink_raw_s{suffix}": round(r, 4),
            f"uplink_cost_ratio{suffix}": round(p / r, 3)}  # fmt: skip


def downlink(seconds: float = SECONDS) -> dict[str, float]:
    """Decode + buffer cost for `seconds` of 24 kHz Opus, against raw decode."""
    audio24 = MonoResampler(16000, 24000).process(speech_16k(seconds), last=True)
    enc = OpusEncoder(24000, 60, bitrate=32000, complexity=5, dtx=False)
    packets = [enc.encode(audio24[i : i + 1440].tobytes()) for i in range(0, len(audio24) - 1439, 1440)]

    def pipeline() -> float:
        decoder = OpusDecoder(24000)
        buf = JitterBuffer(24000 * 90, 24000 * 120 // 1000)
        out = np.zeros(240, dtype=np.int16)  # 10 ms PortAudio blocks
        t0 = time.process_time()
        for packet in packets:
            buf.push(np.frombuffer(decoder.decode(packet), dtype=np.int16))
            for _ in range(6):
                buf.pull(out)
        return time.process_time() - t0

    def raw() -> float:
        dec = opuslib_next.Decoder(24000, 1)
        t0 = time.process_time()
        for packet in packets:
            dec.decode(packet, 2880)
        return time.process_time() - t0

    p, r = _best_of(3, pipeline), _best_of(3, raw)
    return {"downlink_pipeline_s": round(p, 4), "downlink_raw_s": round(r, 4),
            "downlink_cost_ratio": round(p / r, 3)}  # fmt: skip


if __name__ == "__main__":
    import json

    print(json.dumps({**uplink(), **uplink(device_rate=48000), **downlink()}, indent=2))
