"""The one place that builds things: settings → capture, speaker, backend, bridge, conversation, and
the tasks that run them. Tests wire real local peers by giving different settings, not by patching.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..audio.capture import AudioSource, DeviceCapture, QueueSource, WavSource
from ..audio.echo import EchoCanceller, attach_canceller, echo_path
from ..audio.endpointer import Endpointer
from ..audio.speaker import AudioSink, DeviceSpeaker, WavSpeaker
from ..config import Settings
from ..errors import AudioDeviceError, ConfigError
from ..events import (
    Backend,
    BackendEvent,
    DeviceState,
    Disconnected,
    EventSink,
    ListenMode,
    RestartRequested,
    ToolRequest,
)
from ..fieldtest.telemetry import Telemetry, TurnRecord, build_telemetry
from ..indicators import Indicator, NullIndicator
from ..service.notify import Notifier, SignalHandlers, Watchdog
from ..service.state_dir import state_dir
from ..tools.server import ToolServer
from .clock import LoopClock
from .conversation import Conversation, Turn
from .cues import Cues
from .runtime_controls import RuntimeControls
from .supervisor import Supervisor
from .wake import WakeTrigger

log = logging.getLogger(__name__)


def is_wav_path(spec: str) -> bool:
    """True when an --input/--output value names a WAV file rather than a sound device."""
    return spec.lower().endswith(".wav")


def build_source(settings: Settings) -> AudioSource:
    """The microphone named by audio.input (device, WAV file, or 'bridge')."""
    spec = settings.audio.input
    if spec == "bridge":
        if not settings.bridge.port:
            raise ConfigError(f"{settings.source}: audio.input: 'bridge' needs [bridge] port to be set")
        return QueueSource()
    if is_wav_path(spec):
        return WavSource(spec, loop_file=settings.audio.input_loop)
    # Voice barge-in needs speech onsets noticed fast; otherwise fewer, longer blocks save idle CPU.
    block_ms = 20 if settings.audio.echo in ("headset", "aec") else 60
    return DeviceCapture(
        spec, settings.audio.device_rate, block_ms=block_ms, input_channel=settings.audio.input_channel
    )


def build_sink(settings: Settings) -> AudioSink:
    """The speaker named by audio.output (device or WAV file to write)."""
    spec = settings.audio.output
    if is_wav_path(spec):
        return WavSpeaker(spec, settings.audio.playback_rate, settings.audio.prebuffer_ms)
    return DeviceSpeaker(
        spec, settings.audio.playback_rate, settings.audio.prebuffer_ms, settings.audio.device_rate
    )


def build_backend(
    settings: Settings,
    sink: EventSink,
    on_activation: Callable[[Any], None] | None = None,
    busy: Callable[[], bool] | None = None,
) -> Backend:
    """The voice agent backend chosen by backend.kind; `busy` says the device is mid-turn."""
    if settings.backend.kind == "chatbot_v3":
        from ..backends.chatbot_v3.backend import ChatbotV3Backend

        return ChatbotV3Backend(
            settings.chatbot_v3,
            sink,
            playback_rate=settings.audio.playback_rate,
            reconnect_max_s=settings.backend.reconnect_max_s,
        )
    if settings.backend.kind == "espai":
        from ..backends.espai import EspaiBackend

        return EspaiBackend(
            settings,
            sink,
            playback_rate=settings.audio.playback_rate,
            reconnect_max_s=settings.backend.reconnect_max_s,
        )
    from ..backends.xiaozhi.backend import XiaozhiBackend

    return XiaozhiBackend(settings, sink, on_activation=on_activation, busy=busy)


def listen_mode_for(settings: Settings) -> ListenMode:
    """xiaozhi takes its mode from config; chat_bot_v3 has no server VAD and ESP-AI's ends an utterance
    only after 1.5 s of silence, so for both our endpointer ends it (manual)."""
    if settings.backend.kind in ("chatbot_v3", "espai"):
        return ListenMode.MANUAL
    return ListenMode(settings.xiaozhi.listen_mode)


def follow_conversation(indicator: Indicator, conv: Conversation) -> None:
    """Let the indicator show what the conversation decides: state, voice while listening, emotion."""
    indicator.show_state(conv.state)
    conv.state_listeners.add(lambda old, new: indicator.show_state(new, conv.voice_active))
    conv.voice_listeners.add(lambda active: indicator.show_state(conv.state, active))
    conv.emotion_listeners.add(indicator.show_emotion)


@dataclass
class RunOptions:
    """How a run ends and what it prints."""

    turns: int | None = None  # exit 0 after this many completed turns
    on_turn: Callable[[Turn], None] | None = None
    on_state: Callable[[DeviceState, DeviceState], None] | None = None
    console_button: bool = True  # Enter on a terminal = button press
    service: bool = False  # systemd notify, watchdog, SIGTERM/SIGHUP handling
    cues: bool = True  # spoken prompts and earcons
    capture: bool = True  # False for text turns (`companion say`): no microphone is opened
    extra_tasks: list[Callable[[], Any]] = field(default_factory=list)
    # SIGHUP asks this first: False = the new configuration was refused, so this run goes on untouched
    check_reload: Callable[[], bool] | None = None


class Runtime:
    """Builds the parts from settings and supervises their tasks."""

    def __init__(self, settings: Settings, options: RunOptions | None = None) -> None:
        self.settings = settings
        self.options = options or RunOptions()
        self.conversation: Conversation | None = None
        self.backend: Backend | None = None
        self.source: AudioSource | None = None
        self.sink: AudioSink | None = None
        self.started = time.monotonic()
        self.ready_at: float | None = None
        self._stop = asyncio.Event()
        self._exit_code = 0
        self.fatal: ConfigError | None = None  # why a part could not run at all
        self.supervisor: Supervisor | None = None
        self._capture_failed = False
        self.tools: ToolServer | None = None
        self.controls: RuntimeControls | None = None
        self._tool_tasks: set[asyncio.Task[None]] = set()
        self.reload_requested = False
        self.reconnects = 0
        self._turn_reconnects = 0
        self._turn_underruns = 0
        self.telemetry: Telemetry | None = None
        self.cues: Cues | None = None
        self.notifier = Notifier()
        self.indicator: Indicator = NullIndicator()
        self.wake: WakeTrigger | None = None  # with backend.trigger = "wake_word"
        self.echo: EchoCanceller | None = None  # audio.echo = "aec": the microphone's echo canceller

    def stop(self, code: int = 0) -> None:
        """Ask the run to finish (SIGTERM, --turns reached)."""
        self._exit_code = code
        self._stop.set()

    def reload(self) -> None:
        """SIGHUP: finish this run so the caller starts again with the re-read configuration."""
        log.info("reloading the configuration")
        self.reload_requested = True
        self._stop.set()

    def _hup(self) -> None:
        """SIGHUP: reload only a configuration that loads; a refused one leaves the turn and parts alone."""
        if self.options.check_reload is None or self.options.check_reload():
            self.reload()

    def _dispatch(self, event: BackendEvent) -> None:
        if isinstance(event, ToolRequest):
            if self.tools is not None and self.backend is not None:
                task = asyncio.get_running_loop().create_task(
                    self.tools.serve(event.payload, self.backend.send_tool_result)
                )
                self._tool_tasks.add(task)
                task.add_done_callback(self._tool_tasks.discard)
            return
        if isinstance(event, RestartRequested):
            if not event.reconnect_only:
                log.warning("the server asked for a reboot (%s): restarting", event.reason)
                self.reload()  # the CLI builds everything anew, as a reboot would
            return
        if isinstance(event, Disconnected):
            self.reconnects += 1
        assert self.conversation is not None
        try:
            self.conversation.on_backend_event(event)
        except AudioDeviceError as exc:  # the speaker, not the network: the channel must not reconnect
            log.error("%s", exc)
        except Exception:  # a bug in handling one event must not end the session
            log.exception("handling %s failed; the session goes on", type(event).__name__)

    def _build_indicator(self, conv: Conversation) -> Indicator:
        """The LED bridge (or nothing): it follows the state machine, and its button drives turns."""
        settings = self.settings
        if not settings.bridge.port:
            return NullIndicator()
        from ..indicators.bridge import BridgeIndicator

        mic = self.source.push if isinstance(self.source, QueueSource) else None  # audio.input = "bridge"
        indicator = BridgeIndicator.from_settings(settings.bridge, settings.leds, conv.on_button, mic)
        indicator.set_volume(settings.audio.volume)
        follow_conversation(indicator, conv)
        return indicator

    def _activation_code(self, activation: Any) -> None:
        if self.cues is not None and activation.code:
            self.cues.activation_code(activation.code)

    def _tell_service_manager(self, old: DeviceState, new: DeviceState) -> None:
        self.notifier.status(new.value)

    def _turn_done(self, turn: Turn) -> None:
        if self.options.on_turn is not None:
            self.options.on_turn(turn)
        if self.telemetry is not None and self.conversation is not None and self.sink is not None:
            underruns = self.sink.buffer.underruns
            self.telemetry.record(
                TurnRecord.from_turn(
                    turn,
                    backend=self.settings.backend.kind,
                    mode=self.conversation.listen_mode.value,
                    underruns=underruns - self._turn_underruns,
                    reconnects=self.reconnects - self._turn_reconnects,
                )
            )
            self._turn_underruns, self._turn_reconnects = underruns, self.reconnects
        conv = self.conversation
        if self.options.turns is not None and conv is not None and conv.turns.completed >= self.options.turns:
            log.info("%d turn(s) completed; exiting", conv.turns.completed)
            self.stop(0)

    def audio_drops(self) -> dict[str, int]:
        """Running totals of audio lost, by where (exported as companion_audio_dropped_total)."""
        conv, source, sink = self.conversation, self.source, self.sink
        return {
            "capture_ring": getattr(source, "overflows", 0),  # the loop fell a whole ring behind
            "capture_device": getattr(source, "device_overflows", 0),  # PortAudio's input overflow flag
            "speaker_device": getattr(sink, "device_underflows", 0),  # PortAudio's output underflow flag
            "uplink_queue": conv.uplink.dropped if conv is not None else 0,
            "reply_audio": conv.playback.dropped if conv is not None else 0,
        }

    async def run(self) -> int:
        """Run until stopped; returns the exit status."""
        settings = self.settings
        detector = None
        if settings.backend.trigger == "wake_word" and self.options.capture:
            from ..audio.wakeword import build_detector  # the engine loads only when it is used

            # First: a model that does not load stops the run before any device opens.
            detector = build_detector(settings.wake_word)
        self.sink = build_sink(settings)
        self.source = build_source(settings) if self.options.capture else None
        self.backend = build_backend(
            settings,
            self._dispatch,
            self._activation_code,
            busy=lambda: self.conversation is not None and self.conversation.busy,
        )
        endpointer = Endpointer(settings.vad.effective(settings.audio.echo), emit_quiet=True)
        path = echo_path(settings)
        (log.warning if path.fell_back else log.info)("echo: %s", path.reason)
        self.echo = attach_canceller(path, self.sink) if self.source is not None else None
        conv = Conversation(
            self.backend,
            self.sink,
            endpointer,
            dataclasses.replace(settings.audio, echo=path.mode),
            listen_mode=listen_mode_for(settings),
            trigger=settings.backend.trigger,
            clock=LoopClock(),
        )
        self.conversation = conv
        if detector is not None:
            self.wake = WakeTrigger(detector, conv, settings.wake_word)
        conv.turns.listeners.add(self._turn_done)
        if self.options.on_state is not None:
            conv.state_listeners.add(self.options.on_state)
        conv.state_listeners.add(self._tell_service_manager)
        self.cues = Cues(conv, settings.audio.prompts_language, enabled=self.options.cues)
        conv.state_listeners.add(self.cues.on_state)
        self.indicator = self._build_indicator(conv)
        self.controls = RuntimeControls(
            volume=settings.audio.volume,
            brightness=settings.leds.brightness,
            sink=self.sink,
            conversation=conv,
            indicator=self.indicator,
            restart=self.reload,
            backend_name=settings.backend.kind,
            clock=conv.clock,
            reboot_allowed=settings.xiaozhi.reboot_action != "ignore",
        )
        self.tools = ToolServer.for_device(
            self.controls, name=settings.xiaozhi.board_name, leds=bool(settings.bridge.port)
        )
        if settings.telemetry.enabled or settings.telemetry.prometheus_port:
            try:
                self.telemetry = build_telemetry(settings.telemetry, state_dir())
            except OSError as exc:
                log.error("telemetry is off: %s", exc)
            if self.telemetry is not None and self.telemetry.exporter is not None:
                self.telemetry.exporter.watch_drops(self.audio_drops)
                self.telemetry.exporter.watch_tasks(asyncio.get_running_loop())
        signals = None
        if self.options.service:
            signals = SignalHandlers(
                asyncio.get_running_loop(),
                on_term=lambda: self.stop(0),
                on_hup=self._hup,
                notifier=self.notifier,
            ).install()
        supervisor = Supervisor(
            on_fatal=self._fatal,
            on_down=lambda part, reason: conv.part_down(part, reason) if part == "microphone" else None,
            on_up=conv.part_up,
        )
        self.supervisor = supervisor
        backend, indicator = self.backend, self.indicator
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(supervisor.run("backend", backend.run), name="backend"),
                    group.create_task(supervisor.run("conversation", conv.run), name="conversation"),
                ]
                if self.source is not None:
                    tasks.append(
                        group.create_task(supervisor.run("microphone", self._capture), name="capture")
                    )
                tasks.append(group.create_task(supervisor.run("bridge", indicator.run), name="bridge"))
                if self.wake is not None:
                    tasks.append(group.create_task(supervisor.run("wake word", self.wake.run), name="wake"))
                if self.options.console_button and sys.stdin is not None and sys.stdin.isatty():
                    tasks.append(group.create_task(self._console_button(), name="console"))
                for make in self.options.extra_tasks:
                    tasks.append(group.create_task(make()))
                if self.options.service:
                    tasks.append(
                        group.create_task(Watchdog(self.healthy, self.notifier).run(), name="watchdog")
                    )
                self.ready_at = time.monotonic()
                log.info("ready in %.3f s", self.ready_at - self.started)
                self.notifier.ready(conv.state.value)
                await self._stop.wait()
                self.notifier.stopping("reloading" if self.reload_requested else "stopping")
                await conv.close()
                for task in tasks:
                    task.cancel()
        finally:
            await self._shutdown()
            if signals is not None:
                signals.cancel_deadline()
                signals.remove()
            if self.telemetry is not None:
                self.telemetry.close()
        if self.fatal is not None:
            raise self.fatal  # the CLI prints it as one line and exits with its status
        return self._exit_code

    def _fatal(self, exc: ConfigError) -> None:
        """A part cannot run with this configuration: stop, and let the CLI say why in one line."""
        self.fatal = exc
        self.stop(exc.exit_code)

    async def _capture(self) -> None:
        """Feed the conversation from the microphone; after a failure the device is opened again by
        name (a replugged USB mic, a restarted sound server)."""
        assert self.source is not None and self.conversation is not None
        if isinstance(self.source, WavSource):
            # A file is a recording of someone talking: start it once the daemon can listen, or its
            # first words would fall into the connecting state.
            await self.conversation.wait_for_state(DeviceState.IDLE)
        if isinstance(self.source, DeviceCapture) and self._capture_failed:
            with contextlib.suppress(Exception):
                await self.source.close()
            self.source = build_source(self.settings)
        self._capture_failed = True  # until it delivers, a return or an error means it failed
        first = True
        async for block in self.source.blocks():
            if first:
                first = False
                assert self.supervisor is not None
                self.supervisor.up("microphone")
            if self.echo is not None:
                block = self.echo.process(block, getattr(self.source, "block_time", None))
            if self.wake is not None:
                self.wake.feed(block)  # the wake word is listened for in what the canceller left
            self.conversation.on_audio(block)

    async def _console_button(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        with contextlib.suppress(Exception):
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
            while line := await reader.readline():
                del line
                if self.conversation is not None:
                    self.conversation.on_button("press")

    async def _shutdown(self) -> None:
        """Close everything at once, each with a bound, so SIGTERM ends the process well inside 2 s."""
        closers = [
            self.backend.close() if self.backend else None,
            self.source.close() if self.source else None,
            self.sink.shutdown() if self.sink else None,
        ]

        async def bounded(closer: Any) -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(closer, 0.8)

        await asyncio.gather(*(bounded(c) for c in closers if c is not None))

    def healthy(self) -> bool:
        """For the watchdog: audio callbacks are arriving and the loop is turning."""
        now = time.monotonic()
        return (self.source is None or self.source.healthy(now)) and (
            self.sink is None or self.sink.healthy(now)
        )
