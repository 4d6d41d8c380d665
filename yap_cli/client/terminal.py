"""Keystrokes from a terminal for `yap client live`: the terminal in cbreak mode, and the line being typed.

`cbreak(fd)` turns off the terminal's own line editing and echo (and its signal keys, so that Ctrl-C
arrives as a key and the session ends cleanly) and restores the saved mode on every way out.
`keystrokes(fd, queue)` does that and feeds what is typed into `queue` as ("keys", text), and
("eof", "") when the terminal goes away; a SIGTERM meanwhile is a Ctrl-C. `LineEditor` keeps the
line: printable characters, backspace, Ctrl-U, Enter, Ctrl-D and Ctrl-C; escape sequences (arrow keys)
are dropped.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

Input = tuple[str, str]
"""An item of live's input queue: ("keys", text) typed, ("line", text) read from a pipe, ("eof", "")."""

ENTER = "\r\n"
BACKSPACE = "\x7f\b"
CTRL_C, CTRL_D, CTRL_U, ESC = "\x03", "\x04", "\x15", "\x1b"
ERASE = "\b \b"  # moves back over the last character shown and blanks it


@contextmanager
def cbreak(fd: int) -> Iterator[None]:
    """The terminal on `fd` in cbreak mode (no line editing, no echo, Ctrl-C/Ctrl-Z/Ctrl-V as plain keys;
    output processing unchanged) for the block; the saved mode is restored however the block ends (unless
    the terminal is gone)."""
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd, termios.TCSANOW)
        mode = termios.tcgetattr(fd)
        mode[tty.LFLAG] &= ~(termios.ISIG | termios.IEXTEN)
        termios.tcsetattr(fd, termios.TCSANOW, mode)
        yield
    finally:
        try:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        except termios.error:  # the terminal hung up: there is no mode left to restore
            pass


@contextmanager
def keystrokes(fd: int, queue: asyncio.Queue[Input]) -> Iterator[None]:
    """The terminal on `fd` in cbreak mode, what is typed fed into `queue` by the running event loop."""
    loop = asyncio.get_running_loop()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except OSError:  # the terminal hung up
            data = b""
        if not data:
            loop.remove_reader(fd)
            queue.put_nowait(("eof", ""))
        elif text := decoder.decode(data):
            queue.put_nowait(("keys", text))

    # a SIGTERM (`kill`) ends the session as Ctrl-C does, so the terminal's mode is restored on the way out
    loop.add_signal_handler(signal.SIGTERM, queue.put_nowait, ("keys", CTRL_C))
    try:
        with cbreak(fd):
            loop.add_reader(fd, readable)
            try:
                yield
            finally:
                loop.remove_reader(fd)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


@dataclass
class Typed:
    """What a run of keystrokes did: the lines Enter completed (in order), the line being typed after
    them, whether it changed and whether a word ended in it (whitespace typed after a word), what to
    echo so the screen shows it, and whether Ctrl-C (`quit`) or Ctrl-D (`eof`) came (keys after either
    are dropped)."""

    entered: list[str] = field(default_factory=list)
    line: str = ""
    changed: bool = False
    word_ended: bool = False
    echo: str = ""
    quit: bool = False
    eof: bool = False


class LineEditor:
    """The line being typed, kept by the client while the terminal is in cbreak mode."""

    def __init__(self) -> None:
        self.line = ""
        self._escape = ""  # the escape sequence being skipped

    def feed(self, keys: str) -> Typed:
        """Apply `keys`; what they did."""
        typed = Typed()
        for key in keys:
            if self._skip(key):
                continue
            if key == CTRL_C or key == CTRL_D:
                typed.quit, typed.eof = key == CTRL_C, key == CTRL_D
                break
            if key in ENTER:
                typed.entered.append(self.line)
                typed.echo += "\n"
                self.line, typed.changed, typed.word_ended = "", False, False
            elif key in BACKSPACE:
                if self.line:
                    self.line, typed.changed = self.line[:-1], True
                    typed.echo += ERASE
            elif key == CTRL_U:
                typed.echo += ERASE * len(self.line)
                self.line, typed.changed = "", True
            elif key.isprintable() or key == "\t":
                key = " " if key == "\t" else key
                if key == " " and self.line and not self.line[-1].isspace():
                    typed.word_ended = True
                self.line, typed.changed = self.line + key, True
                typed.echo += key
        typed.line = self.line
        return typed

    def _skip(self, key: str) -> bool:
        """Whether `key` belongs to an escape sequence (ESC, then `[` or `O` and the sequence's final key)."""
        if key == ESC:
            self._escape = ESC
            return True
        if not self._escape:
            return False
        if self._escape == ESC and key in "[O":
            self._escape += key
        elif self._escape.endswith("O") or self._escape == ESC or "@" <= key <= "~":
            self._escape = ""  # the sequence's last key
        return True
