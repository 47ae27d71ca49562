"""Downloads chat_bot_v3's TTS MP3 files and decodes them while they arrive, within the config's limits."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import httpx

from ...audio.mp3 import Mp3Limits, stream_decode
from ...config import ChatbotV3Settings
from ..reply_player import FetchFailed, PcmSink


class TtsFetcher:
    """Downloads TTS MP3 files and decodes them while they arrive (limits from the config).

    Call it with a URL and a PCM sink; decoding runs on its own small thread pool.
    """

    def __init__(self, settings: ChatbotV3Settings, rate: int, verify: ssl.SSLContext | bool = True) -> None:
        self.settings = settings
        self.rate = rate
        self._verify = verify
        self._http: httpx.AsyncClient | None = None
        self._executor = ThreadPoolExecutor(max_workers=settings.fetch_concurrency, thread_name_prefix="mp3")

    def warm_up(self) -> None:
        """Build the HTTP client now (loading CA certificates takes ~30 ms), not on the first reply."""
        if self._http is None:
            self._http = httpx.AsyncClient(
                verify=self._verify,
                follow_redirects=True,
                timeout=httpx.Timeout(self.settings.tts_timeout_s),
                limits=httpx.Limits(max_connections=self.settings.fetch_concurrency + 1),
            )

    async def __call__(self, url: str, on_pcm: PcmSink) -> float:
        """Seconds of audio handed to `on_pcm`; raises FetchFailed, Mp3Error (limits), httpx errors."""
        settings = self.settings
        self.warm_up()
        http = self._http
        assert http is not None

        async def body() -> AsyncIterator[bytes]:
            async with http.stream("GET", url) as response:
                if response.status_code != 200:
                    raise FetchFailed(f"HTTP {response.status_code}")
                length = response.headers.get("content-length", "")
                if length.isdigit() and int(length) > settings.tts_max_bytes:
                    raise FetchFailed(f"{length} bytes is larger than tts_max_bytes")
                async for chunk in response.aiter_bytes():
                    yield chunk

        limits = Mp3Limits(settings.tts_max_bytes, settings.tts_max_audio_s, settings.tts_timeout_s)
        return await stream_decode(body(), self.rate, on_pcm, limits=limits, executor=self._executor)

    async def aclose(self) -> None:
        """Close the HTTP client and stop the decoder threads."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        self._executor.shutdown(wait=False, cancel_futures=True)
