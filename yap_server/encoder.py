"""The sentence encoder behind `/embeddings`: a Hugging Face encoder with mean pooling and L2
normalisation (`SentenceEncoder`), and the one instance an app owns (`Encoder`), loaded in a worker thread
at start-up or on first use and closed by the lifespan."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from .settings import ServerSettings

DEFAULT_EMBED_NAME = "all-MiniLM-L6-v2"
BATCH = 32


class SentenceEncoder:
    """A Hugging Face encoder with mean pooling and L2 normalisation (sentence-transformers' recipe)."""

    def __init__(self, path: str, name: str) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.name = name
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.max_length = min(int(self.tokenizer.model_max_length), int(self.model.config.max_position_embeddings))

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> SentenceEncoder:
        if settings.embed_model:
            return cls(settings.embed_model, settings.embed_model)
        from yap_engines.demo import minilm_dir

        return cls(str(minilm_dir()), DEFAULT_EMBED_NAME)

    def answers_to(self, model: str) -> bool:
        """True when `model` names this encoder (its id, or the last part of its path)."""
        return model in (self.name, Path(self.name).name)

    def encode(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """Unit-length embeddings of `texts`, and the number of tokens read."""
        import torch

        vectors: list[list[float]] = []
        tokens = 0
        with torch.inference_mode():
            for start in range(0, len(texts), BATCH):
                batch = self.tokenizer(
                    texts[start : start + BATCH],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                vectors.extend(torch.nn.functional.normalize(pooled, p=2, dim=1).tolist())
                tokens += int(batch["attention_mask"].sum())
        return vectors, tokens


class Encoder:
    """The embeddings encoder of one app, owned by its lifespan (which starts and closes it).

    With `EMBED_PRELOAD` (the default) the lifespan starts loading the weights in a worker thread as the
    server starts, so no request creates it; `/embeddings` awaits a load still under way. Loading torch
    and the encoder costs seconds of CPU, so `EMBED_PRELOAD=0` leaves it to the first `/embeddings` call
    for a server that never embeds (most voice deployments)."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self._lock = asyncio.Lock()
        self._encoder: SentenceEncoder | None = None
        self._preload: asyncio.Task[Any] | None = None

    @property
    def loaded(self) -> bool:
        return self._encoder is not None

    def preload(self) -> None:
        """Start loading in the background (the lifespan calls this at start-up when `EMBED_PRELOAD` is on)."""
        if self._preload is None:
            self._preload = asyncio.create_task(self.get())

    async def get(self) -> SentenceEncoder:
        """The loaded encoder (loading it if no load has finished; a failed load is retried by the next call)."""
        async with self._lock:
            if self._encoder is None:
                self._encoder = await asyncio.to_thread(SentenceEncoder.from_settings, self.settings)
            return self._encoder

    async def aclose(self) -> None:
        if self._preload is not None:
            self._preload.cancel()
            await asyncio.gather(self._preload, return_exceptions=True)
        self._encoder = None
