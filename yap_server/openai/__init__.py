"""`POST /v1/chat/completions` and `GET /v1/models`: OpenAI's wire format (request parsing, strict JSON, routes)."""
