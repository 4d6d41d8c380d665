"""`WS /ws`, the Yap protocol: `route` (parser and dispatch), `wire` (its envelope, payloads and frames),
`session` (persona, history, sampling base), `turn` (one exchange, as the runtime's work) and `sanitize`
(the streamed text filter)."""

from .route import ws_endpoint

__all__ = ["ws_endpoint"]
