"""The chat-completions harness: one-shot and scenario runs against any engine or OpenAI-compatible
server, with `<think>` splitting and per-run artifacts. The process supervisor lives in the CLI."""
