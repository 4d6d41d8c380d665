"""Runner plumbing: the job file, the event stream, progress from the tools' tqdm bars, calibration data."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..calibration import EMBEDDED_TEXTS

TOOL_PACKAGES = ("torch", "transformers", "llmcompressor", "compressed-tensors", "nvidia-modelopt", "datasets")


class Events:
    """JSON lines on the real stdout; anything else the process prints is moved to stderr (the log)."""

    def __init__(self) -> None:
        sys.stdout.flush()
        self._out = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)
        self.durations: dict[str, float] = {}

    def emit(self, event: str, **fields: Any) -> None:
        self._out.write(json.dumps({"event": event, **fields}, default=str) + "\n")
        self._out.flush()

    @contextlib.contextmanager
    def stage(self, name: str, total: int | None = None) -> Iterator[None]:
        """Time a stage and announce its start and end."""
        self.emit("stage", stage=name, total=total)
        started = time.perf_counter()
        yield
        self.durations[name] = round(time.perf_counter() - started, 3)
        self.emit("done", stage=name, seconds=self.durations[name])


def bridge_tqdm(events: Events) -> None:
    """Report the tools' own tqdm bars (calibration, layer loops) as events. Call before importing the tool:
    modules that do `from tqdm import tqdm` bind the class at import time."""
    import tqdm
    import tqdm.std

    base = tqdm.std.tqdm

    class EventTqdm(base):  # type: ignore[misc,valid-type]
        def update(self, n: float | None = 1) -> bool | None:
            result = super().update(n)
            now = time.monotonic()
            if now - getattr(self, "_yap_sent", 0.0) >= 0.2:  # a few events a second is plenty
                self._yap_sent = now
                events.emit("bar", desc=self.desc, n=self.n, total=self.total)
            return result

        def close(self) -> None:
            if not getattr(self, "_yap_closed", False) and not self.disable:
                self._yap_closed = True
                events.emit("bar", desc=self.desc, n=self.n, total=self.total, closed=True)
            super().close()

    tqdm.tqdm = EventTqdm  # type: ignore[misc]
    tqdm.std.tqdm = EventTqdm  # type: ignore[misc]


def load_jobs() -> list[dict[str, Any]]:
    """The jobs of this run: `python -m quant.runners.<tool> JOBS.json` with `{"jobs": [...]}`."""
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m quant.runners.<tool> JOBS.json")
    jobs: list[dict[str, Any]] = json.loads(Path(sys.argv[1]).read_text())["jobs"]
    return jobs


@contextlib.contextmanager
def logging_to(path: str) -> Iterator[None]:
    """Send this process's stderr (and stray stdout) to the job's own log while it runs."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "a") as log:
        os.dup2(log.fileno(), 2)
        os.dup2(log.fileno(), 1)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.dup2(saved, 1)
            os.close(saved)


def versions() -> dict[str, str]:
    found = {}
    for name in TOOL_PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


def pack_embedded(nsamples: int) -> list[str]:
    """`nsamples` calibration samples from the embedded texts: each is the whole set joined, starting at a
    different text, so every sample is as long as the set allows (the tokenizer then cuts it to the sample
    length) and no text repeats inside a sample."""
    n = len(EMBEDDED_TEXTS)
    step = 7 if n % 7 else 5  # coprime with the set size, so the starts spread over the set
    return ["\n\n".join(EMBEDDED_TEXTS[(i * step + j) % n] for j in range(n)) for i in range(nsamples)]


def load_texts(source: dict[str, Any], nsamples: int) -> tuple[list[str], dict[str, Any]]:
    """Up to `nsamples` non-empty texts from the source, and a record of what was actually used.

    The embedded set is packed (`pack_embedded`): it is small, and the seed's defaults ask for 64 samples
    of up to 2,048 tokens."""
    kind, name, column = source["kind"], source["name"], source.get("column", "text")
    if kind == "embedded":
        packed = pack_embedded(nsamples)
        return packed, {**source, "nsamples": len(packed), "packed_from": len(EMBEDDED_TEXTS)}
    else:
        import datasets

        split = f"{source.get('split', 'train')}[:{nsamples * 2}]"
        path = Path(name)
        if kind == "local" and path.is_file():
            builder = {".txt": "text", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
            fmt = builder.get(path.suffix)
            if fmt is None:
                raise ValueError(
                    f"AWQ_CALIB_DATASET={name}: use a .txt, .jsonl, .json, .parquet or .csv file, or a dir"
                )
            ds = datasets.load_dataset(fmt, data_files=str(path), split=split)
        else:
            ds = datasets.load_dataset(name, source.get("config"), split=split)
        if column not in ds.column_names:
            raise ValueError(f"calibration dataset {name} has no {column!r} column (columns: {ds.column_names})")
        texts = [t for t in ds[column] if isinstance(t, str) and t.strip()]
    used = texts[:nsamples]
    if not used:
        raise ValueError(f"calibration dataset {name} gave no text")
    return used, {**source, "nsamples": len(used)}


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run(load_tools: Callable[[Events], Any], main: Callable[[Events, dict[str, Any], Any], dict[str, Any]]) -> None:
    """Import the tool once, then run every job, each logging to its own file and ending in a result event.

    The first failure ends the run with an error event (naming the job) and exit status 1.
    """
    events = Events()
    index = 0
    try:
        jobs = load_jobs()
        with events.stage("import"):
            tools = load_tools(events)
        for index, job in enumerate(jobs):
            if index:
                events.durations = {}
            with logging_to(job["log"]):
                result = main(events, job, tools)
            events.emit("result", index=index, **result, durations=events.durations, versions=versions())
    except BaseException as exc:
        traceback.print_exc()
        events.emit("error", index=index, type=type(exc).__name__, message=str(exc) or repr(exc))
        sys.exit(1)
