"""Quantization and builds: plan, quantize in a separate environment, store, publish.

- `quant.plan`     `plan(model, backend, mode, sm) -> QuantPlan`, pure, from the table in `quant.capabilities`
- `quant.gpu`      SM detection (NVML, then torch; `SM=` overrides)
- `quant.detect`   pre-quantized / MoE / tool-model detection from the checkpoint's own files
- `quant.env`      the tools' own venv (`.venv-quant`), created once
- `quant.build`    plan -> runner (`quant.runners.*`, in `.venv-quant`) -> `engines/<slug>-<key>/`
- `quant.push`     `--push-quant` / `--push-engine` to the Hugging Face Hub
- `quant.cli`      `yap quant plan|build|push|env`

Importing this package (or any of those modules) imports no torch, vLLM, TensorRT-LLM, transformers,
ModelOpt or llm-compressor; the runners import the tools inside `.venv-quant`.
"""
