"""`python -m bench`: every benchmark, printed as one JSON object."""

from __future__ import annotations

import json
import sys

from . import (
    barge_in,
    bench_aec,
    bench_bridge,
    bench_espai,
    bench_playout,
    bench_wake,
    daemon,
    pipeline,
    playback,
)


def main() -> None:
    figures: dict[str, object] = {}
    figures.update(pipeline.uplink())
    figures.update(pipeline.uplink(device_rate=48000))
    figures.update(pipeline.downlink())
    figures.update(playback.measure())
    figures.update(daemon.measure())
    figures.update(bench_bridge.measure())
    figures.update(barge_in.measure())
    figures.update(bench_playout.measure())
    figures.update(bench_espai.measure())
    figures.update(bench_wake.measure())
    figures.update(bench_aec.measure())
    json.dump(figures, sys.stdout, indent=2)
    print()


main()
