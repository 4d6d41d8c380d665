"""`WS /v1/responses`: OpenAI's Responses API over a WebSocket (events, conversation chaining, runs, route)."""
