"""Incremental cleaning of streamed chat-model text before it reaches a text-to-speech engine.

The reply flows through four small streaming stages, in this order:

1. strip (markup, stage directions, emoji):
   - ``**`` markers and stray ``*`` are dropped (``**Bold**`` -> ``Bold``); ``_x_`` is left alone.
   - ``*laughs*``: an asterisk span of 1-40 characters on one line that neither starts nor ends with whitespace.
   - ``(sighs)``, ``[laughs softly]``: a bracketed span of 1-3 all-lowercase ASCII words of 2-12 letters separated
     by single spaces. Digits, capitals or punctuation keep it (``(USA)``, ``(2 items)``, ``(a)``); a lowercase aside
     such as ``(see above)`` is removed as well, by design.
   - emoji and pictographs, variation selectors, keycap and tag marks, and a zero-width joiner right after one.
   - ASCII emoticons (``:) :-) :( :D :P ;) <3 xD ^_^``) standing alone: neither preceded nor followed by a word
     character or ``/`` (so ``10:30``, ``xDoc`` and URLs are left alone).
2. space: any whitespace run (newlines, tabs) becomes one space; that space is dropped before ``, . ! ? ; : …`` when it
   follows a word character, and at the very end of the reply (trailing whitespace is trimmed by ``finish()``).
3. verbalise:
   - ``°C`` / ``°F`` / ``°`` -> `` degrees Celsius`` / `` degrees Fahrenheit`` / `` degrees`` (eats one space before).
   - ``%`` right after a digit (one space allowed) -> `` percent``.
   - a digit, then an unspaced hyphen or an en/em dash (U+2013/U+2014, one space allowed each side), then a digit:
     ``5-10``, ``5 — 10`` -> ``5 to 10``.
   - an en/em dash between word characters (``word — word``, ``word—word``) -> ``, ``; other dashes are kept.
   - ``…`` and any run of 3+ dots (``....``, ``.…``) -> ``...``; exactly two dots -> ``.``.
4. start: leading whitespace is stripped, and the first alphanumeric character of the reply is upper-cased when it is
   a letter (skipping punctuation such as quotes; ``30 degrees`` stays lower-case).

Stability contract: ``feed()`` only returns text that no later input can change. Each rule stage keeps the unread tail
in a buffer and decides a rule at the buffer head only once the decision is certain: the rule's ``pending`` pattern
(the tails on which its outcome could still change) no longer matches, or ``horizon`` characters past the head are
known (the stage then decides on exactly those characters, as if the text ended there), or the reply has finished.
Every decision is thus a function of the text alone, so any chunking gives the same output, and the held text
(``StreamSanitizer.pending``) stays below ``window`` characters; only a few characters of left context are kept for
look-behind, and emitted text is never scanned again. The strip stage gets a horizon of ``window - 8`` characters and
the verbalise stage 8 (``window`` must be at least 16), so an unclosed emote opener is a stray ``*`` past it.
Known simplifications: ISO dates read as ranges (``2024-01-15`` -> ``2024 to 01 to 15``); ``*really*`` is an emote.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["StreamSanitizer", "sanitize_text"]

_VERBAL_HORIZON = 8  # look-ahead the verbalise stage may need: " — 5", "..…", " °C" (at most 4 characters)
_MIN_WINDOW = 2 * _VERBAL_HORIZON
_CONTEXT = 4  # characters already read that stay visible to look-behind assertions

# Emoji and pictograph blocks, variation selectors, combining keycap, tag characters (flag sequences).
_EMOJI = (
    "\u2300-\u23ff\u2600-\u27bf\u2b1b\u2b1c\u2b50\u2b55\u3030\u303d\u3297\u3299"
    "\ufe0e\ufe0f\u20e3\U0001f000-\U0001faff\U000e0020-\U000e007f"
)
_DEGREES = MappingProxyType({"C": " degrees Celsius", "F": " degrees Fahrenheit", "": " degrees"})
_CLOSERS = frozenset(",.!?;:…")
_FIRST_ALNUM = re.compile(r"[^\W_]")


@dataclass(frozen=True)
class _Rule:
    """A rewrite tried at the head of a stage's buffer; rules are tried in order and the first match wins.

    ``pattern`` must consume at least one character; its look-behind may see ``_CONTEXT`` characters already read.
    ``pending`` matches every unread tail on which ``pattern``'s outcome could still change with more text (a superset
    only delays output); while it matches the whole tail, the stage waits.
    """

    name: str
    pattern: re.Pattern[str]
    replace: str | Callable[[re.Match[str]], str]
    pending: re.Pattern[str] | None = None


_BRACKET_WORDS = r"[a-z]{2,12}(?: [a-z]{2,12}){0,2}"
_DASH_PENDING = re.compile(r"(?:-| ?[\u2013\u2014]? ?)\Z")

_STRIP_RULES = (
    _Rule("bold-marker", re.compile(r"\*\*"), "", re.compile(r"\*\Z")),
    _Rule(
        "asterisk-emote",
        re.compile(r"\*(?![\s*])[^*\n]{1,40}(?<!\s)\*"),
        "",
        re.compile(r"\*(?![\s*])[^*\n]{0,40}\Z"),
    ),
    _Rule("stray-asterisk", re.compile(r"\*"), ""),
    _Rule(
        "bracket-emote",
        re.compile(rf"\({_BRACKET_WORDS}\)|\[{_BRACKET_WORDS}\]"),
        "",
        re.compile(r"[(\[][a-z ]{0,40}\Z"),
    ),
    _Rule(
        "emoticon",
        re.compile(r"(?<![\w/])(?:[:;]-?(?:\){1,4}|\({1,4}|[DPp])|<3{1,3}|[xX]D{1,3}|\^_\^)(?![\w/])"),
        "",
        re.compile(r"(?:[:;]-?[()DPp]{0,4}|<3{0,3}|[xX]D{0,3}|\^(?:_\^?)?)\Z"),
    ),
    _Rule("emoji", re.compile(f"[{_EMOJI}]"), ""),
    _Rule("emoji-joiner", re.compile(f"(?<=[{_EMOJI}])\u200d"), ""),
)
# Characters no strip rule can start at, copied through in one go: an `x`/`X` too, unless a `D` (an `xD` emoticon)
# or the end of the buffer (undecided) follows it.
_STRIP_PLAIN = re.compile(f"(?:[^*(\\[:;<xX^\u200d{_EMOJI}]|[xX](?=[^D]))+")

_VERBAL_RULES = (
    _Rule("dot-run-tail", re.compile(r"(?<=[.…])[.…]"), ""),  # only reachable right after an ellipsis
    _Rule("ellipsis", re.compile(r"\.{0,2}…|\.{3}"), "...", re.compile(r"\.{1,2}\Z")),
    _Rule("double-dot", re.compile(r"\.\."), "."),
    _Rule("degrees", re.compile(r" ?°([CF]?)"), lambda m: _DEGREES[m.group(1)], re.compile(r" ?°?\Z")),
    _Rule("percent", re.compile(r"(?<=\d) ?%"), " percent", re.compile(r" \Z")),
    _Rule("number-range", re.compile(r"(?<=\d)(?:-| ?[\u2013\u2014] ?)(?=\d)"), " to ", _DASH_PENDING),
    _Rule("word-dash", re.compile(r"(?<=\w) ?[\u2013\u2014] ?(?=\w)"), ", ", _DASH_PENDING),
)
# Likewise for the verbalise rules: a space starts a match only before `°`, `%` or a dash (or, at the end of the
# buffer, may still do so), so one followed by anything else is plain too.
_VERBAL_PLAIN = re.compile(r"(?:[^ .…°%\-\u2013\u2014]| (?=[^ °%\u2013\u2014]))+")


class _RuleStage:
    """Applies a rule table to a stream, holding back at most ``horizon - 1`` unread characters."""

    def __init__(self, rules: tuple[_Rule, ...], plain: re.Pattern[str], horizon: int) -> None:
        self._rules = rules
        self._plain = plain
        self._horizon = horizon
        self._context = ""
        self.buffer = ""  # unread text, waiting for a certain decision

    def push(self, text: str, *, eof: bool = False) -> str:
        s = self._context + self.buffer + text
        pos = len(self._context)
        out: list[str] = []
        while pos < len(s):
            run = self._plain.match(s, pos)
            if run is not None:
                out.append(run.group())
                pos = run.end()
                continue
            step = self._decide(s, pos, eof, out)
            if step == 0:
                break
            pos += step
        self._context = s[max(0, pos - _CONTEXT) : pos]
        self.buffer = s[pos:]
        return "".join(out)

    def _decide(self, s: str, pos: int, eof: bool, out: list[str]) -> int:
        """Decide the head at ``pos`` from at most ``horizon`` characters; return how many it consumed (0: wait)."""
        end = min(len(s), pos + self._horizon)
        final = eof or end - pos == self._horizon
        for rule in self._rules:
            if not final and rule.pending is not None and rule.pending.fullmatch(s, pos, end):
                return 0
            m = rule.pattern.match(s, pos, end)
            if m is not None:
                out.append(rule.replace if isinstance(rule.replace, str) else rule.replace(m))
                return m.end() - pos
        out.append(s[pos])
        return 1


class _SpaceStage:
    """Collapses whitespace runs to one space, dropped before closing punctuation after a word and at the end."""

    def __init__(self) -> None:
        self.held = False  # a whitespace run was read and its single space is not yet emitted
        self._after_word = False

    def push(self, text: str, *, eof: bool = False) -> str:
        out: list[str] = []
        for ch in text:
            if ch.isspace():
                self.held = True
                continue
            if self.held and not (self._after_word and ch in _CLOSERS):
                out.append(" ")
            self.held = False
            out.append(ch)
            # "°" and "%" count as word ends: the verbalise stage turns them into "degrees"/"percent".
            self._after_word = ch.isalnum() or ch in "_°%"
        if eof:
            self.held = False
        return "".join(out)


class _StartStage:
    """Strips leading whitespace and upper-cases the first alphanumeric character when it is a letter."""

    def __init__(self) -> None:
        self._started = False
        self._done = False

    def push(self, text: str, *, eof: bool = False) -> str:
        if self._done:
            return text
        if not self._started:
            text = text.lstrip()
            self._started = bool(text)
        m = _FIRST_ALNUM.search(text)
        if m is None:
            return text
        self._done = True
        i = m.start()
        return text[:i] + text[i].upper() + text[i + 1 :]


class StreamSanitizer:
    """Incremental cleaner: feed(delta) -> cleaned text that is now stable; finish() -> the rest.

    ``pending`` is the text read but not yet emitted; after every ``feed()`` it is shorter than ``window``.
    ``finish()`` flushes the rest, trims trailing whitespace and resets the sanitizer for a new reply.
    """

    def __init__(self, *, window: int = 64) -> None:
        if window < _MIN_WINDOW:
            raise ValueError(f"window must be at least {_MIN_WINDOW}, got {window}")
        self.window = window
        self._reset()

    def _reset(self) -> None:
        self._strip = _RuleStage(_STRIP_RULES, _STRIP_PLAIN, self.window - _VERBAL_HORIZON)
        self._space = _SpaceStage()
        self._verbal = _RuleStage(_VERBAL_RULES, _VERBAL_PLAIN, _VERBAL_HORIZON)
        self._start = _StartStage()

    @property
    def pending(self) -> str:
        """The held, possibly unstable tail (stage buffers in text order); ``len(pending) < window``."""
        return self._verbal.buffer + (" " if self._space.held else "") + self._strip.buffer

    def _run(self, text: str, eof: bool) -> str:
        text = self._strip.push(text, eof=eof)
        text = self._space.push(text, eof=eof)
        text = self._verbal.push(text, eof=eof)
        return self._start.push(text, eof=eof)

    def feed(self, delta: str) -> str:
        return self._run(delta, eof=False)

    def finish(self) -> str:
        rest = self._run("", eof=True)
        self._reset()
        return rest


def sanitize_text(text: str) -> str:
    """One-shot form: the same result as feeding the whole text and calling finish()."""
    sanitizer = StreamSanitizer()
    return sanitizer.feed(text) + sanitizer.finish()
