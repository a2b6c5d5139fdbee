"""Token bytes to client text: split UTF-8 characters and stop sequences are held back."""

from __future__ import annotations

from switchgear.engine.text import StopSequenceText


def test_a_character_split_across_tokens_is_released_whole() -> None:
    text = StopSequenceText()
    euro = "€".encode()
    assert text.feed(b"price: " + euro[:1]) == "price: "
    assert text.feed(euro[1:]) == "€"


def test_text_stops_before_a_stop_sequence_spread_over_tokens() -> None:
    text = StopSequenceText(["END"])
    assert text.feed(b"one E") == "one "
    assert text.feed(b"N") == ""
    assert text.feed(b"D and more") == ""
    assert text.stopped
    assert text.feed(b"later") == ""
    assert text.flush() == ""


def test_a_false_start_of_a_stop_sequence_is_released() -> None:
    text = StopSequenceText(["END"])
    assert text.feed(b"E") == ""
    assert text.feed(b"X") == "EX"
    assert text.feed(b"EN") == ""
    assert not text.stopped
    assert text.flush() == "EN"


def test_the_earliest_of_several_stop_sequences_wins() -> None:
    text = StopSequenceText(["two", "one"])
    assert text.feed(b"zero one two") == "zero "
    assert text.stopped
