"""A CPU stand-in for NVIDIA's `tensorrt_llm` (the 1.2.x LLM API), for Yap's tests only.

It is never importable by default: a test puts `tests/stand_ins` on `sys.path` itself and removes
these modules from `sys.modules` afterwards. It mirrors the public API that `TrtEngine` uses, with
the real names and behaviour (see `tests/data/trtllm_api.json`):

- `LLM(model, **kwargs)` checks every keyword against the `LlmArgs` fields and raises `ValueError`
  on an unknown one, or on a TensorRT-engine-only one (`tensorrt_llm._tensorrt_engine.LLM` takes
  those and loads prebuilt engine dirs, clamping `max_batch_size` to the baked-in value).
- `SamplingParams` / `GuidedDecodingParams` are keyword-only dataclasses with the real fields and
  defaults (32 tokens, greedy when no sampling knob is set, seed None meaning 0).
- `generate_async(..., streaming=True)` returns one `RequestOutput`, updated in place with
  cumulative `text`/`token_ids` and `text_diff`/`token_ids_diff`; `abort()` ends it with finish
  reason "cancelled"; stop strings end it with "stop"; prompt tokens in reused KV blocks are
  reported as `cached_tokens`.
- Guided decoding works only when the LLM was built with `guided_decoding_backend`, and runs
  through xgrammar, the library behind the real "xgrammar" backend.

The "model" draws seeded random logits over the real tokenizer's vocabulary, so the text is real
(gibberish) text and sampling, biases and grammars act on it as they would on a GPU.
"""

from .llmapi import LLM
from .sampling_params import SamplingParams

__version__ = "1.2.1+standin"

__all__ = ["LLM", "SamplingParams", "__version__"]
