"""`ToolClassifier`: a small sequence classifier that decides, before the chat model speaks, whether
the client should take a screenshot (look at the screen).

Input (`ToolClassifier.render`, the one renderer for serving and for training the demo classifier):
the session's earlier user turns (whole turns, oldest dropped first, within `TOOL_HISTORY_TOKENS`
clamped to the model's length; 0 by default), joined by the separator token, as the first segment and
the newest utterance as the second, tail-kept when it alone is too long (its end matters most). The
decision is "yes" when the positive label's probability reaches `TOOL_THRESHOLD`.

Concurrent requests are micro-batched: gathered for up to `TOOL_BATCH_WINDOW_MS` or `TOOL_MAX_BATCH`
requests, then run as one batch in a worker thread. The queue is bounded. A request that waits past
`TOOL_TIMEOUT_S`, or whose caller went away, is dropped before it runs and counts as "no".
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import BackendUnavailableError
from .settings import DEMO_TOOL_NAME, env_names, load_settings
from .types import EngineHealth

TOOL_GPU_FRAC_ALONE = 0.1
TOOL_GPU_FRAC_SHARED = 0.2
"""`TOOL_GPU_FRAC` beside the chat engine (`DEPLOY_MODE=both`), as the seed deploys it."""

# Longest input each architecture was trained for; anything else uses its position-embedding size.
_MODEL_MAX_TOKENS = {"longformer": 1536, "bert": 512, "modernbert": 512, "distilbert": 512, "roberta": 512}


#: `TOOL_HISTORY_TOKENS` unset: the demo classifier is trained with this budget (chosen on validation conversations).
DEFAULT_TOOL_HISTORY_TOKENS = 0


class ToolSettings(BaseSettings):
    """The tool classifier's settings (environment first, then `.env`, then defaults)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True, populate_by_name=True)

    tool_model: str | None = Field(
        None,
        validation_alias=env_names("TOOL_MODEL", "AWQ_TOOL_MODEL", "tool_model"),
        description="HF id or path of the classifier (seed alias: AWQ_TOOL_MODEL); unset = the demo classifier",
    )
    tool_gpu_frac: float = Field(
        TOOL_GPU_FRAC_ALONE,
        gt=0,
        le=1,
        validation_alias=env_names("TOOL_GPU_FRAC", "tool_gpu_frac"),
        description="fraction of GPU memory the classifier may use; unset = 0.10, 0.20 in DEPLOY_MODE=both",
    )
    tool_max_length: int | None = Field(
        None,
        gt=2,
        validation_alias=env_names("TOOL_MAX_LENGTH", "tool_max_length"),
        description="input cap in tokens, clamped to the model's limit",
    )
    tool_history_tokens: int = Field(
        DEFAULT_TOOL_HISTORY_TOKENS,
        ge=0,
        validation_alias=env_names("TOOL_HISTORY_TOKENS", "tool_history_tokens"),
        description=(
            "tokens of earlier user turns given to the classifier, clamped to the model's length; 0 (the "
            "default) judges the newest utterance alone: the demo classifier, trained on hand-written "
            "conversations with 0 to 64 tokens, did best with 0 on its hand-written validation "
            "conversations (see yap_engines.demo.tool_classifier); raise it for a model trained on history"
        ),
    )
    tool_threshold: float = Field(0.66, ge=0, le=1, validation_alias=env_names("TOOL_THRESHOLD", "tool_threshold"))
    tool_positive_label: str | None = Field(
        None,
        validation_alias=env_names("TOOL_POSITIVE_LABEL", "tool_positive_label"),
        description="name of the 'yes' label; unset = label index 1",
    )
    tool_batch_window_ms: float = Field(
        3.0, ge=0, validation_alias=env_names("TOOL_BATCH_WINDOW_MS", "tool_batch_window_ms")
    )
    tool_max_batch: int = Field(16, ge=1, validation_alias=env_names("TOOL_MAX_BATCH", "tool_max_batch"))
    tool_queue_size: int = Field(256, ge=1, validation_alias=env_names("TOOL_QUEUE_SIZE", "tool_queue_size"))
    tool_timeout_s: float = Field(2.0, gt=0, validation_alias=env_names("TOOL_TIMEOUT_S", "tool_timeout_s"))
    tool_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", validation_alias=env_names("TOOL_DEVICE", "tool_device")
    )

    def sharing_gpu(self) -> ToolSettings:
        """These settings for a GPU shared with the chat engine (`DEPLOY_MODE=both`): an unset
        `TOOL_GPU_FRAC` becomes 0.20 (the seed's split, with the chat engine's 0.70); a set one is kept."""
        if "tool_gpu_frac" in self.model_fields_set:
            return self
        return self.model_copy(update={"tool_gpu_frac": TOOL_GPU_FRAC_SHARED})

    def resolved_model(self, engines_dir: Path) -> str:
        """THE tool model: `TOOL_MODEL` when set, else the demo classifier's directory under `engines_dir`
        (`YAP_ENGINES_DIR`). Callers that may build the demo classifier check `tool_model is None`."""
        return self.tool_model or str(engines_dir / DEMO_TOOL_NAME)

    @classmethod
    def from_env(cls, **overrides: Any) -> ToolSettings:
        return load_settings(cls, **overrides)


@dataclass(frozen=True)
class ToolDecision:
    """The classifier's answer for one utterance."""

    status: Literal["yes", "no"]
    score: float
    label: str
    latency_ms: float
    reason: Literal["classified", "timeout", "overloaded"] = "classified"


@dataclass(frozen=True)
class Rendered:
    """One step's model input: token ids and their segment ids (0 for earlier turns, 1 for the utterance)."""

    ids: tuple[int, ...]
    type_ids: tuple[int, ...]


@dataclass
class _Pending:
    rendered: Rendered
    future: asyncio.Future[tuple[float, str]]
    deadline: float


class ToolClassifier:
    """A transformers sequence classifier behind a micro-batching queue."""

    name = "tool"

    def __init__(self, model: Any, tokenizer: Any, settings: ToolSettings, *, model_id: str) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings
        self.model_id = model_id
        self.max_length = self.model_max_length(model.config, settings.tool_max_length)
        self.positive_index = self._positive_index(model.config, settings.tool_positive_label)
        self._backend = self._unpadded(tokenizer)
        self._segments = self._takes_segments(model)
        self._queue: asyncio.Queue[_Pending] | None = None
        self._batcher: asyncio.Task[None] | None = None
        self._closed = False
        self.batches_run = 0
        self.items_run = 0

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def load(cls, model: str, settings: ToolSettings | None = None) -> ToolClassifier:
        """Load any `AutoModelForSequenceClassification` model (path or HF id) on GPU when present, else CPU."""
        settings = settings or ToolSettings.from_env()
        try:
            import torch
            from transformers import AutoModelForSequenceClassification, AutoTokenizer
        except ImportError as exc:
            raise BackendUnavailableError(
                'the tool classifier needs torch and transformers: run `make install` or `pip install "yap[cpu]"`'
            ) from exc
        device = settings.tool_device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda":
            torch.cuda.set_per_process_memory_fraction(settings.tool_gpu_frac)
        tokenizer = AutoTokenizer.from_pretrained(model)
        network = AutoModelForSequenceClassification.from_pretrained(model).to(device).eval()
        return cls(network, tokenizer, settings, model_id=model)

    @staticmethod
    def model_max_length(config: Any, override: int | None) -> int:
        """Longformer 1536, BERT-family 512, else the position-embedding size; an override is clamped to it."""
        model_type = getattr(config, "model_type", "")
        positions = int(getattr(config, "max_position_embeddings", 512) or 512)
        limit = _MODEL_MAX_TOKENS.get(model_type, positions)
        if model_type == "roberta":
            limit = min(limit, positions - 2)  # RoBERTa reserves two positions for its padding offset
        return min(override, limit) if override else limit

    @staticmethod
    def _positive_index(config: Any, name: str | None) -> int:
        labels = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
        if name is None:
            return 1 if len(labels) != 1 else 0
        for index, label in labels.items():
            if label == name:
                return index
        raise ValueError(f"TOOL_POSITIVE_LABEL={name!r} is not a label of the model; labels: {sorted(labels.values())}")

    @staticmethod
    def _takes_segments(model: Any) -> bool:
        """Whether the model reads segment ids (BERT-style: two or more token types and the argument)."""
        import inspect

        if int(getattr(model.config, "type_vocab_size", 0) or 0) < 2:
            return False
        return "token_type_ids" in inspect.signature(model.forward).parameters

    @staticmethod
    def _unpadded(tokenizer: Any) -> Any:
        """A copy of the fast tokenizer's backend without fixed padding or truncation of its own.

        Some packaged tokenizers (sentence-transformers exports) pad every encoding to a fixed length:
        `encode` would then feed runs of [PAD] as real tokens, slower and with different scores.
        """
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        backend.no_padding()
        backend.no_truncation()
        return backend

    # -- input ---------------------------------------------------------------------------------
    @property
    def history_budget(self) -> int:
        """`TOOL_HISTORY_TOKENS` clamped to what the model's length leaves beside its special tokens."""
        pair_specials = self.tokenizer.num_special_tokens_to_add(pair=True)
        return max(0, min(self.settings.tool_history_tokens, self.max_length - pair_specials))

    def render(self, history: Sequence[str], utterance: str) -> Rendered:
        """THE model input for one step, served and trained alike (the demo build calls this).

        The utterance alone is tail-kept to the model's length (its end matters most). Earlier user
        turns, newest first, fill what is left of the history budget, whole turns only (the oldest
        dropped first), joined by the tokenizer's separator token. They form the first segment and the
        utterance the second, through the fast tokenizer's own post-processor, so the model's
        special-token template applies (BERT's `[CLS] a [SEP] b [SEP]` with segment ids 0 then 1,
        RoBERTa's `<s> a </s></s> b </s>`, ...).
        """
        from tokenizers import Encoding

        backend = self._backend
        pair_specials = self.tokenizer.num_special_tokens_to_add(pair=True)
        single_specials = self.tokenizer.num_special_tokens_to_add(pair=False)
        current = backend.encode(utterance, add_special_tokens=False)
        current.truncate(max(self.max_length - single_specials, 0), direction="left")
        room = min(self.history_budget, self.max_length - pair_specials - len(current.ids))
        separator = self._turn_separator()
        kept: list[Encoding] = []
        used = 0
        for turn in reversed(history):
            encoding = backend.encode(turn, add_special_tokens=False)
            cost = len(encoding.ids) + (len(separator.ids) if kept and separator is not None else 0)
            if not encoding.ids or used + cost > room:
                break
            kept[:0] = [encoding, separator] if kept and separator is not None else [encoding]
            used += cost
        earlier = Encoding.merge(kept) if kept else None
        processor = backend.post_processor
        if processor is None:
            ids = [*(earlier.ids if earlier else []), *current.ids]
            return Rendered(tuple(ids), (0,) * len(ids))
        done = processor.process(current, add_special_tokens=True) if earlier is None else None
        if done is None:
            done = processor.process(earlier, current, add_special_tokens=True)
        return Rendered(tuple(done.ids), tuple(done.type_ids))

    def encode(self, history: Sequence[str], utterance: str) -> list[int]:
        """The input ids of `render`."""
        return list(self.render(history, utterance).ids)

    def _turn_separator(self) -> Any:
        """The separator token between earlier turns as an encoding (None for a tokenizer without one)."""
        sep = getattr(self.tokenizer, "sep_token", None)
        if not sep:
            return None
        encoding = self._backend.encode(sep, add_special_tokens=False)
        return encoding if encoding.ids else None

    # -- classification ------------------------------------------------------------------------
    async def classify(self, history: Sequence[str], utterance: str) -> ToolDecision:
        """Decide for one utterance; never raises for load: timeouts and a full queue answer "no"."""
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        queue = self._ensure_batcher()
        item = _Pending(
            self.render(history, utterance), loop.create_future(), time.monotonic() + self.settings.tool_timeout_s
        )
        try:
            queue.put_nowait(item)
        except asyncio.QueueFull:
            return self._no(started, "overloaded")
        try:
            score, label = await asyncio.wait_for(asyncio.shield(item.future), self.settings.tool_timeout_s)
        except TimeoutError:
            item.future.cancel()  # the batcher skips it if it has not run yet
            return self._no(started, "timeout")
        except asyncio.CancelledError:
            item.future.cancel()  # barge-in: drop the pending classification
            raise
        status: Literal["yes", "no"] = "yes" if score >= self.settings.tool_threshold else "no"
        return ToolDecision(status, round(score, 4), label, round((time.perf_counter() - started) * 1000, 2))

    def _no(self, started: float, reason: Literal["timeout", "overloaded"]) -> ToolDecision:
        return ToolDecision("no", 0.0, reason, round((time.perf_counter() - started) * 1000, 2), reason)

    def _ensure_batcher(self) -> asyncio.Queue[_Pending]:
        if self._closed:
            raise BackendUnavailableError("the tool classifier is closed")
        if self._queue is None or self._batcher is None or self._batcher.done():
            self._queue = asyncio.Queue(maxsize=self.settings.tool_queue_size)
            self._batcher = asyncio.create_task(self._run_batches(self._queue), name="tool-batcher")
        return self._queue

    async def _run_batches(self, queue: asyncio.Queue[_Pending]) -> None:
        window = self.settings.tool_batch_window_ms / 1000
        while True:
            batch = [await queue.get()]
            gather_until = time.monotonic() + window
            while len(batch) < self.settings.tool_max_batch:
                remaining = gather_until - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except TimeoutError:
                    break
            now = time.monotonic()
            live: list[_Pending] = []
            for item in batch:
                if item.future.done():
                    continue
                if item.deadline > now:
                    live.append(item)
                else:
                    item.future.cancel()
            if not live:
                continue
            try:
                results = await asyncio.to_thread(self._infer, [item.rendered for item in live])
            except Exception as exc:
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            for item, result in zip(live, results, strict=True):
                if not item.future.done():
                    item.future.set_result(result)

    def model_inputs(self, batch: Sequence[Rendered]) -> dict[str, Any]:
        """The padded tensors for `batch` (right padding; segment ids for models that take them)."""
        import torch

        width = max(len(item.ids) for item in batch)
        pad = self.tokenizer.pad_token_id or 0
        inputs = {
            "input_ids": torch.tensor([[*item.ids] + [pad] * (width - len(item.ids)) for item in batch]),
            "attention_mask": torch.tensor([[1] * len(item.ids) + [0] * (width - len(item.ids)) for item in batch]),
        }
        if self._segments:
            inputs["token_type_ids"] = torch.tensor(
                [[*item.type_ids] + [0] * (width - len(item.ids)) for item in batch]
            )
        return inputs

    def _infer(self, batch: list[Rendered]) -> list[tuple[float, str]]:
        """Run one padded batch through the model (in a worker thread); positive-label probabilities."""
        import torch

        device = next(self.model.parameters()).device
        inputs = {name: tensor.to(device) for name, tensor in self.model_inputs(batch).items()}
        with torch.inference_mode():
            logits = self.model(**inputs).logits
        probs = torch.softmax(logits.float(), dim=-1)
        positive = probs[:, self.positive_index].tolist()
        best = probs.argmax(dim=-1).tolist()
        labels = self.model.config.id2label
        self.batches_run += 1
        self.items_run += len(batch)
        return [(float(p), str(labels.get(b, b))) for p, b in zip(positive, best, strict=True)]

    def pending(self) -> int:
        """Requests waiting in the queue (0 when idle)."""
        return self._queue.qsize() if self._queue is not None else 0

    async def health(self) -> EngineHealth:
        if self._closed:
            return EngineHealth(False, "tool classifier is closed")
        if self._batcher is not None and self._batcher.done() and not self._batcher.cancelled():
            return EngineHealth(False, f"tool batcher died: {self._batcher.exception()!r}")
        return EngineHealth(True, f"tool classifier {self.model_id}")

    async def aclose(self) -> None:
        self._closed = True
        if self._batcher is not None:
            self._batcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._batcher
