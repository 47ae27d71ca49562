"""TOML file → frozen dataclasses, one per concern; every error names file, key, what was expected and found.

The loader is the only place that knows the file format. Each field carries its documentation and its
limits in `metadata`, so validation and the commented default config come from one table.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import stat
import tomllib
import types
import typing
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from .errors import ConfigError

OFFICIAL_OTA_URL = "https://api.tenclass.net/xiaozhi/ota/"
MINDCRAFT_SOCKET_URL = "wss://api.mindcraft.com.cn/socket-v1/"
# The chat_bot_v3 models seed 004 lists; the vendor adds more, which are sent as given (with a warning).
MINDCRAFT_LLM_MODELS = ("GLM-4-Air", "Doubao-1.5-lite-32k", "abab6.5s-chat")
MINDCRAFT_TTS_MODELS = (
    "TX_TTSP_realtime",
    "TX_TTSL_realtime",
    "MM_TTSL_realtime_speech-01-turbo",
    "ZJ_TTSL_realtime",
    "ALI_TTSL_realtime_cosyvoice-v1",
    "XF_TTS_realtime",
    "BD_TTS_realtime_zh",
)
WEBSOCKET_SCHEMES = ("ws", "wss")
HTTP_SCHEMES = ("http", "https")
ESPAI_EXT_KEYS = tuple(f"ext{i}" for i in range(1, 8))
# The models pymicro-wakeword and pyopen-wakeword ship (wake_word.models takes these names, or paths).
MICRO_WAKE_MODELS = ("okay_nabu", "hey_jarvis", "hey_mycroft", "alexa")
OPENWAKEWORD_MODELS = ("okay_nabu", "hey_jarvis", "hey_mycroft", "alexa", "hey_rhasspy")
MAX_CONFIG_BYTES = 1024 * 1024  # a real file is a few KiB; anything this large is not a config

# Where each secret should come from instead of the config file or the command line: the systemd
# credential ID (LoadCredential=) and the environment variable. The credential wins over the
# environment, which wins over the file (docs/service.md).
SECRET_SOURCES: dict[tuple[str, str], tuple[str | None, str]] = {
    ("xiaozhi", "token"): ("xiaozhi-token", "COMPANION_XIAOZHI_TOKEN"),
    ("chatbot_v3", "api_key"): ("mindcraft-key", "COMPANION_MINDCRAFT_KEY"),
    ("chatbot_v3", "device_token"): ("mindcraft-device-token", "COMPANION_MINDCRAFT_DEVICE_TOKEN"),
    ("xiaozhi", "mqtt_password"): (None, "COMPANION_XIAOZHI_MQTT_PASSWORD"),
    ("espai_device", "api_key"): ("espai-device-key", "COMPANION_ESPAI_DEVICE_KEY"),
}


def setting(
    default: Any,
    doc: str,
    *,
    choices: Iterable[Any] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    url: tuple[str, ...] | None = None,
    host_port: bool = False,
    known: Iterable[Any] | None = None,
    pattern: tuple[str, str] | None = None,
) -> Any:
    """A dataclass field with its one-line documentation and limits (`url`: the schemes allowed,
    `host_port`: a 'host[:port]' address, `known`: the values documented so far, others allowed,
    `pattern`: a regular expression a non-empty value must match, and what it means in words)."""
    meta: dict[str, Any] = {"doc": doc}
    if pattern is not None:
        meta["pattern"] = pattern
    if known is not None:
        meta["known"] = tuple(known)
    if url is not None:
        meta["url"] = url
    if host_port:
        meta["host_port"] = True
    if choices is not None:
        meta["choices"] = tuple(choices)
    if minimum is not None:
        meta["minimum"] = minimum
    if maximum is not None:
        meta["maximum"] = maximum
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class AudioSettings:
    """Where sound comes from and goes to, and how it is encoded."""

    input: str = setting("default", "microphone: a sound device name or index, a .wav path, or 'bridge'")
    output: str = setting("default", "speaker: a sound device name or index, or a .wav path to write")
    input_loop: bool = setting(False, "a .wav input is played again and again instead of once (soak tests)")
    device_rate: int = setting(
        0,
        "sample rate to open the devices at; 0 = the pipeline rate if the device takes it, else its default",
        minimum=0,
        maximum=192000,
    )
    input_channel: int = setting(
        -1,
        "microphone channel of a multi-channel device (2-mic HAT, stereo USB codec): 0, 1, … or -1: the mix",
        minimum=-1,
        maximum=31,
    )
    codec: str = setting("opus", "uplink codec when the backend lets us choose", choices=("opus", "pcm"))
    opus_bitrate: int = setting(24000, "Opus encoder bitrate in bit/s", minimum=6000, maximum=128000)
    opus_complexity: int = setting(0, "Opus encoder complexity (0 is cheapest)", minimum=0, maximum=10)
    prebuffer_ms: int = setting(
        120, "speaker jitter buffer filled before playback starts", minimum=0, maximum=2000
    )
    playback_rate: int = setting(
        24000, "rate the reply is decoded and played at", choices=(16000, 24000, 48000)
    )
    volume: int = setting(70, "speaker volume 0-100", minimum=0, maximum=100)
    prompts_language: str = setting("en", "language of spoken prompts and earcons", choices=("en", "zh"))
    echo: str = setting(
        "none",
        "echo path: 'none' (speaker build, mic closed while speaking), 'headset', or 'aec'",
        choices=("none", "headset", "aec"),
    )


@dataclass(frozen=True)
class VadSettings:
    """The endpointer: when speech starts and when it ends."""

    aggressiveness: int = setting(2, "webrtcvad aggressiveness, 0 (least) to 3 (most)", minimum=0, maximum=3)
    frame_ms: int = setting(30, "VAD frame length", choices=(10, 20, 30))
    start_voiced: int = setting(
        4,
        "speech starts when this many of the last start_window frames are voiced (with audio.echo = 'aec' "
        "and frame_ms, start_voiced and start_window all left as they are: 5 of 7 frames of 20 ms)",
        minimum=1,
        maximum=50,
    )
    start_window: int = setting(6, "frames looked at for the start trigger", minimum=1, maximum=50)
    hangover_ms: int = setting(700, "silence that ends speech", minimum=100, maximum=5000)
    preroll_ms: int = setting(300, "audio kept from before the start trigger", minimum=0, maximum=2000)
    max_utterance_s: float = setting(15.0, "longest utterance before it is cut", minimum=1, maximum=120)
    close_talk: bool = setting(
        True,
        "with audio.echo = 'headset': aggressiveness 3, start after 3 voiced of 4 frames, hangover 500 ms, "
        "20 ms capture blocks (fast voice barge-in); false = use the values above as given",
    )

    def effective(self, echo: str) -> VadSettings:
        """The settings the endpointer runs with for this echo path: close-talk tuning for headsets; with
        aec, the default start trigger in 20 ms frames (the capture's blocks), 5 voiced of 7, so the
        user's voice over a reply is noticed sooner (docs/echo.md has the measurements)."""
        if echo == "aec":
            default = VadSettings()
            start = (self.frame_ms, self.start_voiced, self.start_window)
            if start != (default.frame_ms, default.start_voiced, default.start_window):
                return self  # set by the user: used as given
            return dataclasses.replace(self, frame_ms=20, start_voiced=5, start_window=7)
        if echo != "headset" or not self.close_talk:
            return self
        return dataclasses.replace(
            self,
            aggressiveness=3,
            frame_ms=30,
            start_voiced=3,
            start_window=4,
            hangover_ms=min(self.hangover_ms, 500),
        )


@dataclass(frozen=True)
class BackendSettings:
    """Which cloud agent, and what starts a turn."""

    kind: str = setting("xiaozhi", "the voice agent protocol", choices=("xiaozhi", "chatbot_v3", "espai"))
    trigger: str = setting(
        "vad",
        "what starts a turn from idle: speech ('vad'), only the button ('button'), or the wake word "
        "('wake_word', see [wake_word]); the bridge button / Enter on the console always works too",
        choices=("vad", "button", "wake_word"),
    )
    reconnect_max_s: float = setting(60.0, "cap of the reconnect backoff", minimum=1, maximum=3600)


@dataclass(frozen=True)
class WakeWordSettings:
    """The wake word (with backend.trigger = 'wake_word'): engine, models and when a model fires."""

    engine: str = setting(
        "microwakeword",
        "'microwakeword' (pymicro-wakeword, ~0.3 % of a Pi core) or 'openwakeword' (pyopen-wakeword, "
        "~10 %; pip install 'companion[openwakeword]')",
        choices=("microwakeword", "openwakeword"),
    )
    models: list[str] = setting(
        ["okay_nabu"],
        "one or more models listened for at once: built-in names (okay_nabu, hey_jarvis, hey_mycroft, "
        "alexa; openwakeword also hey_rhasspy) or paths to custom models (microwakeword: the .json "
        "manifest beside its .tflite; openwakeword: the .tflite)",
    )
    probability_cutoff: float = setting(
        0.0,
        "a model fires above this probability; 0 = the model's own (its manifest, or 0.5 for openwakeword)",
        minimum=0.0,
        maximum=1.0,
    )
    sliding_window: int = setting(
        0,
        "probabilities averaged before the cutoff; 0 = 3 for the built-in microwakeword models, a custom "
        "model's own (its manifest), 1 for openwakeword",
        minimum=0,
        maximum=100,
    )
    refractory_s: float = setting(
        2.0, "after a detection the wake word is not heard again for this long", minimum=0.0, maximum=60.0
    )
    preroll_ms: int = setting(
        150,
        "audio from before the detection sent with the question, so that a first syllable said right "
        "after the wake word is not lost",
        minimum=0,
        maximum=2000,
    )
    send_detect: bool = setting(
        True, "xiaozhi: send `listen detect` with the wake word before `listen start`, as the firmware does"
    )


@dataclass(frozen=True)
class XiaozhiSettings:
    """xiaozhi.me, Qiniu and self-hosted xiaozhi-esp32-server."""

    ota_url: str = setting(
        OFFICIAL_OTA_URL, "OTA endpoint that hands out the websocket/MQTT address", url=HTTP_SCHEMES
    )
    websocket_url: str = setting(
        "", "skip OTA and connect here (e.g. ws://host:8000/xiaozhi/v1/)", url=WEBSOCKET_SCHEMES
    )
    token: str = setting("", "bearer token for websocket_url (secret: prefer COMPANION_XIAOZHI_TOKEN)")
    protocol_version: int = setting(1, "websocket binary framing version", choices=(1, 2, 3))
    transport: str = setting("auto", "'auto' follows the OTA reply", choices=("auto", "websocket", "mqtt"))
    listen_mode: str = setting(
        "auto",
        "who ends the utterance: server VAD, us, or full duplex",
        choices=("auto", "manual", "realtime"),
    )
    device_id: str = setting("", "MAC-shaped device id; empty = the primary interface's MAC")
    board_name: str = setting("companion-pi", "board name sent in OTA and MCP")
    hello_timeout_s: float = setting(10.0, "wait for the server hello", minimum=1, maximum=60)
    settle_ms: int = setting(
        1000, "wait after hello (or MCP initialize) before the first audio", minimum=0, maximum=10000
    )
    idle_timeout_s: float = setting(
        120.0, "channel is dead after this long with nothing received", minimum=10, maximum=3600
    )
    tls_ca: str = setting("", "PEM file of a CA to trust for wss:// and https:// (self-hosted servers)")
    language: str = setting("zh-CN", "Accept-Language sent to OTA")
    reboot_action: str = setting(
        "restart",
        "what a server 'system reboot' or the agent's self.reboot tool does",
        choices=("restart", "ignore"),
    )
    custom_replace_prompt: dict[str, Any] = setting(
        {}, "Qiniu agent_params.custom_replace_prompt placeholders"
    )
    # websocket backend, OTA and hello extras (xiaozhi_ws.py, ota.py)
    flavor: str = setting(
        "auto",
        "server family: 'qiniu' adds Qiniu's hello extras (notify, PCM); 'auto' = qiniu for "
        "*.qiniuapi.com URLs",
        choices=("auto", "xiaozhi", "qiniu"),
    )
    server_aec: bool = setting(
        False, "announce features.aec: the server stops its reply when we talk over it"
    )
    # MQTT + UDP transport (xiaozhi_mqtt.py); normally everything comes from the OTA reply's mqtt block
    mqtt_endpoint: str = setting(
        "",
        "skip OTA and use this MQTT broker, host[:port]; TLS on port 8883, the default port",
        host_port=True,
    )
    mqtt_client_id: str = setting("", "MQTT client id when mqtt_endpoint is set")
    mqtt_username: str = setting("", "MQTT username when mqtt_endpoint is set")
    mqtt_password: str = setting(
        "", "MQTT password when mqtt_endpoint is set (secret: prefer COMPANION_XIAOZHI_MQTT_PASSWORD)"
    )
    mqtt_publish_topic: str = setting("device-server", "topic we publish to when mqtt_endpoint is set")
    mqtt_subscribe_topic: str = setting(
        "", "topic the server publishes to; '' = devices/p2p/<device id with _ for :>"
    )
    mqtt_keepalive_s: int = setting(
        240, "MQTT keepalive when the OTA reply sets none", minimum=10, maximum=65535
    )


@dataclass(frozen=True)
class ChatbotV3Settings:
    """Mindcraft chat_bot_v3 socket agent."""

    url: str = setting(MINDCRAFT_SOCKET_URL, "agent socket URL", url=WEBSOCKET_SCHEMES)
    auth: str = setting(
        "api_key",
        "what authenticates the device: the account's API key, or a device token (what a shipped toy "
        "should carry)",
        choices=("api_key", "device_token"),
    )
    api_key: str = setting(
        "", "account API key, with auth = 'api_key' (secret: prefer COMPANION_MINDCRAFT_KEY)"
    )
    device_token: str = setting(
        "",
        "device access token, with auth = 'device_token' (secret: prefer COMPANION_MINDCRAFT_DEVICE_TOKEN)",
    )
    # agent_action parameters (seed 004); an empty string is not sent, so the server's default applies
    mode: str = setting("pro", "agent mode", choices=("pro", "standard", "customize"))
    character_uuid: str = setting("", "Mindcraft character to play (its voice overrides voice_id)")
    profile_uuid: str = setting("", "Mindcraft user profile")
    emotion_output: bool = setting(True, "ask for the agent's emotion with each reply (for the LEDs)")
    upload_format: str = setting(
        "pcm",
        "uplink audio format; only 'pcm' is implemented (the others' framing is undocumented)",
        choices=("pcm", "wav", "opus", "speex", "aac", "amr"),
    )
    upload_sample_rate: int = setting(16000, "uplink sample rate", choices=(8000, 16000))
    voice_id: str = setting("female-tianmei", "TTS voice (ignored when character_uuid is set)")
    speed: float = setting(0.0, "speech speed; 0 = the voice's normal speed", minimum=-2.0, maximum=6.0)
    user_name: str = setting("", "what the agent calls the user")
    user_age: int = setting(5, "the user's age, which the agent adapts to", minimum=1, maximum=120)
    bot_name: str = setting("", "the agent's name (server default 智酱)")
    bot_character_description: str = setting("", "who the agent is")
    bot_personality: str = setting("", "the agent's personality (server default 活泼,好奇,乐观,善良)")
    bot_tone: str = setting("", "how the agent speaks")
    llm_model: str = setting(
        "abab6.5s-chat",
        "language model (another id is sent as given, with a warning)",
        known=MINDCRAFT_LLM_MODELS,
    )
    max_tokens: int = setting(100, "longest reply in tokens", minimum=20, maximum=8000)
    tts_model: str = setting(
        "TX_TTSP_realtime",
        "speech synthesis model (another id is sent as given, with a warning)",
        known=MINDCRAFT_TTS_MODELS,
    )
    session_token: str = setting(
        "", "conversation (memory) to continue; empty = create one and remember it in the state directory"
    )
    language: str = setting(
        "auto", "language of the conversation", choices=("auto", "zh", "en", "ja", "yue", "ko")
    )
    # this client's own behaviour
    rest_url: str = setting(
        "https://api.mindcraft.com.cn/v1/", "REST API base (sessions, messages)", url=HTTP_SCHEMES
    )
    create_session: bool = setting(
        True, "create a session token over REST when session_token is empty and none is remembered"
    )
    fetch_concurrency: int = setting(3, "TTS files downloaded at once", minimum=1, maximum=8)
    missing_index_wait_s: float = setting(
        1.0, "wait for a sentence (z_index) that never came before skipping it", minimum=0.0, maximum=10.0
    )
    tts_timeout_s: float = setting(10.0, "longest download of one TTS file", minimum=1.0, maximum=120.0)
    tts_max_bytes: int = setting(2_000_000, "largest TTS file", minimum=10_000, maximum=50_000_000)
    tts_max_audio_s: float = setting(120.0, "longest sentence of speech", minimum=1.0, maximum=600.0)
    ready_timeout_s: float = setting(
        10.0, "wait for the server's 1008 after connecting", minimum=1.0, maximum=60.0
    )
    reply_idle_s: float = setting(
        20.0,
        "end a reply the server went quiet on without agent_stop (1006), after this long",
        minimum=2.0,
        maximum=300.0,
    )
    auth_retry_s: float = setting(
        900.0,
        "after the key or token is refused (2003/2004), try again only after this long",
        minimum=60.0,
        maximum=86400.0,
    )


@dataclass(frozen=True)
class EspaiDeviceSettings:
    """An ESP-AI server (the open-source esp-ai Node server or the hosted one), spoken to as a device."""

    url: str = setting(
        "", "the server's device socket, e.g. ws://192.168.1.10:8088 (required for kind = 'espai')",
        url=WEBSOCKET_SCHEMES,
    )  # fmt: skip
    api_key: str = setting("", "the agent's api_key, if the server checks one (secret: prefer "
                           "COMPANION_ESPAI_DEVICE_KEY)")  # fmt: skip
    device_id: str = setting("", "device_id sent to the server; empty = this machine's MAC (as for xiaozhi)")
    ext: dict[str, Any] = setting(
        {}, "the firmware's ext1..ext7 query values, e.g. { ext2 = 'room-1' }; ext1 defaults to api_key"
    )
    client_version: str = setting("2.87.50", "firmware version announced as `v` (the server's behaviour "
                                  "depends on it; 2.86 and later acknowledge session stops)")  # fmt: skip
    audio_buffer_size: int = setting(
        20480, "AUDIO_BUFFER_SIZE: the most MP3 bytes the server sends ahead", minimum=1024, maximum=1 << 20
    )
    little_rom: bool = setting(
        True, "LITTLE_ROM=1: the server skips the wake-up cue and greeting it would send for caching"
    )
    tls_ca: str = setting("", "PEM file of a CA to trust for wss:// (self-hosted servers)")
    ready_timeout_s: float = setting(
        15.0, "wait for the server's stc_time (its configuration built) after connecting", minimum=1.0,
        maximum=120.0,
    )  # fmt: skip
    reply_idle_s: float = setting(
        20.0, "end a reply the server went quiet on without an end frame, after this long", minimum=2.0,
        maximum=300.0,
    )  # fmt: skip
    sentence_max_bytes: int = setting(
        2_000_000, "largest MP3 stream of one sentence", minimum=10_000, maximum=50_000_000
    )
    auth_retry_s: float = setting(
        900.0, "after auth_fail or an account error, try again only after this long", minimum=60.0,
        maximum=86400.0,
    )  # fmt: skip


@dataclass(frozen=True)
class BridgeSettings:
    """The ESP32 serial bridge for LEDs, button and optional microphone."""

    port: str = setting("", "'' = off, 'auto' = detect by USB id, or a serial device path")
    baudrate: int = setting(921600, "UART speed (ignored by USB-CDC and ptys)", minimum=9600, maximum=4000000)
    usb_ids: list[str] = setting(
        [], "extra USB ids that port = 'auto' accepts, as hex 'VID:PID' or 'VID' (e.g. '303a:1001')"
    )
    timeout_s: float = setting(
        3.0, "the board counts as gone after this long without a frame (it is pinged every second)",
        minimum=1.5, maximum=60,
    )  # fmt: skip


@dataclass(frozen=True)
class LedSettings:
    """How states and emotions look."""

    brightness: int = setting(60, "LED brightness 0-100", minimum=0, maximum=100)
    show_emotions: bool = setting(True, "tint the speaking animation with the agent's emotion")
    idle_color: str = setting(
        "",
        "lamp colour while idle as '#RRGGBB' (e.g. '#201008'); '' = LEDs off",
        pattern=(r"#?[0-9a-fA-F]{6}", "a colour like '#ff8000'"),
    )


@dataclass(frozen=True)
class TelemetrySettings:
    """Per-turn records and metrics."""

    enabled: bool = setting(True, "append one JSON line per turn to turns.jsonl in the state directory")
    max_bytes: int = setting(5_000_000, "rotate turns.jsonl at this size", minimum=10_000)
    prometheus_port: int = setting(
        0, "0 = off; else serve metrics on 127.0.0.1:<port>", minimum=0, maximum=65535
    )
    keep_files: int = setting(3, "rotated files kept (turns.jsonl.1 …)", minimum=0, maximum=50)
    label: str = setting(
        "", "free text stored in every record, e.g. 'jabra headset, kitchen, 4G'; the report groups by it"
    )
    record_text: bool = setting(True, "store the first transcript's text in each record")


@dataclass(frozen=True)
class LogSettings:
    """Logging."""

    level: str = setting("info", "log level", choices=("debug", "info", "warning", "error"))
    format: str = setting(
        "auto",
        "'journal' (<N> priority prefixes, no timestamps), 'text', or 'auto' (journal under systemd)",
        choices=("auto", "journal", "text"),
    )
    wire: bool = setting(
        False, "also log every websocket/MQTT frame, text up to 4 KiB each (large; secrets are still masked)"
    )


@dataclass(frozen=True)
class Settings:
    """The whole configuration; one attribute per TOML section."""

    audio: AudioSettings = field(default_factory=AudioSettings)
    vad: VadSettings = field(default_factory=VadSettings)
    backend: BackendSettings = field(default_factory=BackendSettings)
    wake_word: WakeWordSettings = field(default_factory=WakeWordSettings)
    xiaozhi: XiaozhiSettings = field(default_factory=XiaozhiSettings)
    chatbot_v3: ChatbotV3Settings = field(default_factory=ChatbotV3Settings)
    espai_device: EspaiDeviceSettings = field(default_factory=EspaiDeviceSettings)
    bridge: BridgeSettings = field(default_factory=BridgeSettings)
    leds: LedSettings = field(default_factory=LedSettings)
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    log: LogSettings = field(default_factory=LogSettings)
    source: str = "<defaults>"


SECTIONS: dict[str, type] = {
    name: hint for name, hint in typing.get_type_hints(Settings).items() if name != "source"
}


def config_search_path() -> list[Path]:
    """Where a config file is looked for when --config is not given, first match wins."""
    paths: list[Path] = []
    env = os.environ.get("COMPANION_CONFIG")
    if env:
        paths.append(Path(env))
    if os.environ.get("CONFIGURATION_DIRECTORY"):  # systemd ConfigurationDirectory=
        paths.append(Path(os.environ["CONFIGURATION_DIRECTORY"].split(":")[0]) / "companion.toml")
    paths.append(Path("/etc/companion/companion.toml"))
    paths.append(Path.home() / ".config" / "companion" / "companion.toml")
    return paths


def find_config(explicit: str | None) -> Path | None:
    """The config file to load, or None to run on defaults.

    A file named explicitly (by --config or $COMPANION_CONFIG) must exist: running on defaults
    because of a typo in a path would go unnoticed.
    """
    if explicit:
        return _named_file(Path(explicit), "give an existing file to --config", explicit)
    env = os.environ.get("COMPANION_CONFIG")
    if env:
        return _named_file(Path(env), "fix or unset COMPANION_CONFIG", f"COMPANION_CONFIG={env}")
    for path in config_search_path():  # $COMPANION_CONFIG is unset here
        if path.is_file():
            return path
    return None


def _named_file(path: Path, fix: str, shown: str) -> Path:
    if path.is_dir():
        raise ConfigError(f"{shown}: is a directory, not a config file ({fix})")
    if not path.exists():
        raise ConfigError(f"{shown}: config file not found ({fix})")
    return path


def load_settings(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Settings:
    """Load, merge `--set SECTION.KEY=VALUE` overrides, validate, then apply the secrets from systemd
    credentials and the environment; raises ConfigError naming the source and the key."""
    file_path = find_config(str(path) if path else None)
    data: dict[str, Any] = {}
    source = "<defaults>"
    if file_path is not None:
        source = str(file_path)
        data = _parse(_read_text(file_path), source)
        settings_from_mapping(data, source)  # the file's own errors name the file
    overrides = list(overrides)
    for item in overrides:
        _apply_override(data, item)
    together = source
    if overrides:
        together = "--set" if file_path is None else f"{source} with --set"
    settings = settings_from_mapping(data, source, together=together)
    return _with_secrets(settings)


def _read_text(path: Path) -> str:
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a FIFO or a device would block the read forever
            raise ConfigError(f"{path}: not a regular file; give the path of a TOML file")
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES // 2**20} MiB, not a config file")
    try:
        return raw.decode("utf-8-sig")  # editors on Windows may start the file with a byte order mark
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8 TOML") from None


def _parse(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{source}: not valid TOML: tables or lists nested too deeply") from None


def _apply_override(data: dict[str, Any], item: str) -> None:
    key, sep, raw = item.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not section or not name:
        shown = item if not _is_secret(item.partition("=")[0]) else key
        raise ConfigError(f"--set {shown}: expected SECTION.KEY=VALUE, e.g. --set audio.input=mic.wav")
    where = f"--set {section}.{name}"
    if (section, name) in SECRET_SOURCES or _is_secret(name):
        hint = _secret_hint(section, name)
        raise ConfigError(f"{where}: secrets are not taken on the command line (visible in ps); {hint}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # bare words are strings: --set audio.input=default
    except RecursionError:
        raise ConfigError(f"{where}: value nested too deeply") from None
    if section not in SECTIONS:
        known = ", ".join(f"[{s}]" for s in SECTIONS)
        raise ConfigError(f"{where}: [{section}]: unknown section (known: {known})")
    cls = SECTIONS[section]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if name not in fields:
        raise ConfigError(f"{where}: unknown key (known keys in [{section}]: {', '.join(sorted(fields))})")
    value = _check_value(where, typing.get_type_hints(cls)[name], fields[name].metadata, value)
    data.setdefault(section, {})
    if not isinstance(data[section], dict):
        raise ConfigError(f"--set {item}: [{section}] is not a section")
    data[section][name] = value


def _secret_hint(section: str, name: str) -> str:
    credential, env_var = SECRET_SOURCES.get((section, name), (None, None))
    if credential and env_var:
        return f"use the systemd credential '{credential}' or the environment variable {env_var}"
    if env_var:
        return f"use the environment variable {env_var}"
    return f"put it in the config file as [{section}] {name}"


def _with_secrets(settings: Settings) -> Settings:
    """Settings with each secret taken from its credential, else its environment variable, else the file."""
    from .service.notify import read_secret  # service → logsetup; imported here to keep the config light

    for (section, name), (credential, env_var) in SECRET_SOURCES.items():
        if credential is not None:
            value = read_secret(credential, env_var)
        else:
            value = os.environ.get(env_var) or None
        if value:
            part = dataclasses.replace(getattr(settings, section), **{name: value})
            settings = dataclasses.replace(settings, **{section: part})
    return settings


def settings_from_mapping(
    data: Mapping[str, Any], source: str = "<defaults>", *, together: str | None = None
) -> Settings:
    """Validate a parsed TOML document against the section dataclasses (`together`: the source named
    by errors that only a combination of values shows, e.g. 'FILE with --set')."""
    sections: dict[str, Any] = {}
    for name, value in data.items():
        if name not in SECTIONS:
            known = ", ".join(f"[{s}]" for s in SECTIONS)
            raise ConfigError(f"{source}: [{name}]: unknown section (known: {known})")
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {name}: expected a [{name}] table, got {_describe(value)}")
        sections[name] = _build_section(SECTIONS[name], name, value, source)
    settings = Settings(**sections, source=source)
    _check_together(settings, together or source)
    return settings


def _check_together(settings: Settings, source: str) -> None:
    """Values that are each in range but impossible together."""
    vad = settings.vad
    if vad.start_voiced > vad.start_window:
        raise ConfigError(
            f"{source}: vad.start_voiced ({vad.start_voiced}) is larger than vad.start_window "
            f"({vad.start_window}): speech could never start; make start_voiced ≤ start_window"
        )
    _check_espai(settings, source)
    _check_wake_word(settings, source)
    if settings.audio.input == "bridge" and not settings.bridge.port:
        raise ConfigError(
            f"{source}: audio.input = 'bridge' needs bridge.port ('auto' or a serial device), which is ''"
        )


def _check_wake_word(settings: Settings, source: str) -> None:
    """[wake_word] models: strings, known names or model files (files are looked for only when the
    wake word is the trigger, so a config kept for later still loads)."""
    wake = settings.wake_word
    builtin = MICRO_WAKE_MODELS if wake.engine == "microwakeword" else OPENWAKEWORD_MODELS
    suffix = ".json" if wake.engine == "microwakeword" else ".tflite"
    used = settings.backend.trigger == "wake_word"
    if used and not wake.models:
        raise ConfigError(f"{source}: wake_word.models is empty but backend.trigger = 'wake_word': "
                          f"name at least one model, e.g. models = [\"{builtin[0]}\"]")  # fmt: skip
    for model in wake.models:
        if not isinstance(model, str) or not model.strip():
            raise ConfigError(
                f"{source}: wake_word.models: expected model names or paths, got {_describe(model)}"
            )
        if model in builtin:
            continue
        if "/" not in model and not model.endswith((".json", ".tflite")):
            raise ConfigError(
                f"{source}: wake_word.models: {model!r} is not a built-in {wake.engine} model (built-in: "
                f"{', '.join(builtin)}); for a custom model give the path of its {suffix} file"
            )
        path = Path(model).expanduser()
        if wake.engine == "microwakeword" and path.suffix == ".tflite":
            path = path.with_suffix(".json")  # the manifest beside it says the phrase and the cutoff
        if path.suffix != suffix:
            raise ConfigError(f"{source}: wake_word.models: {model!r}: a custom {wake.engine} model is "
                              f"given as its {suffix} file")  # fmt: skip
        if used and not path.is_file():
            raise ConfigError(f"{source}: wake_word.models: {str(path)!r} does not exist (fix the path, or "
                              f"use a built-in model: {', '.join(builtin)})")  # fmt: skip


def _check_espai(settings: Settings, source: str) -> None:
    """[espai_device]: a URL when it is the backend, and ext keys the firmware knows."""
    espai = settings.espai_device
    for key, value in espai.ext.items():
        if key not in ESPAI_EXT_KEYS:
            raise ConfigError(
                f"{source}: espai_device.ext.{key}: unknown key (the firmware sends ext1..ext7)"
            )
        if not isinstance(value, str):
            raise ConfigError(f"{source}: espai_device.ext.{key}: expected a string, got {_describe(value)}")
    if settings.backend.kind == "espai" and not espai.url:
        raise ConfigError(
            f"{source}: espai_device.url is empty but backend.kind = 'espai': set it to the ESP-AI server's "
            "device socket, e.g. ws://192.168.1.10:8088"
        )


def _build_section(cls: type, section: str, values: Mapping[str, Any], source: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        where = f"{source}: {section}.{key}"
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{where}: unknown key (known keys in [{section}]: {known})")
        kwargs[key] = _check_value(where, hints[key], fields[key].metadata, value)
    return cls(**kwargs)


def _check_value(where: str, hint: Any, meta: Mapping[str, Any], value: Any) -> Any:
    secret = _is_secret(where.rpartition(".")[2])
    value = _check_type(where, hint, value, secret)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    if isinstance(value, dict | list) and not _all_finite(value):
        raise ConfigError(f"{where}: expected finite numbers, found nan or inf inside")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        expected = " or ".join(repr(c) for c in choices)
        raise ConfigError(f"{where}: expected {expected}, got {value!r}")
    lo, hi = meta.get("minimum"), meta.get("maximum")
    if lo is not None and value < lo:
        raise ConfigError(f"{where}: expected a value ≥ {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise ConfigError(f"{where}: expected a value ≤ {hi}, got {value!r}")
    if value and "url" in meta:
        _check_url(where, value, meta["url"])
    if value and meta.get("host_port"):
        _check_host_port(where, value)
    if value and "pattern" in meta:
        regex, meaning = meta["pattern"]
        if re.fullmatch(regex, value.strip()) is None:
            raise ConfigError(f"{where}: expected {meaning}, got {value!r}")
    return value


def _all_finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_all_finite(v) for v in value)
    return True


def _check_url(where: str, value: str, schemes: tuple[str, ...]) -> None:
    expected = " or ".join(f"{s}://" for s in schemes)
    shown = _shown_url(value)
    try:
        parts = urllib.parse.urlsplit(value)
        port = parts.port  # ValueError when out of 0..65535 or not a number
    except ValueError:
        raise ConfigError(f"{where}: expected a {expected} URL with a port 1..65535, got {shown}") from None
    if parts.scheme.lower() not in schemes or not parts.hostname:
        raise ConfigError(f"{where}: expected a {expected} URL with a host, got {shown}")
    if port == 0:
        raise ConfigError(f"{where}: expected a {expected} URL with a port 1..65535, got {shown}")


def _shown_url(value: str) -> str:
    """A URL for an error message without what may hold a secret: user:password@ and the query."""
    shown = re.sub(r"//[^/?#]*@", "//…@", value, count=1)
    head, query, _ = shown.partition("?")
    return repr(head + ("?…" if query else ""))


def _check_host_port(where: str, value: str) -> None:
    if "://" in value or "/" in value:
        raise ConfigError(f"{where}: expected host[:port] without a scheme or path, got {value!r}")
    try:
        port = urllib.parse.urlsplit(f"//{value}").port
    except ValueError:
        port = 0
    if port == 0 or not urllib.parse.urlsplit(f"//{value}").hostname:
        raise ConfigError(f"{where}: expected host[:port] with a port 1..65535, got {value!r}")


def _check_type(where: str, hint: Any, value: Any, secret: bool = False) -> Any:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _check_type(where, option, value, secret)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {_type_name(hint)}, got {_describe(value, secret)}")
    if hint is type(None):
        if value is None:
            return None
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin is dict or hint is dict:
        if isinstance(value, dict):
            return dict(value)
    elif (origin is list or hint is list) and isinstance(value, list):
        return list(value)
    raise ConfigError(f"{where}: expected {_type_name(hint)}, got {_describe(value, secret)}")


def _type_name(hint: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    if origin is dict or hint is dict:
        return "a table"
    if origin is list or hint is list:
        return "a list"
    return str(hint)


def _describe(value: Any, secret: bool = False) -> str:
    """What was found, for an error; a secret key's value is never shown, only its kind."""
    kinds = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }
    kind = kinds.get(type(value), type(value).__name__)
    return f"{kind} (value not shown: a secret)" if secret else f"{kind} {value!r}"


def describe_settings(settings: Settings) -> dict[str, dict[str, Any]]:
    """Settings as plain data, for `companion config show` and debug logs (secrets masked)."""
    out: dict[str, dict[str, Any]] = {}
    for name in SECTIONS:
        section = getattr(settings, name)
        out[name] = {
            f.name: ("***" if _is_secret(f.name) and getattr(section, f.name) else getattr(section, f.name))
            for f in dataclasses.fields(section)
        }
    return out


def _is_secret(key: str) -> bool:
    return any(word in key for word in ("token", "key", "secret", "password"))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }" if value else "{}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def default_toml() -> str:
    """The fully commented default configuration (what configs/companion.toml holds)."""
    lines = [
        "# companion configuration. Every key is shown with its default; delete what you don't change.",
        "# Search order: --config, $COMPANION_CONFIG, /etc/companion/companion.toml,",
        "# ~/.config/companion/companion.toml. Override one key with --set SECTION.KEY=VALUE.",
        "# Secrets (tokens, API keys) are better given as environment variables or systemd credentials.",
    ]
    for name, cls in SECTIONS.items():
        lines += ["", f"[{name}]", f"# {(cls.__doc__ or '').strip()}"]
        for f in dataclasses.fields(cls):
            meta = f.metadata
            limits = []
            if "choices" in meta:
                limits.append("one of " + ", ".join(_toml_value(c) for c in meta["choices"]))
            if "known" in meta:
                limits.append("known: " + ", ".join(_toml_value(c) for c in meta["known"]))
            if "minimum" in meta or "maximum" in meta:
                lo, hi = meta.get("minimum", ""), meta.get("maximum", "")
                limits.append(f"range {lo}..{hi}")
            if "url" in meta:
                limits.append(" or ".join(f"{scheme}://" for scheme in meta["url"]) + " URL or ''")
            suffix = f" ({'; '.join(limits)})" if limits else ""
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[operator]
            lines.append(f"# {meta.get('doc', '')}{suffix}")
            lines.append(f"{f.name} = {_toml_value(default)}")
    return "\n".join(lines) + "\n"
