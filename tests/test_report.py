"""`companion report`: the JSONL records (rotated files included) become one self-contained HTML page
that lists every turn, with correct percentiles and well-formed inline SVG."""

from __future__ import annotations

import dataclasses
import time
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from companion.cli import main
from companion.fieldtest.report import TIMELINE_MAX_TURNS, parse_since, percentile, render_html, stage_stats
from companion.fieldtest.telemetry import STAGES, TelemetryWriter, TurnRecord, read_turns


class Page(HTMLParser):
    """What the tests look at in the generated HTML."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.stage_rows: dict[str, list[str]] = {}
        self._row: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "tr":
            self._row = dict(attrs).get("data-stage")
            if self._row:
                self.stage_rows.setdefault(self._row, [])

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._row and data.strip() and self._row in self.stage_rows:
            self.stage_rows[self._row].append(data.strip())

    def turn_ids(self, tag: str) -> list[str]:
        return [a["data-turn"] or "" for t, a in self.tags if t == tag and "data-turn" in a]


def make_record(n: int, now: float, rng: np.random.Generator) -> TurnRecord:
    speech_end = float(rng.integers(800, 4000))
    transcript_at = speech_end + float(rng.integers(150, 900))
    reply_at = transcript_at + float(rng.integers(50, 1500))
    played = reply_at + float(rng.integers(20, 300))
    return TurnRecord(
        backend="xiaozhi" if n % 3 else "chatbot_v3",
        mode="auto",
        turn_id=f"t{n}",
        wall_start=now - 40 * 600 + n * 600,
        speech_start=0.0,
        speech_end=speech_end,
        listen_sent=1.0,
        first_transcript=transcript_at,
        transcript=f"question number {n}",
        emotion=reply_at - 5,
        emotion_name="happy",
        first_reply_audio=reply_at,
        first_sample_played=played,
        turn_end=played + float(rng.integers(500, 6000)),
        bytes_up=int(rng.integers(1000, 50000)),
        bytes_down=int(rng.integers(1000, 90000)),
        label=["jabra headset", "laptop mic"][n % 2],
    )


@pytest.fixture
def records_file(tmp_path: Path) -> tuple[Path, list[TurnRecord], float]:
    now = time.time()
    rng = np.random.default_rng(7)
    records = [make_record(n, now, rng) for n in range(40)]
    records[5] = dataclasses.replace(
        records[5],
        transcript="<script>alert('x')</script> & 你好",
        errors=["reply timeout"],
        first_reply_audio=None,
        first_sample_played=None,
    )
    records[6] = dataclasses.replace(records[6], underruns=3, reconnects=1)
    path = tmp_path / "turns.jsonl"
    writer = TelemetryWriter(path, max_bytes=4000, keep=9)
    for rec in records:
        assert writer.append(rec)
    with path.open("a") as handle:
        handle.write("{broken line\n")
    assert path.with_name("turns.jsonl.1").exists()  # the records span rotated files
    return path, records, now


def run_report(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["report", *args], catch_exceptions=False)
    return result.exit_code, result.output


def test_report_lists_every_turn_in_the_table_and_the_timeline(
    records_file: tuple[Path, list[TurnRecord], float], tmp_path: Path
) -> None:
    path, records, _ = records_file
    out = tmp_path / "report.html"
    code, output = run_report("--input", str(path), "-o", str(out))
    assert code == 0, output
    assert "40 turns" in output and "1 malformed lines skipped" in output
    page = Page()
    page.feed(out.read_text())
    expected = [r.turn_id for r in records]
    assert page.turn_ids("tr") == expected
    assert page.turn_ids("g") == expected


def test_report_is_self_contained(records_file: tuple[Path, list[TurnRecord], float], tmp_path: Path) -> None:
    path, _, _ = records_file
    out = tmp_path / "report.html"
    run_report("--input", str(path), "-o", str(out))
    text = out.read_text()
    page = Page()
    page.feed(text)
    assert not [t for t, _ in page.tags if t in ("script", "link", "img", "iframe", "object")]
    assert not [a for _, attrs in page.tags for a in attrs if a in ("src", "href")]
    assert "url(" not in text and "@import" not in text
    svgs = text.count("<svg")
    assert svgs == 5  # four histograms and the timeline
    for chunk in text.split("<svg")[1:]:
        ET.fromstring("<svg" + chunk.split("</svg>")[0] + "</svg>")  # well-formed XML


def test_text_from_the_records_is_escaped(
    records_file: tuple[Path, list[TurnRecord], float], tmp_path: Path
) -> None:
    path, _, _ = records_file
    out = tmp_path / "report.html"
    run_report("--input", str(path), "-o", str(out))
    text = out.read_text()
    assert "<script>" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; 你好" in text
    assert "reply timeout" in text


def test_percentile_table_matches_numpy(records_file: tuple[Path, list[TurnRecord], float]) -> None:
    path, records, _ = records_file
    page = Page()
    page.feed(render_html(read_turns(path).records))
    for stage in STAGES:
        values = [v for r in records if (v := r.latency(stage)) is not None]
        cells = page.stage_rows[stage.key]
        assert cells[0] == stage.label and int(cells[1]) == len(values)
        for cell, q in zip(cells[2:6], (50, 90, 95, 99), strict=True):
            assert cell == f"{np.percentile(values, q):,.0f}"


def test_groups_by_label_are_compared_side_by_side(
    records_file: tuple[Path, list[TurnRecord], float],
) -> None:
    path, _, _ = records_file
    text = render_html(read_turns(path).records)
    assert "<h3>jabra headset <small>(20 turns)</small></h3>" in text
    assert "<h3>laptop mic <small>(20 turns)</small></h3>" in text


def test_since_keeps_only_recent_turns(
    records_file: tuple[Path, list[TurnRecord], float], tmp_path: Path
) -> None:
    path, records, _ = records_file
    out = tmp_path / "recent.html"
    code, _ = run_report("--input", str(path), "--since", "2h", "-o", str(out))
    assert code == 0
    cutoff = time.time() - 7200
    expected = [r.turn_id for r in records if r.wall_start >= cutoff]
    assert 0 < len(expected) < len(records)
    page = Page()
    page.feed(out.read_text())
    assert page.turn_ids("tr") == expected


def test_a_long_field_test_shows_the_recent_timeline_and_every_turn_in_the_table() -> None:
    rng = np.random.default_rng(1)
    now = time.time()
    records = [make_record(n, now, rng) for n in range(TIMELINE_MAX_TURNS + 25)]
    page = Page()
    page.feed(render_html(records))
    assert len(page.turn_ids("tr")) == len(records)
    assert page.turn_ids("g") == [r.turn_id for r in records[-TIMELINE_MAX_TURNS:]]
    assert f"Showing the last {TIMELINE_MAX_TURNS} of {len(records)} turns" in "".join(page.text)


def test_missing_records_are_a_clear_error(tmp_path: Path) -> None:
    code, output = run_report("--input", str(tmp_path / "none.jsonl"), "-o", str(tmp_path / "r.html"))
    assert code == 78
    assert "no turn records found" in output
    assert not (tmp_path / "r.html").exists()


def test_a_bad_since_is_rejected_with_the_accepted_forms(tmp_path: Path) -> None:
    code, output = run_report("--input", str(tmp_path / "x"), "--since", "yesterday")
    assert code == 2
    assert "90m, 2h, 3d, 1w" in output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90m", 1_000_000.0 - 5400),
        ("2h", 1_000_000.0 - 7200),
        ("3d", 1_000_000.0 - 259200),
        ("1w", 1_000_000.0 - 604800),
        ("1970-01-12T00:00:00+00:00", 950400.0),
    ],
)
def test_since_accepts_durations_and_iso_times(text: str, expected: float) -> None:
    assert parse_since(text, now=1_000_000.0) == expected


@given(
    st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=50),
    st.sampled_from([0, 50, 90, 95, 99, 100]),
)
def test_percentile_agrees_with_numpy(values: list[float], q: int) -> None:
    assert percentile(sorted(values), q) == pytest.approx(float(np.percentile(values, q)), abs=1e-6)


def test_an_empty_period_renders_a_page_saying_so() -> None:
    text = render_html([])
    assert "No turns in this period." in text and "<svg" not in text
    assert [s.count for s in stage_stats([])] == [0] * len(STAGES)


def test_without_input_the_state_directory_records_are_used(
    records_file: tuple[Path, list[TurnRecord], float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, records, _ = records_file
    monkeypatch.setenv("STATE_DIRECTORY", str(path.parent))
    monkeypatch.chdir(tmp_path)
    code, output = run_report()
    assert code == 0, output
    assert f"{len(records)} turns" in output
    assert (tmp_path / "report.html").stat().st_mode & 0o077 == 0  # transcripts inside: private
