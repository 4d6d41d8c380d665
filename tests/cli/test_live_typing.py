"""`yap client live` on a terminal: the line the client keeps (`LineEditor`), when the line goes out as a
`prefill` (`Interim`), and the terminal's mode (`cbreak`, `keystrokes`) on a real pseudo-terminal."""

from __future__ import annotations

import asyncio
import os
import termios
from collections.abc import Iterator

import pytest

from yap_cli.client.interim import Interim
from yap_cli.client.terminal import ERASE, Input, LineEditor, cbreak, keystrokes


def test_the_editor_keeps_the_line_and_echoes_each_edit() -> None:
    editor = LineEditor()
    typed = editor.feed("what is")
    assert (typed.line, typed.changed, typed.word_ended, typed.echo) == ("what is", True, True, "what is")
    typed = editor.feed("x\x7f\x7f\tth")  # backspace twice, a tab is a space
    assert (typed.line, typed.echo, typed.word_ended) == ("what i th", "x" + ERASE + ERASE + " th", True)
    assert not editor.feed("e").word_ended  # a word ends at whitespace after it, not before
    typed = editor.feed("\x1b[A\x1b[1;5C\x1bOPm\x01")  # arrow keys, F1, ctrl-a: no edits
    assert (typed.line, typed.echo) == ("what i them", "m")
    typed = editor.feed("\x15bye\r")  # ctrl-u erases the line; enter completes it
    assert (typed.entered, typed.line, typed.changed) == (["bye"], "", False)
    assert typed.echo == ERASE * len("what i them") + "bye\n"
    assert editor.feed("\x7f").echo == ""  # nothing to erase


def test_ctrl_c_and_ctrl_d_end_the_input_and_drop_what_follows() -> None:
    editor = LineEditor()
    typed = editor.feed("hi\n\x03more")
    assert (typed.entered, typed.quit, typed.eof, typed.line) == (["hi"], True, False, "")
    typed = LineEditor().feed("half\x04more")
    assert (typed.eof, typed.quit, typed.line) == (True, False, "half")


def test_keys_split_across_reads_decode_and_escape_sequences_stay_skipped() -> None:
    editor = LineEditor()
    assert editor.feed("a\x1b[").line == "a"
    assert editor.feed("1;2Db").line == "ab"  # the rest of the sequence, then a key


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


Paced = tuple[Interim, Clock, list[tuple[str, str]]]


@pytest.fixture
def paced() -> Iterator[Paced]:
    """An `Interim` on a clock the test moves, and the prefills it sent: (request_id, utterance)."""
    clock, sent = Clock(), []

    async def send(request_id: str, text: str) -> None:
        sent.append((request_id, text))

    yield Interim(send, pause_s=0.25, stale_s=3.0, clock=clock), clock, sent


async def test_a_prefill_goes_at_a_word_end_or_after_a_pause_once_per_text(paced: Paced) -> None:
    interim, clock, sent = paced
    interim.typed("wha", word_ended=False)
    assert await interim.tick() is None and interim.deadline() == 100.25  # not yet: typing goes on
    clock.now = 100.25
    first = await interim.tick()
    assert first is not None and sent == [(first.request_id, "wha")] and interim.deadline() is None
    interim.answered(
        {"type": "ack", "request_id": first.request_id, "payload": {"prompt_tokens": 9, "cached_tokens": 8}}
    )
    interim.typed("wha ", word_ended=True)  # only trailing whitespace more: the same warm, not sent again
    assert await interim.tick() is None
    interim.typed("  ", word_ended=False)
    clock.now += 1
    assert await interim.tick() is None  # blank: nothing to warm
    interim.typed("what is ", word_ended=True)
    second = await interim.tick()  # a word ended: at once
    assert second is not None and second.utterance == "what is " and len(sent) == 2
    assert (first.prompt_tokens, first.cached_tokens) == (9, 8)


async def test_one_prefill_in_flight_the_newest_text_goes_when_it_is_answered(paced: Paced) -> None:
    interim, clock, sent = paced
    interim.typed("what ", word_ended=True)
    first = await interim.tick()
    assert first is not None
    interim.typed("what is ", word_ended=True)
    interim.typed("what is the ", word_ended=True)
    assert await interim.tick() is None and interim.deadline() == first.sent + 3.0  # held back
    other = {"type": "ack", "request_id": "live-1", "payload": {"for": "message", "ok": True}}
    assert interim.answered(other) is None  # a turn's ack answers no prefill
    error = {"type": "error", "request_id": first.request_id, "payload": {"code": "rate_limited"}}
    assert interim.answered(error) is first and first.error == "rate_limited"
    second = await interim.tick()
    assert second is not None and second.utterance == "what is the " and len(sent) == 2  # "what is " skipped
    interim.typed("what is the weather ", word_ended=True)
    assert await interim.tick() is None
    clock.now = second.sent + 3.0  # never answered (superseded on the server): it stops holding back
    third = await interim.tick()
    assert third is not None and third.utterance == "what is the weather "
    assert interim.take() == [first, second, third]
    assert interim.take() == [] and interim.deadline() is None and interim.text == ""
    interim.typed("what is the weather ", word_ended=True)  # a new turn: the same text is sent again
    assert (await interim.tick()) is not None and len(sent) == 4


@pytest.fixture
def pty() -> Iterator[tuple[int, int]]:
    master, terminal = os.openpty()
    try:
        yield master, terminal
    finally:
        os.close(master)
        os.close(terminal)


def test_cbreak_restores_the_terminal_when_the_block_raises(pty: tuple[int, int]) -> None:
    _, terminal = pty
    saved = termios.tcgetattr(terminal)
    off = termios.ICANON | termios.ECHO | termios.ISIG
    assert saved[3] & off == off
    with pytest.raises(RuntimeError, match="boom"), cbreak(terminal):
        assert termios.tcgetattr(terminal)[3] & off == 0
        raise RuntimeError("boom")
    assert termios.tcgetattr(terminal) == saved


async def test_keystrokes_feed_decoded_keys_and_restore_the_mode(pty: tuple[int, int]) -> None:
    master, terminal = pty
    saved = termios.tcgetattr(terminal)
    queue: asyncio.Queue[Input] = asyncio.Queue()
    with keystrokes(terminal, queue):
        os.write(master, "hé".encode()[:2])  # a character split between reads
        assert await asyncio.wait_for(queue.get(), 10) == ("keys", "h")
        os.write(master, "hé\x03".encode()[2:])
        assert await asyncio.wait_for(queue.get(), 10) == ("keys", "é\x03")  # ctrl-c is a key, no signal
    assert termios.tcgetattr(terminal) == saved


async def test_a_terminal_that_hangs_up_is_the_end_of_input() -> None:
    master, terminal = os.openpty()
    try:
        queue: asyncio.Queue[Input] = asyncio.Queue()
        with keystrokes(terminal, queue):
            os.close(master)
            assert await asyncio.wait_for(queue.get(), 10) == ("eof", "")
    finally:
        os.close(terminal)
