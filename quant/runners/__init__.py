"""Runners, one per toolchain.

`llmcompressor` and `modelopt` run as `python -m quant.runners.<tool> JOB.json` inside `.venv-quant`:
they import only the standard library and their tool (never pydantic, yap_engines or vLLM), read a
job file, write JSON-line events on stdout (progress, then a result or an error), and send
everything else (the tools' own output) to stderr, which the driver keeps as the build log.
`trtllm_build` drives the legacy `trtllm-build` command of a TensorRT-LLM install, when one exists.
"""
