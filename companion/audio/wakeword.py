"""Wake-word engines: microWakeWord (pymicro-wakeword) and openWakeWord (pyopen-wakeword) behind one
`feed(pcm) -> detections` interface, with the probability cutoff, sliding window and refractory time.

No network and no asyncio: the daemon calls `feed` from a worker thread, one block at a time, in order.
Both engines take 16 kHz mono s16le; a block may be any length (they buffer the remainder).
"""

from __future__ import annotations

import collections
import json
import logging
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..config import MICRO_WAKE_MODELS, OPENWAKEWORD_MODELS, WakeWordSettings
from ..errors import ConfigError

log = logging.getLogger(__name__)

RATE = 16000
OPENWAKEWORD_CUTOFF = 0.5  # the openWakeWord authors' default threshold
OPENWAKEWORD_WINDOW = 1  # openWakeWord already scores 1.3 s of audio per 80 ms step
# The built-in microWakeWord models' manifests average 5 scores (150 ms); 3 fires 60 ms sooner after the
# phrase, and on the project's sets it kept detection (97.2 % against 95.8 %) and no false accept in
# 35 minutes, the highest average other speech reached staying 0.2 under every model's cutoff
# (docs/wake-word.md). A custom model keeps its manifest's window.
MICRO_BUILTIN_WINDOW = 3
MICRO_FEATURE_SAMPLES = 160  # the microWakeWord front end makes a feature every 10 ms ...
MICRO_FIRST_FEATURE_SAMPLES = 480  # ... once its first 30 ms window is in


@dataclass(frozen=True)
class Detection:
    """A wake word heard: `end_sample` counts the samples fed up to the block in which it fired."""

    phrase: str  # as the model names it ("Alexa", "你好小智"): what `listen detect` carries
    model: str
    probability: float
    end_sample: int


class WakeWordDetector(Protocol):
    """What the daemon needs of an engine."""

    engine: str
    phrases: tuple[str, ...]
    light: bool  # cheap enough to run on the event loop
    # After a reset the models score once `first_step` samples are in, then every `step` samples
    # (0: not known); the trigger aligns that with the capture blocks.
    first_step: int
    step: int

    def feed(self, pcm: bytes) -> list[Detection]: ...

    def reset(self) -> None: ...


class _Refractory:
    """Counts samples and holds every model quiet for `seconds` after a detection."""

    def __init__(self, seconds: float) -> None:
        self.samples = 0
        self.hold = int(seconds * RATE)
        self._quiet_until = -1

    def advance(self, pcm: bytes) -> None:
        self.samples += len(pcm) // 2

    def quiet(self) -> bool:
        return self.samples < self._quiet_until

    def fired(self) -> None:
        self._quiet_until = self.samples + self.hold


# ---------------------------------------------------------------------------- microWakeWord


@dataclass
class _MicroModel:
    id: str
    phrase: str
    cutoff: float
    net: Any  # pymicro_wakeword.MicroWakeWord


def micro_manifest(spec: str) -> tuple[Path, dict[str, Any]]:
    """The manifest (.json) of a built-in model name or a custom model path, checked enough to load."""
    import pymicro_wakeword

    where = f"wake_word.models: {spec!r}"
    if spec in MICRO_WAKE_MODELS:
        path = Path(pymicro_wakeword.__file__).parent / "models" / f"{spec}.json"
    else:
        path = Path(spec).expanduser()
        if path.suffix == ".tflite":  # the manifest sits next to the model, with the same stem
            path = path.with_suffix(".json")
        if path.suffix != ".json":
            raise ConfigError(f"{where}: expected a built-in name ({', '.join(MICRO_WAKE_MODELS)}) or a "
                              "microWakeWord .json manifest (with its .tflite beside it)")  # fmt: skip
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        model = path.parent / manifest["model"]
        micro = manifest["micro"]
        float(micro["probability_cutoff"]), int(micro["sliding_window_size"]), str(manifest["wake_word"])
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read the manifest {path}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        needs = "wake_word, model, micro.probability_cutoff, micro.sliding_window_size"
        problem = f"{path} is not a microWakeWord manifest (needs {needs}; {exc!r})"
        raise ConfigError(f"{where}: {problem}") from None
    if not model.is_file():
        raise ConfigError(f"{where}: the manifest names {manifest['model']!r}, but {model} does not exist")
    return model, manifest


class MicroWakeWordDetector:
    """microWakeWord: one shared feature front end (10 ms steps), one small streaming net per model."""

    engine = "microwakeword"
    light = True
    first_step = step = 0  # until the models are loaded

    def __init__(self, settings: WakeWordSettings) -> None:
        try:
            import pymicro_wakeword
            from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures
        except ImportError:
            raise ConfigError("wake_word.engine = 'microwakeword' needs the pymicro-wakeword package: "
                              "pip install pymicro-wakeword") from None  # fmt: skip
        lib_dir = Path(pymicro_wakeword.__file__).parent / "lib"
        library = next(iter(lib_dir.glob("*tensorflowlite_c.*")), None)
        if library is None:
            raise ConfigError("wake_word.engine = 'microwakeword': pymicro-wakeword ships no TensorFlow Lite "
                              "library for this machine; try wake_word.engine = 'openwakeword'")  # fmt: skip
        self._models: list[_MicroModel] = []
        for spec in settings.models:
            model_path, manifest = micro_manifest(spec)
            micro = manifest["micro"]
            cutoff = settings.probability_cutoff or float(micro["probability_cutoff"])
            own = MICRO_BUILTIN_WINDOW if spec in MICRO_WAKE_MODELS else int(micro["sliding_window_size"])
            window = settings.sliding_window or own
            net = MicroWakeWord(
                model_path.stem,
                wake_word=str(manifest["wake_word"]),
                tflite_model=model_path,
                probability_cutoff=cutoff,
                sliding_window_size=window,
                trained_languages=list(manifest.get("trained_languages", [])),
                libtensorflowlite_c_path=library,
            )
            self._models.append(_MicroModel(model_path.stem, str(manifest["wake_word"]), cutoff, net))
            log.info("wake word %r (microWakeWord %s, cutoff %.2f, window %d)",
                     manifest["wake_word"], model_path.stem, cutoff, window)  # fmt: skip
        self._features = MicroWakeWordFeatures()
        self._clock = _Refractory(settings.refractory_s)
        self.phrases = tuple(m.phrase for m in self._models)
        strides = {m.net.stride for m in self._models}  # features per score (3: every 30 ms, as shipped)
        if len(strides) == 1:
            stride = strides.pop()
            self.step = stride * MICRO_FEATURE_SAMPLES
            self.first_step = MICRO_FIRST_FEATURE_SAMPLES + (stride - 1) * MICRO_FEATURE_SAMPLES

    def feed(self, pcm: bytes) -> list[Detection]:
        """Score the block; at most one detection per block (the most probable model)."""
        self._clock.advance(pcm)
        best: tuple[float, _MicroModel] | None = None
        for features in self._features.process_streaming(pcm):
            for model in self._models:
                probability = model.net.process_streaming_prob(features)
                if probability is None or probability <= model.cutoff:
                    continue
                if best is None or probability > best[0]:
                    best = (probability, model)
        if best is None or self._clock.quiet():
            return []
        self._clock.fired()
        probability, model = best
        for other in self._models:  # the window still holds the word: start every model afresh
            other.net.reset()
        return [Detection(model.phrase, model.id, probability, self._clock.samples)]

    def reset(self) -> None:
        """Forget the audio so far (a gap in the stream: the microphone was closed)."""
        self._features.reset()
        for model in self._models:
            model.net.reset()


# ---------------------------------------------------------------------------- openWakeWord


@dataclass
class _OpenModel:
    id: str
    phrase: str
    cutoff: float
    net: Any  # pyopen_wakeword.OpenWakeWord
    window: collections.deque[float]


def open_model_path(spec: str) -> Path:
    """The .tflite of a built-in openWakeWord model name or a custom model path."""
    import pyopen_wakeword

    if spec in OPENWAKEWORD_MODELS:
        return Path(pyopen_wakeword.__file__).parent / "models" / f"{spec}.tflite"
    path = Path(spec).expanduser()
    if path.suffix != ".tflite" or not path.is_file():
        names = ", ".join(OPENWAKEWORD_MODELS)
        raise ConfigError(f"wake_word.models: {spec!r}: expected a built-in name ({names}) or an existing "
                          "openWakeWord .tflite file")  # fmt: skip
    return path


def phrase_of(model_id: str) -> str:
    """An openWakeWord model carries no phrase: its file name says it ('hey_jarvis' → 'hey jarvis')."""
    return model_id.replace("_", " ").strip()


class OpenWakeWordDetector:
    """openWakeWord: shared mel-spectrogram and embedding nets (80 ms steps), one classifier per model."""

    engine = "openwakeword"
    light = False
    first_step = step = 0  # its 80 ms steps are not aligned with the capture blocks

    def __init__(self, settings: WakeWordSettings) -> None:
        try:
            from pyopen_wakeword import OpenWakeWord, OpenWakeWordFeatures
        except ImportError:
            raise ConfigError("wake_word.engine = 'openwakeword' needs the pyopen-wakeword package: "
                              "pip install 'companion[openwakeword]'") from None  # fmt: skip
        self._models: list[_OpenModel] = []
        cutoff = settings.probability_cutoff or OPENWAKEWORD_CUTOFF
        window = settings.sliding_window or OPENWAKEWORD_WINDOW
        for spec in settings.models:
            path = open_model_path(spec)
            net = OpenWakeWord.from_model(path)
            phrase = phrase_of(path.stem)
            self._models.append(_OpenModel(path.stem, phrase, cutoff, net, collections.deque(maxlen=window)))
            log.info("wake word %r (openWakeWord %s, cutoff %.2f, window %d)",
                     phrase, path.stem, cutoff, window)  # fmt: skip
        self._features = OpenWakeWordFeatures.from_builtin()
        self._clock = _Refractory(settings.refractory_s)
        self.phrases = tuple(m.phrase for m in self._models)

    def _scores(self, pcm: bytes) -> Iterator[tuple[float, _OpenModel]]:
        for embeddings in self._features.process_streaming(pcm):
            for model in self._models:
                for probability in model.net.process_streaming(embeddings):
                    model.window.append(probability)
                    if len(model.window) == model.window.maxlen:
                        yield statistics.fmean(model.window), model

    def feed(self, pcm: bytes) -> list[Detection]:
        """Score the block; at most one detection per block (the most probable model)."""
        self._clock.advance(pcm)
        best = max(((p, m) for p, m in self._scores(pcm) if p > m.cutoff), default=None, key=lambda pm: pm[0])
        if best is None or self._clock.quiet():
            return []
        self._clock.fired()
        for model in self._models:
            model.window.clear()
        probability, model = best
        return [Detection(model.phrase, model.id, probability, self._clock.samples)]

    def reset(self) -> None:
        """Forget the audio so far (a gap in the stream: the microphone was closed)."""
        self._features.reset()
        for model in self._models:
            model.net.reset()
            model.window.clear()


def build_detector(settings: WakeWordSettings) -> WakeWordDetector:
    """The engine named by wake_word.engine, with its models loaded (ConfigError naming the key)."""
    if settings.engine == "openwakeword":
        return OpenWakeWordDetector(settings)
    return MicroWakeWordDetector(settings)


def detect_all(detector: WakeWordDetector, pcm: bytes, block_bytes: int = 1920) -> list[Detection]:
    """Every detection in a recording, fed in capture-sized blocks (for tests and benchmarks)."""
    found: list[Detection] = []
    for start in range(0, len(pcm), block_bytes):
        found.extend(detector.feed(pcm[start : start + block_bytes]))
    return found


__all__ = [
    "Detection",
    "MicroWakeWordDetector",
    "OpenWakeWordDetector",
    "WakeWordDetector",
    "build_detector",
    "detect_all",
]
