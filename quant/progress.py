"""Progress display for builds and pushes: one line per stage, tqdm bars for counted work.

Runner events (`stage`, `bar`, `done`) and the main process's own stages (upload) go through the
same `Progress`. Bars draw only on a terminal; the stage lines are always written, so logs and CI
output still say what happened and how long it took.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO


class Progress:
    """Renders stages and bars on `stream` (stderr by default)."""

    def __init__(self, stream: TextIO | None = None, *, prefix: str = "yap quant") -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.prefix = prefix
        self._bars: dict[str, Any] = {}

    def line(self, text: str) -> None:
        self._clear_bars()
        print(f"{self.prefix}: {text}", file=self.stream, flush=True)

    def bar(self, desc: str, n: float, total: float | None) -> None:
        """Move the bar named `desc` to `n` of `total` (created on first use)."""
        from tqdm import tqdm

        bar = self._bars.get(desc)
        if bar is None:
            bar = self._bars[desc] = tqdm(total=total, desc=desc, file=self.stream, leave=False, disable=None)
        if total is not None and bar.total != total:
            bar.total = total
        bar.update(n - bar.n)

    def event(self, event: dict[str, Any], tool: str = "") -> None:
        """Render one runner event."""
        kind = event.get("event")
        if kind == "stage":
            total = event.get("total")
            self.line(f"{tool} {event['stage']}{f' ({total})' if total else ''} ...")
        elif kind == "bar" and event.get("desc"):
            desc, n = str(event["desc"]).strip(), event.get("n") or 0
            self.bar(desc, int(n) if float(n).is_integer() else float(n), event.get("total"))
            if event.get("closed"):  # the tool closed its bar: close ours so finished bars do not pile up
                self._bars.pop(desc).close()
        elif kind == "done":
            self.line(f"{tool} {event['stage']} done in {float(event['seconds']):.1f} s")

    @contextlib.contextmanager
    def stage(self, name: str, total: float | None = None) -> Iterator[Any]:
        """A main-process stage; yields a callback `advance(n)` for its bar."""
        self.line(f"{name} ...")
        started = time.perf_counter()
        seen = 0.0

        def advance(n: float) -> None:
            nonlocal seen
            seen += n
            self.bar(name, seen, total)

        yield advance
        self.line(f"{name} done in {time.perf_counter() - started:.1f} s")

    def _clear_bars(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()

    def close(self) -> None:
        self._clear_bars()
