"""Turn records: JSON round trip, the size-rotated 0600 file, reading back (rotated files included),
Prometheus metrics over real HTTP, and a record made from a real turn through the echo server."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import stat
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from companion.config import TelemetrySettings, settings_from_mapping
from companion.fieldtest.telemetry import (
    MARKS,
    STAGES,
    MetricsExporter,
    TelemetryWriter,
    TurnRecord,
    build_telemetry,
    existing_files,
    read_turns,
)


def record(n: int = 1, **changes: object) -> TurnRecord:
    base = TurnRecord(
        backend="xiaozhi",
        mode="auto",
        turn_id=str(n),
        wall_start=1_750_000_000.0 + n,
        speech_start=0.0,
        speech_end=1800.0,
        listen_sent=2.0,
        first_transcript=2250.5,
        transcript="今天天气怎么样",
        emotion=2260.0,
        emotion_name="happy",
        first_reply_audio=2400.0,
        first_sample_played=2530.0,
        turn_end=5200.0,
        bytes_up=9000,
        bytes_down=21000,
        underruns=1,
        reconnects=0,
        errors=[],
        outcome="completed",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


offsets = st.one_of(st.none(), st.integers(min_value=0, max_value=600_000).map(lambda v: v / 10))
records = st.builds(
    TurnRecord,
    backend=st.sampled_from(["xiaozhi", "chatbot_v3"]),
    mode=st.sampled_from(["auto", "manual", "realtime"]),
    turn_id=st.text(min_size=1, max_size=8),
    wall_start=st.integers(min_value=0, max_value=4_000_000_000_000).map(lambda v: v / 1000),
    **{name: offsets for name in MARKS},
    transcript=st.text(max_size=40),
    emotion_name=st.sampled_from(["", "happy", "sad"]),
    bytes_up=st.integers(0, 10**9),
    bytes_down=st.integers(0, 10**9),
    underruns=st.integers(0, 1000),
    reconnects=st.integers(0, 1000),
    errors=st.lists(st.text(max_size=20), max_size=3),
    outcome=st.sampled_from(["", "completed", "aborted"]),
    label=st.text(max_size=20),
)


@given(records)
def test_a_record_survives_a_json_round_trip(rec: TurnRecord) -> None:
    line = rec.to_json()
    assert "\n" not in line
    assert TurnRecord.from_dict(json.loads(line)) == rec


def test_unknown_fields_from_newer_versions_are_ignored() -> None:
    data = {**record().to_dict(), "v": 2, "wifi_rssi": -61}
    assert TurnRecord.from_dict(data) == record()


@pytest.mark.parametrize(
    "broken",
    [
        {"mode": "auto", "turn_id": "1", "wall_start": 1.0},
        {**record().to_dict(), "bytes_up": "lots"},
        {**record().to_dict(), "speech_end": True},
        {**record().to_dict(), "errors": "oops"},
    ],
)
def test_records_with_missing_or_mistyped_fields_are_refused(broken: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        TurnRecord.from_dict(broken)


def test_stage_latencies_come_from_the_marks_and_skip_what_did_not_happen() -> None:
    rec = record(first_transcript=None)
    latencies = rec.latencies()
    assert latencies["reply"] == 600.0  # 1800 → 2400
    assert latencies["playout"] == 130.0
    assert latencies["heard"] == 730.0
    assert "stt" not in latencies and "listen_to_stt" not in latencies
    assert {s.key for s in STAGES} >= set(latencies)


def test_a_conversation_turn_maps_onto_a_record() -> None:
    from companion.daemon.conversation import Turn

    turn = Turn(number=7, trigger="vad", started=100.0, wall_start=1_750_000_000.5)
    for name, at in (("speech_start", 100.0), ("speech_end", 101.5), ("stt", 101.9), ("turn_end", 104.0)):
        turn.mark(name, at)
    turn.transcript, turn.emotion, turn.outcome = "hello", "happy", "completed"
    turn.bytes_up, turn.bytes_down, turn.errors = 1200, 3400, ["reply timeout"]
    rec = TurnRecord.from_turn(turn, backend="xiaozhi", mode="auto", underruns=2, reconnects=1, label="lab")
    assert (rec.turn_id, rec.speech_end, rec.first_transcript, rec.turn_end) == ("7", 1500.0, 1900.0, 4000.0)
    assert (rec.transcript, rec.emotion_name, rec.errors, rec.label) == (
        "hello",
        "happy",
        ["reply timeout"],
        "lab",
    )
    assert (rec.underruns, rec.reconnects, rec.bytes_up, rec.bytes_down) == (2, 1, 1200, 3400)
    quiet = TurnRecord.from_turn(turn, backend="xiaozhi", mode="auto", record_text=False)
    assert quiet.transcript == ""


# ---------------------------------------------------------------------------------------- the file


def test_the_file_is_private_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        writer = TelemetryWriter(tmp_path / "turns.jsonl")
        assert writer.append(record())
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "turns.jsonl").stat().st_mode) == 0o600


def test_an_existing_world_readable_file_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "turns.jsonl"
    path.write_text(record(1).to_json() + "\n")
    path.chmod(0o644)
    TelemetryWriter(path).append(record(2))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [r.turn_id for r in read_turns(path).records] == ["1", "2"]


@settings(max_examples=30, deadline=None)
@given(count=st.integers(1, 60), max_bytes=st.integers(600, 4000), keep=st.integers(0, 4))
def test_rotation_keeps_the_newest_turns_in_order_within_the_size_limit(
    tmp_path_factory: pytest.TempPathFactory, count: int, max_bytes: int, keep: int
) -> None:
    directory = tmp_path_factory.mktemp("rot")
    path = directory / "turns.jsonl"
    writer = TelemetryWriter(path, max_bytes=max_bytes, keep=keep)
    for n in range(count):
        assert writer.append(record(n))
    files = existing_files(path)
    assert len(files) <= keep + 1
    assert all(p.stat().st_size <= max_bytes for p in files)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
    ids = [int(r.turn_id) for r in read_turns(path).records]
    assert ids == list(range(count - len(ids), count))  # the newest, contiguous, oldest first
    assert ids[-1] == count - 1


def test_lowering_keep_files_removes_the_surplus_at_the_next_rotation(tmp_path: Path) -> None:
    path = tmp_path / "turns.jsonl"
    many = TelemetryWriter(path, max_bytes=700, keep=6)
    for n in range(20):
        many.append(record(n))
    assert len(existing_files(path)) == 7
    few = TelemetryWriter(path, max_bytes=700, keep=2)
    for n in range(20, 23):
        few.append(record(n))
    assert [p.name for p in existing_files(path)] == ["turns.jsonl.2", "turns.jsonl.1", "turns.jsonl"]
    ids = [int(r.turn_id) for r in read_turns(path).records]
    assert ids == list(range(23 - len(ids), 23))


def test_malformed_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "turns.jsonl"
    path.write_text(
        "\n".join([record(1).to_json(), "{not json", '{"backend": "x"}', "", record(2).to_json()])
    )
    result = read_turns(path)
    assert [r.turn_id for r in result.records] == ["1", "2"]
    assert result.skipped == 2


def test_since_drops_older_turns_across_rotated_files(tmp_path: Path) -> None:
    path = tmp_path / "turns.jsonl"
    writer = TelemetryWriter(path, max_bytes=1500, keep=5)
    for n in range(10):
        writer.append(record(n))
    assert path.with_name("turns.jsonl.1").exists()
    result = read_turns(path, since=1_750_000_000.0 + 6)
    assert [r.turn_id for r in result.records] == ["6", "7", "8", "9"]


def test_a_write_failure_is_logged_once_and_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = TelemetryWriter(tmp_path / "missing-dir" / "turns.jsonl")
    assert writer.append(record()) is False
    assert writer.append(record()) is False
    assert writer.failures == 2
    assert sum("cannot write telemetry" in r.getMessage() for r in caplog.records) == 1


# ---------------------------------------------------------------------------------------- Prometheus


def test_metrics_are_served_on_loopback_with_counters_and_histograms() -> None:
    exporter = MetricsExporter(0)
    exporter.start()
    try:
        assert exporter._server.server_address[0] == "127.0.0.1"
        exporter.observe(record(1))
        exporter.observe(
            record(2, underruns=3, reconnects=2, errors=["reply timeout"], first_reply_audio=3900.0)
        )
        text = httpx.get(f"http://127.0.0.1:{exporter.port}/metrics", timeout=5).text
    finally:
        exporter.close()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted({"backend": "xiaozhi", "mode": "auto", **labels}.items())))]

    assert value("companion_turns_total", outcome="completed") == 2
    assert value("companion_uplink_bytes_total") == 18000
    assert value("companion_playback_underruns_total") == 4
    assert value("companion_reconnects_total") == 2
    assert value("companion_turn_errors_total") == 1
    # reply latency: 0.6 s and 2.1 s
    assert value("companion_stage_latency_seconds_bucket", stage="reply", le="0.75") == 1
    assert value("companion_stage_latency_seconds_bucket", stage="reply", le="3.0") == 2
    assert value("companion_stage_latency_seconds_count", stage="reply") == 2


def test_dropped_audio_is_exported_as_running_totals_read_at_each_scrape() -> None:
    drops = {"capture_device": 0, "uplink_queue": 0}
    exporter = MetricsExporter(0)
    exporter.watch_drops(lambda: drops)
    exporter.start()

    def scrape() -> dict[str, float]:
        text = httpx.get(f"http://127.0.0.1:{exporter.port}/metrics", timeout=5).text
        return {
            sample.labels["where"]: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "companion_audio_dropped_total"
        }

    try:
        assert scrape() == {"capture_device": 0, "uplink_queue": 0}
        drops["capture_device"] = 3
        drops["uplink_queue"] = 12
        assert scrape() == {"capture_device": 3, "uplink_queue": 12}
    finally:
        exporter.close()


async def test_asyncio_tasks_alive_are_counted_on_the_loop_at_each_scrape() -> None:
    exporter = MetricsExporter(0)
    exporter.watch_tasks(asyncio.get_running_loop())
    exporter.start()

    async def scrape() -> float | None:
        url = f"http://127.0.0.1:{exporter.port}/metrics"
        async with httpx.AsyncClient() as client:  # the loop keeps turning: it does the counting
            text = (await client.get(url, timeout=5)).text
        values = [
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "companion_asyncio_tasks"
        ]
        return values[0] if values else None

    try:
        before = await scrape()
        assert before is not None and before >= 1  # this test's own task at least
        parked = [asyncio.create_task(asyncio.Event().wait()) for _ in range(5)]
        assert await scrape() == before + 5
        for task in parked:
            task.cancel()
        await asyncio.gather(*parked, return_exceptions=True)
        assert await scrape() == before
    finally:
        exporter.close()


def test_a_loop_that_does_not_answer_leaves_the_task_gauge_out_of_the_scrape() -> None:
    loop = asyncio.new_event_loop()  # never run: nothing will count its tasks
    exporter = MetricsExporter(0)
    exporter.watch_tasks(loop)
    exporter.start()
    try:
        text = httpx.get(f"http://127.0.0.1:{exporter.port}/metrics", timeout=5).text
    finally:
        exporter.close()
        loop.close()
    assert "companion_asyncio_tasks" not in text
    assert "# TYPE companion_turns_total counter" in text  # the rest is still served


def test_metrics_are_off_by_default_and_records_go_to_the_state_directory(tmp_path: Path) -> None:
    defaults = settings_from_mapping({}).telemetry
    assert defaults.prometheus_port == 0
    telemetry = build_telemetry(defaults, tmp_path)
    assert telemetry.exporter is None
    telemetry.record(record())
    assert read_turns(tmp_path / "turns.jsonl").records == [record()]
    off = build_telemetry(TelemetrySettings(enabled=False), tmp_path / "nowhere")
    off.record(record())
    assert not (tmp_path / "nowhere").exists()


def test_a_busy_metrics_port_turns_off_only_the_metrics_not_the_turn_records(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        telemetry = build_telemetry(TelemetrySettings(prometheus_port=port), tmp_path)
    assert telemetry.exporter is None
    assert any("metrics are off" in r.getMessage() and str(port) in r.getMessage() for r in caplog.records)
    telemetry.record(record())
    assert read_turns(tmp_path / "turns.jsonl").records == [record()]


def test_label_and_text_settings_apply_to_every_record(tmp_path: Path) -> None:
    telemetry = build_telemetry(TelemetrySettings(label="jabra, kitchen, 4G", record_text=False), tmp_path)
    telemetry.record(record())
    stored = read_turns(tmp_path / "turns.jsonl").records[0]
    assert stored.label == "jabra, kitchen, 4G" and stored.transcript == ""


# ---------------------------------------------------------------------------------------- a real turn


@pytest.mark.slow
async def test_a_real_turn_through_the_echo_server_becomes_a_complete_record(tmp_path: Path) -> None:
    from companion.daemon.conversation import Turn
    from companion.daemon.runtime import RunOptions, Runtime
    from companion.fieldtest.echo_server import EchoServer

    speech = Path(__file__).resolve().parent.parent / "companion" / "assets" / "demo_hello.wav"
    turns: list[Turn] = []
    async with EchoServer(host="127.0.0.1", port=0) as server:
        base = settings_from_mapping({})
        settings_ = dataclasses.replace(
            base,
            audio=dataclasses.replace(base.audio, input=str(speech), output=str(tmp_path / "out.wav")),
            xiaozhi=dataclasses.replace(base.xiaozhi, websocket_url=server.websocket_url, ota_url=""),
        )
        runtime = Runtime(settings_, RunOptions(turns=1, on_turn=turns.append, console_button=False))
        started = time.time()
        assert await asyncio.wait_for(runtime.run(), 60) == 0
    telemetry = build_telemetry(TelemetrySettings(label="echo"), tmp_path)
    telemetry.record(TurnRecord.from_turn(turns[0], backend="xiaozhi", mode="auto"))
    [stored] = read_turns(tmp_path / "turns.jsonl").records
    assert stored.wall_start >= started - 1
    marks = stored.offsets()
    assert sorted(marks) == sorted(MARKS)  # every moment of the turn was recorded
    assert marks["speech_end"] < marks["first_transcript"] <= marks["first_reply_audio"]
    assert marks["first_reply_audio"] <= marks["first_sample_played"] < marks["turn_end"]
    assert stored.bytes_up > 0 and stored.bytes_down > 0 and stored.label == "echo"
