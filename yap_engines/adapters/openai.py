"""`RemoteEngine`: the seam over any OpenAI-compatible streaming server.

`vllm serve`, `trtllm-serve`, SGLang, NVIDIA Dynamo's frontend, or another Yap. It streams
`POST /v1/chat/completions` (SSE) with `httpx`, so this is how Yap runs past one machine: the Yap
server stays the session edge and this adapter sends each turn to the cluster, with the session id
in a header (`YAP_OPENAI_SESSION_HEADER`, default `X-Session-ID`, which vLLM reads) for sticky routing.

Contract, beyond `InferenceEngine`:
- **Messages, else ids.** A chat endpoint renders the template itself (and so can split reasoning
  with its own parser); the request's `messages` are sent. A request with only token ids is sent
  as a raw token prompt to `POST /v1/completions` (`prompt: [ids]`): that is how a turn continues
  on another replica from the tokens already streamed (`yap_engines.replicas`).
- **Reasoning.** The server's separate reasoning field (`reasoning` on vLLM, `reasoning_content`
  on SGLang and TensorRT-LLM) is re-wrapped into the text stream as `<think>…</think>` before the
  answer, because `Delta` carries one text; `yap_engines.thinking` then splits it like in-process
  output. Each delta is a `RemoteDelta` whose `reasoning`/`content` keep the server's own split.
- **Token ids and usage.** vLLM's `return_token_ids` gives each delta its ids (switch off with
  `YAP_OPENAI_RETURN_TOKEN_IDS=0`); the last delta's `Usage` comes from the `include_usage` chunk
  (cached tokens from `prompt_tokens_details`). A stream closed early (abort) counts what arrived.
- **Structured outputs.** `json_schema`/`json_object` go in `response_format`; `regex`, `choice`
  and `grammar` in vLLM's `structured_outputs` object (vLLM 0.32/0.33; the `guided_*` fields are gone).
- **Sampling.** OpenAI fields always; `top_k`, `min_p`, `repetition_penalty` (vLLM/SGLang/TRT-LLM
  extensions) only when they differ from their neutral value, so a plain OpenAI server still works.
- **Failures.** A connection that cannot be opened is retried `YAP_OPENAI_CONNECT_RETRIES` times
  (nothing was sent yet); nothing is retried once a request went out. Non-2xx answers raise
  `RemoteStatusError` (`.status_code`), a silent server past `YAP_OPENAI_READ_TIMEOUT_S`
  `RemoteTimeoutError`, a body that is not the chat-completions stream `RemoteProtocolError`.
- **Warms.** `prefill` sends the request's messages with `max_tokens=1` and drops the token: the
  server renders them and its own prefix cache keeps what it computed. The remote does not say
  what it cached; `cached_tokens` reports the prompt tokens it was given, an upper bound.
- **Cancellation.** Each stream is read by one task that owns the HTTP response; cancelling or
  closing the generator, or `abort(request_id)`, cancels it, which closes the connection — the
  server sees the disconnect and aborts the request. `num_unfinished_requests()` counts open streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import httpx

from ..errors import EngineDeadError, GenerationError, InvalidRequestError
from ..protocol import PrefillResult
from ..types import ChatRequest, Delta, EngineHealth, FinishReason, Sampling
from ._openai_wire import (
    FINISH,
    Chunk,
    RemoteConnectError,
    RemoteDelta,
    RemoteProtocolError,
    RemoteStatusError,
    RemoteTimeoutError,
    parse_chunk,
    request_body,
    request_path,
    sse_data,
    status_error,
    usage_from,
)

if TYPE_CHECKING:
    from ..replicas import ReplicatedEngine
    from ..settings import EngineSettings


class _Stream:
    """One request's HTTP stream, read by its own task into a queue the generator drains."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Chunk | BaseException | None] = asyncio.Queue(maxsize=256)
        self.task: asyncio.Task[None] | None = None
        self.aborted = False

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


class RemoteEngine:
    """An `InferenceEngine` over an OpenAI-compatible server. Build it with `from_settings`."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        model: str | None = None,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        connect_retries: int = 2,
        session_header: str = "X-Session-ID",
        return_token_ids: bool = True,
        tokenizer: Any = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`transport` replaces the network (httpx's seam), e.g. `httpx.ASGITransport(app)` in tests."""
        origin = base_url.rstrip("/")
        origin = origin[: -len("/v1")] if origin.endswith("/v1") else origin
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        timeout = httpx.Timeout(read_timeout_s, connect=connect_timeout_s)
        self._client = httpx.AsyncClient(base_url=origin, headers=headers, timeout=timeout, transport=transport)
        self.base_url = origin
        self.model_id = model
        self.connect_retries = connect_retries
        self.session_header = session_header
        self.return_token_ids = return_token_ids
        self.tokenizer = tokenizer
        self.max_model_len: int | None = None  # the remote server's context is not known here
        self._streams: dict[str, _Stream] = {}
        self._closed = False

    @classmethod
    def from_settings(cls, settings: EngineSettings) -> RemoteEngine | ReplicatedEngine:
        """One `RemoteEngine` per URL of `OPENAI_BASE_URL`, inside a `ReplicatedEngine` (sticky sessions,
        health checks, retry and continuation) unless `YAP_OPENAI_MAX_ATTEMPTS=1` with a single URL."""
        from ..replicas import ReplicatedEngine
        from ..settings import SettingsError

        urls = settings.openai_base_urls
        if not urls:
            raise SettingsError("OPENAI_BASE_URL: required for ENGINE=openai (e.g. http://127.0.0.1:8000)")
        tokenizer = None
        if settings.openai_tokenizer == "fake":  # replicas that run the fake engine (`yap cluster up`)
            from .fake import FakeTokenizer

            tokenizer = FakeTokenizer()
        elif settings.openai_tokenizer:
            from ..chat import load_tokenizer

            tokenizer = load_tokenizer(settings.openai_tokenizer)
        replicas = {url: cls.for_url(url, settings, tokenizer) for url in urls}
        if len(replicas) == 1 and settings.openai_max_attempts == 1:
            return replicas[urls[0]]
        return ReplicatedEngine(
            replicas, health_interval_s=settings.openai_health_interval_s, max_attempts=settings.openai_max_attempts
        )

    @classmethod
    def for_url(cls, url: str, settings: EngineSettings, tokenizer: Any = None) -> RemoteEngine:
        """The engine for one upstream URL, configured from `settings`."""
        return cls(
            url,
            api_key=settings.openai_api_key,
            model=settings.openai_model,
            connect_timeout_s=settings.openai_connect_timeout_s,
            read_timeout_s=settings.openai_read_timeout_s,
            connect_retries=settings.openai_connect_retries,
            session_header=settings.openai_session_header,
            return_token_ids=settings.openai_return_token_ids,
            tokenizer=tokenizer,
        )

    def num_unfinished_requests(self) -> int:
        """Streams still open (0 once every stream has finished, been closed or aborted)."""
        return len(self._streams)

    async def served_model(self) -> str:
        """`OPENAI_MODEL`, or else the first model the server lists (remembered)."""
        if self.model_id is None:
            models = await self._models()
            if not models:
                raise GenerationError(f"{self.base_url}/v1/models lists no model; set OPENAI_MODEL")
            self.model_id = models[0]
        return self.model_id

    async def model_entry(self) -> dict[str, Any]:
        """The served model's `/v1/models` entry, with whatever limits the server publishes there
        (vLLM: `max_model_len`; Yap: `max_model_len` and `max_completion_tokens`)."""
        model = await self.served_model()
        entries = await self._model_entries()
        return next((entry for entry in entries if entry["id"] == model), {"id": model})

    async def _models(self) -> list[str]:
        return [str(entry["id"]) for entry in await self._model_entries()]

    async def _model_entries(self) -> list[dict[str, Any]]:
        response = await self._send(lambda: self._client.get("/v1/models"))
        if response.status_code >= 400:
            raise status_error(response.status_code, response.text, "GET /v1/models")
        try:
            entries = [dict(m) for m in response.json()["data"]]
            for entry in entries:
                entry["id"] = str(entry["id"])
            return entries
        except (ValueError, KeyError, TypeError) as exc:
            raise RemoteProtocolError(f"GET /v1/models did not return a model list: {response.text[:200]!r}") from exc

    async def _send(self, call: Any) -> Any:
        """Run an HTTP call, retrying only when the connection could not be opened."""
        for attempt in range(self.connect_retries + 1):
            try:
                return await call()
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt == self.connect_retries:
                    raise RemoteConnectError(
                        f"cannot connect to {self.base_url} after {attempt + 1} attempts ({exc!r}): check "
                        "OPENAI_BASE_URL and that the server is up"
                    ) from exc
                await asyncio.sleep(0.2 * 2**attempt)
            except httpx.TimeoutException as exc:
                raise RemoteTimeoutError(f"{self.base_url} timed out: {exc!r}") from exc
        raise AssertionError("unreachable")

    async def prefill(self, request: ChatRequest) -> PrefillResult:
        """Warm the remote's prefix cache: the request's messages with `max_tokens=1`, the token dropped.
        Cancelling closes the connection, which aborts the request on the server."""
        warm = dataclasses.replace(request, sampling=Sampling(temperature=0.0, max_tokens=1))
        usage = None
        async with contextlib.aclosing(self.generate(warm)) as stream:
            async for delta in stream:
                usage = delta.usage or usage
        prompt = usage.prompt_tokens if usage is not None else len(request.prompt_token_ids)
        return PrefillResult(prompt, prompt)

    async def generate(self, request: ChatRequest) -> AsyncGenerator[Delta, None]:
        if self._closed:
            raise EngineDeadError("the remote engine is closed")
        rid = request.request_id
        if rid in self._streams:
            raise InvalidRequestError(f"request_id {rid!r} is already running; use a fresh id per request")
        body = request_body(request, await self.served_model(), return_token_ids=self.return_token_ids)
        headers = {"X-Request-Id": rid}
        if request.session_id:
            headers[self.session_header] = request.session_id
        stream = self._streams[rid] = _Stream()
        path = request_path(request)
        stream.task = asyncio.create_task(self._read(path, body, headers, stream.queue), name=f"remote-{rid}")
        reasoning_open = False
        ids_seen = chunks_seen = 0
        usage_raw: dict[str, Any] | None = None
        finish: FinishReason | None = None
        try:
            while True:
                # A cancellation point per delta even when chunks are already queued, as in the
                # in-process engines (and fairness between streams).
                await asyncio.sleep(0)
                item = await stream.queue.get()
                if item is None or stream.aborted:
                    break
                if isinstance(item, BaseException):
                    raise item
                usage_raw = item.usage or usage_raw
                ids_seen += len(item.token_ids)
                chunks_seen += bool(item.reasoning or item.content)
                text = ""
                if item.reasoning:
                    text = item.reasoning if reasoning_open else "<think>" + item.reasoning
                    reasoning_open = True
                if item.content and reasoning_open:
                    text += "</think>"
                    reasoning_open = False
                text += item.content
                if item.finish is not None:
                    finish = FINISH.get(item.finish, "stop")
                if text or item.token_ids:
                    yield RemoteDelta(text, item.token_ids, reasoning=item.reasoning, content=item.content)
            if stream.aborted:
                finish = "cancelled"
            elif finish is None:
                raise RemoteProtocolError("the stream ended without a finish_reason: not a complete chat completion")
            # An abort without the usage chunk counts what arrived (see `usage_from`).
            usage = usage_from(usage_raw, request, ids_seen, chunks_seen)
            # A reply cut inside its reasoning keeps the think block open, as the model left it.
            yield RemoteDelta("", (), finish, usage)
        finally:
            # Cancelled, closed early, failed or done: the reader task (and its connection) ends here.
            await stream.stop()
            self._streams.pop(rid, None)

    async def _read(self, path: str, body: dict[str, Any], headers: dict[str, str], queue: asyncio.Queue[Any]) -> None:
        """Open the stream (retrying only a failed connect), parse it into chunks, end with None."""
        try:
            async with contextlib.AsyncExitStack() as stack:
                response = await self._send(
                    lambda: stack.enter_async_context(self._client.stream("POST", path, json=body, headers=headers))
                )
                if response.status_code >= 400:
                    await response.aread()
                    raise status_error(response.status_code, response.text, f"POST {path}")
                kind = response.headers.get("content-type", "")
                if not kind.startswith("text/event-stream"):
                    await response.aread()
                    raise RemoteProtocolError(
                        f"expected an SSE stream (text/event-stream), got {kind!r}: {response.text[:200]!r}"
                    )
                try:
                    async for data in sse_data(response):
                        if data.strip() == "[DONE]":
                            break
                        await queue.put(parse_chunk(data))
                except httpx.TimeoutException as exc:
                    raise RemoteTimeoutError(f"{self.base_url} sent nothing for longer than the read timeout") from exc
                except httpx.TransportError as exc:
                    raise GenerationError(f"the connection to {self.base_url} broke mid-stream: {exc!r}") from exc
            await queue.put(None)
        except Exception as exc:  # (cancellation is not an Exception: it ends the task)
            await queue.put(exc)

    async def abort(self, request_id: str) -> None:
        stream = self._streams.get(request_id)
        if stream is None:
            return
        stream.aborted = True
        await stream.stop()
        with contextlib.suppress(asyncio.QueueFull):
            stream.queue.put_nowait(None)

    async def health(self) -> EngineHealth:
        """`GET /health` (where the server has one), then `GET /v1/models` (which must list the model)."""
        if self._closed:
            return EngineHealth(False, "remote engine is closed")
        try:
            response = await self._send(lambda: self._client.get("/health"))
            if response.status_code != 404 and response.status_code >= 400:
                return EngineHealth(False, f"{self.base_url}/health answered {response.status_code}")
            models = await self._models()
        except GenerationError as exc:
            return EngineHealth(False, str(exc))
        if self.model_id is not None and self.model_id not in models:
            return EngineHealth(False, f"{self.base_url} does not serve {self.model_id!r} (it lists {models})")
        return EngineHealth(True, f"{self.base_url} serves {', '.join(models)}")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.gather(*(s.stop() for s in self._streams.values()), return_exceptions=True)
        await self._client.aclose()

    async def __aenter__(self) -> RemoteEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


__all__ = [
    "RemoteConnectError",
    "RemoteDelta",
    "RemoteEngine",
    "RemoteProtocolError",
    "RemoteStatusError",
    "RemoteTimeoutError",
    "request_body",
]
