"""The board's side: what the LEDs show for each state and emotion, the device session rules, and
the button classifier."""

from __future__ import annotations

from hypothesis import assume, given
from hypothesis import strategies as st

from firmware_bridge import animation, palette
from firmware_bridge import protocol as p
from firmware_bridge.button import ButtonClassifier
from firmware_bridge.device import DeviceCore


def pixel(state: str, t: int = 0, **kwargs: object) -> tuple[int, int, int]:
    frame = animation.render(4, t, p.state_index(state), **kwargs)  # type: ignore[arg-type]
    return frame[0], frame[1], frame[2]


def test_idle_is_off_unless_a_lamp_colour_is_set() -> None:
    assert pixel("idle") == (0, 0, 0)
    assert pixel("idle", lamp=(200, 100, 50)) == (200, 100, 50)


def test_connecting_is_solid_blue() -> None:
    assert {pixel("connecting", t) for t in (0, 333, 999)} == {(0, 0, 255)}


def test_listening_is_red_and_brighter_while_voice_is_detected() -> None:
    quiet, loud = pixel("listening"), pixel("listening", voice=True)
    assert quiet[1:] == loud[1:] == (0, 0)
    assert 0 < quiet[0] < loud[0] == 255


def test_speaking_is_green_and_the_emotion_tints_it() -> None:
    assert pixel("speaking") == (0, 255, 0)
    assert pixel("speaking", emotion=p.emotion_index("neutral")) == (0, 255, 0)
    _r, g, b = pixel("speaking", t=2000, emotion=p.emotion_index("sad"))
    assert g > 0 and b > g  # blue tint over green, at the top of its breath
    assert pixel("speaking", emotion=p.emotion_index("sad"), intensity=0, t=2000)[2] == 0


def test_emotions_animate_the_speaking_state() -> None:
    for name, look in palette.EMOTION_LOOKS.items():
        frames = {animation.render(8, t, 4, emotion=p.emotion_index(name)).hex() for t in range(0, 6000, 97)}
        assert (len(frames) > 1) == (look[3] != palette.SOLID), name


def test_activating_is_a_green_500_ms_blink_and_error_a_faster_red_one() -> None:
    assert pixel("activating", 100) == (0, 255, 0) and pixel("activating", 600) == (0, 0, 0)
    assert pixel("error", 100) == (255, 0, 0) and pixel("error", 300) == (0, 0, 0)


def test_offline_is_dim_amber() -> None:
    r, g, b = pixel("offline")
    assert 0 < r < 100 and 0 < g < r and b == 0


def test_brightness_scales_everything_and_zero_is_dark() -> None:
    assert pixel("connecting", brightness=50) == (0, 0, 127)
    assert pixel("speaking", brightness=0) == (0, 0, 0)


def test_volume_shows_as_a_bar() -> None:
    frame = animation.render(10, 0, 4, volume=30)
    lit = [frame[3 * i] for i in range(10)]
    assert lit == [255, 255, 255, 0, 0, 0, 0, 0, 0, 0]


def test_every_state_and_emotion_has_a_look() -> None:
    assert set(palette.STATE_LOOKS) == set(p.STATES)
    assert set(palette.EMOTION_LOOKS) == set(p.EMOTIONS)


# ---------------------------------------------------------------- device session


def session(mic_rate: int = 16000, host_mic: bool = True) -> tuple[DeviceCore, p.Encoder, p.Decoder]:
    core = DeviceCore("test", 4, mic_rate=mic_rate)
    host, decoder = p.Encoder(), p.Decoder()
    boot = decoder.feed(core.take_output())
    assert boot == [p.Hello("test", 4, p.LED_WS2812, True, mic_rate > 0, mic_rate, request=True)]
    core.receive(host.encode(p.Hello("host", mic=host_mic, request=True)), 0)
    assert decoder.feed(core.take_output()) == [
        p.Hello("test", 4, p.LED_WS2812, True, mic_rate > 0, mic_rate)
    ]
    return core, host, decoder


def test_board_shows_offline_until_a_host_says_hello() -> None:
    core = DeviceCore("test", 2)
    core.receive(p.Encoder().encode(p.State(4)), 0)  # no handshake yet: ignored
    assert core.shown_state() == 5 and core.state == 5


def test_hello_without_request_is_not_answered() -> None:
    core, host, decoder = session()
    core.receive(host.encode(p.Hello("host")), 10)
    assert decoder.feed(core.take_output()) == []


def test_host_silence_turns_the_board_offline_and_stops_the_microphone() -> None:
    core, host, _decoder = session()
    core.receive(host.encode(p.State(4)), 100)
    core.tick(3100)
    assert core.shown_state() == 4 and core.mic_wanted
    core.tick(3101)
    assert core.shown_state() == 5 and not core.mic_wanted
    assert not core.press(p.BUTTON_PRESS) and not core.mic(b"\0\0")


def test_microphone_streams_only_when_the_host_asked() -> None:
    core, _, decoder = session(host_mic=False)
    assert not core.mic(b"\x01\x00" * 10)
    core, _, decoder = session(host_mic=True)
    assert core.mic(b"\x01\x00" * 1000)  # 2000 bytes: split into frames of at most 1022
    blocks = decoder.feed(core.take_output())
    assert [m.block for m in blocks] == [0, 1]
    assert b"".join(m.pcm for m in blocks) == b"\x01\x00" * 1000


def test_led_frame_shows_raw_pixels_until_the_next_state() -> None:
    core, host, _ = session()
    core.receive(host.encode(p.LedFrame(2, b"\x01\x02\x03\x04\x05\x06\x07\x08\x09")), 0)
    assert core.pixels(0) == bytes(6) + b"\x01\x02\x03\x04\x05\x06"  # clipped to the 4 LEDs
    core.receive(host.encode(p.State(1)), 10)
    assert core.pixels(10) == animation.render(4, 10, 1, brightness=core.brightness)


def test_ping_is_answered_and_repl_request_is_noted() -> None:
    core, host, decoder = session()
    core.receive(host.encode(p.Ping(4242)) + host.encode(p.Repl()), 0)
    assert decoder.feed(core.take_output()) == [p.Pong(4242)]
    assert core.repl_requested


def test_host_of_another_version_gets_an_error_naming_both_versions() -> None:
    core = DeviceCore("test", 2)
    core.take_output()
    core.receive(p.Encoder().encode(p.Hello("new-host", version=7, request=True)), 0)
    error, hello = p.Decoder().feed(core.take_output())
    assert isinstance(error, p.Error) and error.code == p.ERR_VERSION
    assert "v7" in error.text and "v1" in error.text
    assert isinstance(hello, p.Hello) and not core.host_ok


# ---------------------------------------------------------------- button


def classify(levels: list[tuple[bool, int]], step: int = 5) -> list[tuple[int, int]]:
    button = ButtonClassifier()
    events, now = [], 1000
    for level, duration in levels:
        for _ in range(duration // step):
            kind = button.update(level, now)
            if kind:
                events.append((now, kind))
            now += step
    return events


@given(st.integers(40, 2000))
def test_a_clean_press_is_a_press_or_a_long_press_by_how_long_it_is_held(held: int) -> None:
    assume(abs(held - 800) > 10)  # at the threshold itself the 5 ms sampling decides
    events = classify([(False, 50), (True, held), (False, 800)])
    assert [kind for _, kind in events] == [p.BUTTON_LONG if held > 800 else p.BUTTON_PRESS]


@given(st.lists(st.integers(5, 25), min_size=1, max_size=8))
def test_contact_bounce_shorter_than_the_debounce_is_ignored(bounces: list[int]) -> None:
    levels = [(False, 50)] + [(i % 2 == 0, ms) for i, ms in enumerate(bounces)] + [(False, 800)]
    levels = [(level, ms) for level, ms in levels if not level or ms < 30]
    assert classify(levels) == []


def test_two_quick_presses_are_one_double_press() -> None:
    events = classify([(False, 50), (True, 100), (False, 150), (True, 100), (False, 800)])
    assert [kind for _, kind in events] == [p.BUTTON_DOUBLE]


def test_a_long_press_fires_while_still_held() -> None:
    events = classify([(False, 50), (True, 3000)])
    assert events and events[0][1] == p.BUTTON_LONG and events[0][0] < 1000 + 50 + 900


def test_a_hardware_problem_is_told_to_every_host_that_says_hello() -> None:
    core = DeviceCore("test", 1)
    core.send_error(p.ERR_HARDWARE, "microphone: OSError(19)")
    host, decoder = p.Encoder(), p.Decoder()
    decoder.feed(core.take_output())
    for _ in range(2):
        core.receive(host.encode(p.Hello("host", request=True)), 0)
        reply, error = decoder.feed(core.take_output())
        assert isinstance(reply, p.Hello)
        assert error == p.Error(p.ERR_HARDWARE, "microphone: OSError(19)")
