"""The field-test report: turn records → one self-contained HTML page (inline CSS and SVG, no scripts,
no external assets) with latency percentiles per stage, histograms and a per-turn timeline.

Made for comparing headsets, rooms and networks: records carry the `[telemetry] label` of the run, and
the page shows the percentiles of each label side by side.
"""

from __future__ import annotations

import datetime as dt
import html
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .telemetry import MARKS, STAGES, Stage, TurnRecord

PERCENTILES = (50, 90, 95, 99)
HISTOGRAM_STAGES = ("heard", "reply", "stt", "playout")
TIMELINE_MAX_TURNS = 300
TRANSCRIPT_CHARS = 80

# Segment colours of the timeline (colour-blind safe: Okabe-Ito).
SEGMENTS = (
    ("speech_start", "speech_end", "#0072B2", "user speaking"),
    ("speech_end", "first_reply_audio", "#E69F00", "waiting for the reply"),
    ("first_reply_audio", "first_sample_played", "#F0E442", "buffering"),
    ("first_sample_played", "turn_end", "#009E73", "reply playing"),
)
TICKS = (
    ("listen_sent", "#555555", "listen sent"),
    ("first_transcript", "#CC79A7", "first transcript"),
    ("emotion", "#D55E00", "emotion"),
)

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: float) -> float:
    """Unix time from `--since`: a duration back from now (90m, 2h, 3d, 1w) or an ISO date/time
    (2025-06-01, 2025-06-01T14:30, with an optional UTC offset; local time otherwise).
    Raises ValueError with what is accepted."""
    match = _RELATIVE.match(text)
    if match:
        return now - float(match.group(1)) * _UNIT_S[match.group(2).lower()]
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r}: expected a duration such as 90m, 2h, 3d, 1w or a date/time such as "
            "2025-06-01 or 2025-06-01T14:30"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()  # local time
    return when.timestamp()


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile with linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        raise ValueError("no values")
    position = (len(sorted_values) - 1) * q / 100
    lo = math.floor(position)
    hi = math.ceil(position)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (position - lo)


@dataclass(frozen=True)
class StageStats:
    """Percentiles of one stage over a set of turns (ms)."""

    stage: Stage
    values: tuple[float, ...]

    @property
    def count(self) -> int:
        return len(self.values)

    def p(self, q: float) -> float | None:
        return percentile(self.values, q) if self.values else None

    @property
    def maximum(self) -> float | None:
        return self.values[-1] if self.values else None


def stage_stats(records: Iterable[TurnRecord]) -> list[StageStats]:
    """Per-stage latency statistics; turns that lack either mark of a stage are left out of it."""
    records = list(records)
    stats = []
    for stage in STAGES:
        values = sorted(v for r in records if (v := r.latency(stage)) is not None)
        stats.append(StageStats(stage, tuple(values)))
    return stats


def group_key(record: TurnRecord) -> str:
    """What a record is compared under: its label, else backend/mode."""
    return record.label or f"{record.backend} / {record.mode}"


# ---------------------------------------------------------------------------------------- rendering

_esc = html.escape


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def _time(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _bytes(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


def render_html(
    records: Sequence[TurnRecord],
    *,
    sources: Sequence[Path] = (),
    skipped: int = 0,
    since: float | None = None,
    generated: float | None = None,
    title: str = "companion field report",
) -> str:
    """The whole report as one HTML document."""
    records = sorted(records, key=lambda r: (r.wall_start, r.turn_id))
    generated = generated if generated is not None else dt.datetime.now().timestamp()
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head><body>",
        f"<h1>{_esc(title)}</h1>",
        _summary(records, sources, skipped, since, generated),
    ]
    if records:
        parts.append(_percentile_section(records))
        parts.append(_histogram_section(records))
        parts.append(_timeline_section(records))
        parts.append(_turn_table(records))
    else:
        parts.append('<p class="empty">No turns in this period.</p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _summary(
    records: Sequence[TurnRecord],
    sources: Sequence[Path],
    skipped: int,
    since: float | None,
    generated: float,
) -> str:
    rows: list[tuple[str, str]] = [("turns", f"{len(records):,}")]
    if records:
        rows.append(("period", f"{_time(records[0].wall_start)} → {_time(records[-1].wall_start)}"))
        groups = sorted({group_key(r) for r in records})
        rows.append(("compared", ", ".join(groups)))
        heard = stage_stats(records)[[s.key for s in STAGES].index("heard")]
        rows.append(("median end of speech → sound", f"{_ms(heard.p(50))} ms"))
        rows.append(("turns with errors", f"{sum(1 for r in records if r.errors):,}"))
        rows.append(
            (
                "underruns / reconnects",
                f"{sum(r.underruns for r in records):,} / {sum(r.reconnects for r in records):,}",
            )
        )
        rows.append(
            (
                "audio up / down",
                f"{_bytes(sum(r.bytes_up for r in records))} / {_bytes(sum(r.bytes_down for r in records))}",
            )
        )
    if since is not None:
        rows.append(("since", _time(since)))
    if sources:
        rows.append(("read from", ", ".join(str(p) for p in sources)))
    if skipped:
        rows.append(("malformed lines skipped", str(skipped)))
    rows.append(("generated", _time(generated)))
    body = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows)
    return f'<table class="summary">{body}</table>'


def _percentile_section(records: Sequence[TurnRecord]) -> str:
    groups: dict[str, list[TurnRecord]] = {}
    for record in records:
        groups.setdefault(group_key(record), []).append(record)
    out = ["<h2>Latency per stage (ms)</h2>"]
    sections = [("all turns", list(records))]
    if len(groups) > 1:
        sections += sorted(groups.items())
    for name, members in sections:
        if len(sections) > 1:
            out.append(f"<h3>{_esc(name)} <small>({len(members)} turns)</small></h3>")
        head = "".join(f"<th>p{q}</th>" for q in PERCENTILES)
        out.append(f'<table class="stats"><tr><th>stage</th><th>n</th>{head}<th>max</th></tr>')
        for stats in stage_stats(members):
            cells = "".join(f"<td>{_ms(stats.p(q))}</td>" for q in PERCENTILES)
            out.append(
                f'<tr data-stage="{stats.stage.key}"><th>{_esc(stats.stage.label)}</th>'
                f"<td>{stats.count}</td>{cells}<td>{_ms(stats.maximum)}</td></tr>"
            )
        out.append("</table>")
    return "\n".join(out)


def _nice_step(span: float, bins: int) -> float:
    raw = max(span / bins, 1.0)
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def _histogram_section(records: Sequence[TurnRecord]) -> str:
    out = ['<h2>Histograms</h2><div class="hists">']
    by_key = {s.stage.key: s for s in stage_stats(records)}
    for key in HISTOGRAM_STAGES:
        stats = by_key[key]
        out.append(f"<figure><figcaption>{_esc(stats.stage.label)} (n={stats.count})</figcaption>")
        out.append(histogram_svg(stats.values) if stats.values else '<p class="empty">no data</p>')
        out.append("</figure>")
    out.append("</div>")
    return "\n".join(out)


def histogram_svg(values: Sequence[float], width: int = 420, height: int = 200) -> str:
    """An SVG histogram of latencies (ms) with median and p90 markers."""
    ordered = sorted(values)
    lo = min(0.0, ordered[0])
    hi = max(ordered[-1], lo + 1)
    step = _nice_step(hi - lo, 20)
    start = math.floor(lo / step) * step
    nbins = max(1, math.ceil((hi - start) / step + 1e-9))
    counts = [0] * nbins
    for v in ordered:
        counts[min(nbins - 1, int((v - start) // step))] += 1
    left, right, top, bottom = 36, 26, 20, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max(counts)
    bar_w = plot_w / nbins
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img">'
    ]
    for i, count in enumerate(counts):
        if not count:
            continue
        h = plot_h * count / peak
        x = left + i * bar_w
        b0, b1 = start + i * step, start + (i + 1) * step
        parts.append(
            f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{max(bar_w - 1, 1):.1f}" height="{h:.1f}" '
            f'fill="#0072B2"><title>{b0:,.0f}–{b1:,.0f} ms: {count}</title></rect>'
        )
    axis_y = top + plot_h
    parts.append(f'<line x1="{left}" y1="{axis_y}" x2="{left + plot_w}" y2="{axis_y}" stroke="#333"/>')
    parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{axis_y}" stroke="#333"/>')
    for i in range(0, nbins + 1, max(1, math.ceil(nbins / 6))):
        x = left + i * bar_w
        parts.append(f'<line x1="{x:.1f}" y1="{axis_y}" x2="{x:.1f}" y2="{axis_y + 4}" stroke="#333"/>')
        parts.append(
            f'<text x="{x:.1f}" y="{axis_y + 16}" text-anchor="middle">{start + i * step:,.0f}</text>'
        )
    parts.append(f'<text x="{left + plot_w:.1f}" y="{height - 2}" text-anchor="end">ms</text>')
    parts.append(f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{peak}</text>')
    parts.append(f'<text x="{left - 4}" y="{axis_y}" text-anchor="end">0</text>')
    span = nbins * step
    for q, colour in ((50, "#D55E00"), (90, "#CC79A7")):
        value = percentile(ordered, q)
        x = left + plot_w * (value - start) / span
        parts.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{axis_y}" stroke="{colour}" '
            f'stroke-dasharray="4 3" stroke-width="1.5"><title>p{q} {value:,.0f} ms</title></line>'
        )
        parts.append(f'<text x="{x:.1f}" y="{top - 6}" text-anchor="middle" fill="{colour}">p{q}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _timeline_section(records: Sequence[TurnRecord]) -> str:
    shown = list(records[-TIMELINE_MAX_TURNS:])
    note = ""
    if len(records) > len(shown):
        note = (
            f"<p>Showing the last {len(shown)} of {len(records)} turns; the table below lists them all.</p>"
        )
    legend = (
        "".join(
            f'<span class="key"><i style="background:{colour}"></i>{_esc(label)}</span>'
            for _, _, colour, label in SEGMENTS
        )
        + "".join(
            f'<span class="key"><i class="tick" style="background:{colour}"></i>{_esc(label)}</span>'
            for _, colour, label in TICKS
        )
        + '<span class="key"><b class="err">✕</b> error</span>'
    )
    return (
        "<h2>Timeline per turn</h2>"
        '<p class="hint">Milliseconds from the start of each turn; hover a row for its figures.</p>'
        f'<div class="legend">{legend}</div>{note}{timeline_svg(shown)}'
    )


def timeline_svg(records: Sequence[TurnRecord], width: int = 1000, row: int = 16) -> str:
    """One row per turn: coloured segments between its marks and ticks for single events."""
    label_w, right, top, axis_h = 150, 20, 6, 26
    ends = [max(r.offsets().values(), default=0.0) for r in records]
    span = max(max(ends, default=0.0), 1.0)
    step = _nice_step(span, 10)
    span = math.ceil(span / step) * step
    plot_w = width - label_w - right
    height = top + row * len(records) + axis_h

    def x_of(ms: float) -> float:
        return label_w + plot_w * max(0.0, ms) / span

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" class="timeline">'
    ]
    grid_bottom = top + row * len(records)
    t = 0.0
    while t <= span + 1e-9:
        x = x_of(t)
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{grid_bottom}" stroke="#e4e4e4"/>')
        parts.append(f'<text x="{x:.1f}" y="{grid_bottom + 15}" text-anchor="middle">{t:,.0f}</text>')
        t += step
    parts.append(f'<text x="{width - right:.1f}" y="{height - 1}" text-anchor="end">ms</text>')
    for i, record in enumerate(records):
        y = top + i * row
        marks = record.offsets()
        tip = "\n".join(
            [f"turn {record.turn_id} · {_time(record.wall_start)} · {group_key(record)}"]
            + [f"{name}: {marks[name]:,.0f} ms" for name in MARKS if name in marks]
            + [f"{s.label}: {v:,.0f} ms" for s in STAGES if (v := record.latency(s)) is not None]
            + [f"error: {e}" for e in record.errors]
        )
        parts.append(f'<g data-turn="{_esc(record.turn_id)}"><title>{_esc(tip)}</title>')
        shade = "#f6f6f6" if i % 2 else "#ffffff"
        parts.append(f'<rect x="0" y="{y}" width="{width}" height="{row}" fill="{shade}"/>')
        parts.append(
            f'<text x="{label_w - 6}" y="{y + row - 4}" text-anchor="end">'
            f"{_esc(record.turn_id)} · {_esc(_time(record.wall_start)[11:])}</text>"
        )
        for start, end, colour, _ in SEGMENTS:
            if start in marks and end in marks and marks[end] >= marks[start]:
                x0, x1 = x_of(marks[start]), x_of(marks[end])
                parts.append(
                    f'<rect x="{x0:.1f}" y="{y + 3}" width="{max(x1 - x0, 1.0):.1f}" height="{row - 6}" '
                    f'fill="{colour}"/>'
                )
        for name, colour, _ in TICKS:
            if name in marks:
                x = x_of(marks[name])
                parts.append(
                    f'<rect x="{x - 1:.1f}" y="{y + 1}" width="2.5" height="{row - 2}" fill="{colour}"/>'
                )
        if record.errors:
            x = x_of(max(marks.values(), default=0.0)) + 8
            parts.append(f'<text x="{x:.1f}" y="{y + row - 4}" class="err">✕</text>')
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


TABLE_STAGES = (("stt", "→ text"), ("reply", "→ reply"), ("playout", "buffer"), ("heard", "→ heard"))


def _turn_table(records: Sequence[TurnRecord]) -> str:
    by_key = {s.key: s for s in STAGES}
    stage_keys = [key for key, _ in TABLE_STAGES]
    head = "".join(f'<th title="{_esc(by_key[k].label)}">{_esc(short)}</th>' for k, short in TABLE_STAGES)
    legend = "; ".join(f"<b>{_esc(short)}</b>: {_esc(by_key[k].label)}" for k, short in TABLE_STAGES)
    out = [
        "<h2>Turns</h2>",
        f'<p class="hint">Latencies in ms. {legend}.</p>',
        '<table class="turns"><tr><th>turn</th><th>time</th><th>group</th><th>outcome</th>'
        f"{head}<th>up</th><th>down</th><th>underruns</th><th>reconnects</th><th>errors</th>"
        "<th>what was said</th></tr>",
    ]
    for record in records:
        cells = "".join(f"<td>{_ms(record.latency(by_key[k]))}</td>" for k in stage_keys)
        text = record.transcript
        if len(text) > TRANSCRIPT_CHARS:
            text = text[: TRANSCRIPT_CHARS - 1] + "…"
        errors = "; ".join(record.errors)
        out.append(
            f'<tr data-turn="{_esc(record.turn_id)}"><td>{_esc(record.turn_id)}</td>'
            f'<td class="nowrap">{_esc(_time(record.wall_start))}</td><td>{_esc(group_key(record))}</td>'
            f"<td>{_esc(record.outcome)}</td>{cells}<td>{_bytes(record.bytes_up)}</td>"
            f"<td>{_bytes(record.bytes_down)}</td><td>{record.underruns}</td><td>{record.reconnects}</td>"
            f'<td class="{"err" if errors else ""}">{_esc(errors)}</td><td>{_esc(text)}</td></tr>'
        )
    out.append("</table>")
    return "\n".join(out)


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","Noto Sans CJK SC",sans-serif;
margin:24px auto;max-width:1100px;padding:0 16px;color:#222;background:#fff}
h1{font-size:24px;margin:0 0 12px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:16px 0 6px}small{color:#666;font-weight:normal}
table{border-collapse:collapse;margin:6px 0}
th,td{padding:3px 8px;border-bottom:1px solid #eee;text-align:left}
table.stats td,table.turns td{text-align:right;font-variant-numeric:tabular-nums}
table.turns td:nth-child(-n+4),table.turns td:last-child,table.turns td:nth-last-child(2){text-align:left}
table.turns{font-size:12px}table.summary th{color:#555;font-weight:600;padding-right:16px}
.hists{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}figcaption{font-weight:600;margin-bottom:2px}
svg text{font-size:11px;fill:#333}.err{color:#c0392b;fill:#c0392b;font-weight:bold}
.legend{display:flex;flex-wrap:wrap;gap:14px;margin:6px 0}.key i{display:inline-block;width:14px;height:10px;
margin-right:5px;vertical-align:middle}.key i.tick{width:3px;height:14px}.hint,.empty{color:#666}
.nowrap{white-space:nowrap}table.turns td{white-space:nowrap}
table.turns td:last-child{white-space:normal}table.turns th{white-space:nowrap}
"""
