"""Field-test telemetry: one record per turn, appended as a JSON line to a size-rotated file, and the
same figures as Prometheus counters and latency histograms (optional, loopback only).

Times in a record are milliseconds from the turn's start (monotonic clock), so they survive NTP steps;
`wall_start` (Unix seconds) places the turn on the calendar.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import itertools
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
FILE_NAME = "turns.jsonl"

# The moments of a turn, in the order they normally happen.
MARKS: tuple[str, ...] = (
    "speech_start",
    "speech_end",
    "listen_sent",
    "first_transcript",
    "emotion",
    "first_reply_audio",
    "first_sample_played",
    "turn_end",
)
# Names the conversation uses for some marks.
MARK_ALIASES = {"stt": "first_transcript"}


@dataclass(frozen=True)
class Stage:
    """A latency measured between two marks of a turn."""

    key: str
    start: str
    end: str
    label: str


STAGES: tuple[Stage, ...] = (
    Stage("stt", "speech_end", "first_transcript", "end of speech → first transcript"),
    Stage("reply", "speech_end", "first_reply_audio", "end of speech → first reply audio"),
    Stage("playout", "first_reply_audio", "first_sample_played", "first reply audio → first sample played"),
    Stage("heard", "speech_end", "first_sample_played", "end of speech → first sample played"),
    Stage("listen_to_stt", "listen_sent", "first_transcript", "listen sent → first transcript"),
    Stage("speaking", "first_sample_played", "turn_end", "first sample played → turn end"),
)


@dataclass
class TurnRecord:
    """What happened in one turn, for the JSONL file, the report and the metrics."""

    backend: str
    mode: str
    turn_id: str
    wall_start: float
    speech_start: float | None = None
    speech_end: float | None = None
    listen_sent: float | None = None
    first_transcript: float | None = None
    transcript: str = ""
    emotion: float | None = None
    emotion_name: str = ""
    first_reply_audio: float | None = None
    first_sample_played: float | None = None
    turn_end: float | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    underruns: int = 0
    reconnects: int = 0
    errors: list[str] = field(default_factory=list)
    outcome: str = ""
    label: str = ""

    def offsets(self) -> dict[str, float]:
        """The marks that happened, in ms from the turn's start."""
        return {name: value for name in MARKS if (value := getattr(self, name)) is not None}

    def latency(self, stage: Stage) -> float | None:
        """Milliseconds between a stage's two marks, or None when either did not happen."""
        start, end = getattr(self, stage.start), getattr(self, stage.end)
        if start is None or end is None:
            return None
        return end - start

    def latencies(self) -> dict[str, float]:
        """Every stage that can be measured in this turn, in ms."""
        return {s.key: value for s in STAGES if (value := self.latency(s)) is not None}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (with the schema version as `v`)."""
        data = {"v": SCHEMA_VERSION, **dataclasses.asdict(self)}
        for name in MARKS:
            if data[name] is not None:
                data[name] = round(float(data[name]), 1)
        data["wall_start"] = round(self.wall_start, 3)
        return data

    def to_json(self) -> str:
        """One JSON line, no newline."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TurnRecord:
        """Rebuild a record; unknown keys (from newer versions) are ignored. Raises ValueError when
        a required field is missing or a field has the wrong type."""
        if not isinstance(data, Mapping):
            raise ValueError("a turn record must be a JSON object")
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                continue
            kwargs[f.name] = _coerce(f.name, data[f.name])
        for required in ("backend", "mode", "turn_id", "wall_start"):
            if required not in kwargs:
                raise ValueError(f"missing {required!r}")
        return cls(**kwargs)

    @classmethod
    def from_turn(
        cls,
        turn: TurnLike,
        *,
        backend: str,
        mode: str,
        underruns: int = 0,
        reconnects: int = 0,
        label: str = "",
        record_text: bool = True,
    ) -> TurnRecord:
        """Build a record from the conversation's turn (its marks are monotonic seconds)."""
        offsets: dict[str, float] = {}
        for name, when in turn.marks.items():
            key = MARK_ALIASES.get(name, name)
            if key in MARKS:
                offsets[key] = round((when - turn.started) * 1000, 1)
        return cls(
            backend=backend,
            mode=mode,
            turn_id=str(turn.number),
            wall_start=turn.wall_start,
            transcript=turn.transcript if record_text else "",
            emotion_name=turn.emotion,
            bytes_up=turn.bytes_up,
            bytes_down=turn.bytes_down,
            underruns=underruns,
            reconnects=reconnects,
            errors=list(turn.errors),
            outcome=turn.outcome,
            label=label,
            **offsets,
        )


class TurnLike(Protocol):
    """What `TurnRecord.from_turn` reads from the conversation's Turn."""

    number: int
    started: float
    wall_start: float
    marks: dict[str, float]
    transcript: str
    emotion: str
    outcome: str
    bytes_up: int
    bytes_down: int
    errors: list[str]


_FLOAT_OR_NONE = set(MARKS)
_INTS = {"bytes_up", "bytes_down", "underruns", "reconnects"}
_STRS = {"backend", "mode", "turn_id", "transcript", "emotion_name", "outcome", "label"}


def _coerce(name: str, value: Any) -> Any:
    if name in _FLOAT_OR_NONE:
        if value is None:
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif name == "wall_start":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif name in _INTS:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif name in _STRS:
        if isinstance(value, str):
            return value
        if name == "turn_id" and isinstance(value, int):
            return str(value)
    elif name == "errors" and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(f"{name}: unexpected value {value!r}")


# ---------------------------------------------------------------------------------------- the file


def rotated_paths(path: Path, keep: int) -> list[Path]:
    """`path` and its rotated copies, oldest first: turns.jsonl.3, .2, .1, turns.jsonl."""
    return [path.with_name(f"{path.name}.{n}") for n in range(keep, 0, -1)] + [path]


class TelemetryWriter:
    """Appends one JSON line per turn; when the file would pass `max_bytes` it is rotated
    (turns.jsonl → turns.jsonl.1 → … → .keep, the oldest dropped). Files are mode 0600.

    A write is one small append (well under a millisecond), so it is done on the loop. Errors are
    logged once and counted, never raised: telemetry must not take the voice loop down.
    """

    def __init__(self, path: str | Path, max_bytes: int = 5_000_000, keep: int = 3) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if keep < 0:
            raise ValueError("keep must be ≥ 0")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep = keep
        self.written = 0
        self.failures = 0

    def append(self, record: TurnRecord) -> bool:
        """Write the record; True on success."""
        line = (record.to_json() + "\n").encode("utf-8")
        try:
            self._rotate_if_needed(len(line))
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                if os.fstat(fd).st_mode & 0o077:
                    os.fchmod(fd, 0o600)  # a file made by hand or by an older version
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as exc:
            self.failures += 1
            if self.failures == 1:
                log.warning("cannot write telemetry to %s: %s (further failures are counted)", self.path, exc)
            return False
        self.written += 1
        return True

    def _rotate_if_needed(self, incoming: int) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size == 0 or size + incoming <= self.max_bytes:
            return
        for stale in existing_files(self.path)[:-1]:  # beyond `keep` (e.g. after keep_files was lowered)
            if int(stale.name.rsplit(".", 1)[1]) >= self.keep:
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()
        if self.keep == 0:
            self.path.unlink()
            return
        paths = rotated_paths(self.path, self.keep)  # oldest first
        for older, newer in itertools.pairwise(paths):
            with contextlib.suppress(FileNotFoundError):
                os.replace(newer, older)


@dataclass
class ReadResult:
    """Records read back, oldest first, and how many lines were not valid records."""

    records: list[TurnRecord]
    skipped: int = 0
    files: list[Path] = field(default_factory=list)


def existing_files(path: Path) -> list[Path]:
    """`path` and every rotated copy of it that exists (turns.jsonl.N for any N), oldest first."""
    rotated: list[tuple[int, Path]] = []
    if path.parent.is_dir():
        prefix = path.name + "."
        for candidate in path.parent.iterdir():
            suffix = candidate.name.removeprefix(prefix)
            if candidate.name.startswith(prefix) and suffix.isdigit() and candidate.is_file():
                rotated.append((int(suffix), candidate))
    files = [p for _, p in sorted(rotated, reverse=True)]
    return files + ([path] if path.is_file() else [])


def read_turns(path: str | Path, since: float | None = None) -> ReadResult:
    """Read `path` and its rotated copies, oldest first; malformed lines are skipped and counted.
    `since` (Unix seconds) drops older turns."""
    result = ReadResult(records=[])
    for candidate in existing_files(Path(path)):
        result.files.append(candidate)
        for record in _read_lines(candidate, result):
            if since is None or record.wall_start >= since:
                result.records.append(record)
    return result


def _read_lines(path: Path, result: ReadResult) -> Iterator[TurnRecord]:
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield TurnRecord.from_dict(json.loads(line))
            except (ValueError, TypeError) as exc:
                result.skipped += 1
                log.debug("%s:%d: skipped: %s", path, number, exc)


# ---------------------------------------------------------------------------------------- Prometheus

LATENCY_BUCKETS_S = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0)


class MetricsExporter:
    """Prometheus metrics on http://127.0.0.1:<port>/metrics (port 0 picks a free port).

    It has its own registry, so several can live in one process (tests) and nothing else leaks into it.
    """

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.host = host
        self.requested_port = port
        self.port = port
        self.registry = CollectorRegistry(auto_describe=True)
        self._server: Any = None
        self._thread: Any = None
        labels = ("backend", "mode")
        self.turns = Counter(
            "companion_turns", "Turns completed", [*labels, "outcome"], registry=self.registry
        )
        self.bytes_up = Counter("companion_uplink_bytes", "Audio bytes sent", labels, registry=self.registry)
        self.bytes_down = Counter(
            "companion_downlink_bytes", "Audio bytes received", labels, registry=self.registry
        )
        self.underruns = Counter(
            "companion_playback_underruns", "Speaker buffer underruns", labels, registry=self.registry
        )
        self.reconnects = Counter(
            "companion_reconnects", "Reconnects to the voice agent", labels, registry=self.registry
        )
        self.errors = Counter("companion_turn_errors", "Errors within turns", labels, registry=self.registry)
        self.latency = Histogram(
            "companion_stage_latency_seconds",
            "Latency per stage of a turn",
            [*labels, "stage"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )

    def watch_drops(self, read: Callable[[], Mapping[str, int]]) -> None:
        """Export `read()`'s running totals as `companion_audio_dropped_total{where=…}`, read at each
        scrape (capture overflows, device underflows, uplink queue drops …): lost audio is visible."""
        from prometheus_client.core import CounterMetricFamily

        class DropCollector:
            def collect(self) -> Iterator[CounterMetricFamily]:
                family = CounterMetricFamily(
                    "companion_audio_dropped", "Audio blocks or packets lost, by where", labels=["where"]
                )
                for where, count in sorted(read().items()):
                    family.add_metric([where], count)
                yield family

        self.registry.register(DropCollector())

    def watch_tasks(self, loop: asyncio.AbstractEventLoop) -> None:
        """Export the number of asyncio tasks alive on `loop` as `companion_asyncio_tasks`, counted on
        the loop itself at each scrape: tasks that leak show as a rising line. A loop that does not
        answer within a second (stuck, or closed) leaves the gauge out of that scrape."""
        from prometheus_client.core import GaugeMetricFamily

        def count_on_loop() -> int | None:
            answer: concurrent.futures.Future[int] = concurrent.futures.Future()

            def count() -> None:
                with contextlib.suppress(concurrent.futures.InvalidStateError):  # the scrape gave up
                    answer.set_result(len(asyncio.all_tasks(loop)))

            try:
                loop.call_soon_threadsafe(count)
                return answer.result(timeout=1.0)
            except (RuntimeError, TimeoutError):
                answer.cancel()
                return None

        class TaskCollector:
            def collect(self) -> Iterator[GaugeMetricFamily]:
                tasks = count_on_loop()
                if tasks is not None:
                    yield GaugeMetricFamily("companion_asyncio_tasks", "asyncio tasks alive", value=tasks)

        self.registry.register(TaskCollector())

    def start(self) -> None:
        """Start serving (a daemon thread); raises OSError when the port is taken."""
        from prometheus_client import start_http_server

        self._server, self._thread = start_http_server(self.port, addr=self.host, registry=self.registry)
        self.port = self._server.server_port
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    def observe(self, record: TurnRecord) -> None:
        """Add one turn to the counters and histograms."""
        labels = {"backend": record.backend, "mode": record.mode}
        self.turns.labels(**labels, outcome=record.outcome or "unknown").inc()
        self.bytes_up.labels(**labels).inc(max(0, record.bytes_up))
        self.bytes_down.labels(**labels).inc(max(0, record.bytes_down))
        self.underruns.labels(**labels).inc(max(0, record.underruns))
        self.reconnects.labels(**labels).inc(max(0, record.reconnects))
        self.errors.labels(**labels).inc(len(record.errors))
        for stage in STAGES:
            value = record.latency(stage)
            if value is not None and value >= 0:
                self.latency.labels(**labels, stage=stage.key).observe(value / 1000)

    def close(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None


# ---------------------------------------------------------------------------------------- together


class Telemetry:
    """Where the runtime sends each finished turn: the JSONL file and, if on, the metrics."""

    def __init__(
        self,
        writer: TelemetryWriter | None = None,
        exporter: MetricsExporter | None = None,
        *,
        label: str = "",
        record_text: bool = True,
    ) -> None:
        self.writer = writer
        self.exporter = exporter
        self.label = label
        self.record_text = record_text

    def record(self, record: TurnRecord) -> None:
        """Store and export one turn; never raises."""
        if not record.label and self.label:
            record.label = self.label
        if not self.record_text:
            record.transcript = ""
        if self.writer is not None:
            self.writer.append(record)
        if self.exporter is not None:
            try:
                self.exporter.observe(record)
            except Exception:
                log.exception("metrics update failed")

    def close(self) -> None:
        """Stop the metrics server."""
        if self.exporter is not None:
            self.exporter.close()


def build_telemetry(settings: Any, state_directory: Path) -> Telemetry:
    """A Telemetry from `[telemetry]` settings; the metrics server is started when a port is set.

    A metrics port that cannot be bound is logged and leaves the turn records on. Raises OSError when
    the records' file cannot be created (the caller reports it).
    """
    writer = None
    if settings.enabled:
        writer = TelemetryWriter(state_directory / FILE_NAME, settings.max_bytes, settings.keep_files)
    exporter = None
    if settings.prometheus_port:
        exporter = MetricsExporter(settings.prometheus_port)
        try:
            exporter.start()
        except OSError as exc:  # the turn records do not depend on the metrics port
            log.error(
                "metrics are off: cannot serve on 127.0.0.1:%d (%s); the turn records go on",
                settings.prometheus_port, exc.strerror or exc,
            )  # fmt: skip
            exporter = None
    return Telemetry(writer, exporter, label=settings.label, record_text=settings.record_text)
