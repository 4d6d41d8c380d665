"""Build SmolLM2 quantized variants and score them against their bounds: the table behind `quant.bounds`.

    .venv/bin/python benchmarks/quant_quality.py OUT.json [MODEL_DIR] [VARIANT ...] [--no-floor]

Each VARIANT is a name from `VARIANTS` (default: the int8_sq study: SmoothQuant strength 0.5 and 0.8 at the
seed's ModelOpt calibration, 64 samples x 512 tokens in batches of 16, and INT8 weight-only). The evaluation
floor (the bf16 base in bf16 against itself in float32) is measured unless --no-floor. Every row carries its 95%
intervals, its margin-conditioned top-1 and its verdict; the JSON holds the full reports.
Needs `.venv-quant` (YAP_QUANT_VENV, else ./.venv-quant).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from quant.build import build_many
from quant.deploy import CPU_CALIBRATION
from quant.evaluate import evaluate_floor, evaluate_many, table
from quant.gpu import Gpu
from quant.progress import Progress
from quant.settings import QuantSettings

SEED_TRT = {"trt_calib_size": 64, "trt_calib_seqlen": 512, "trt_calib_batch_size": 16}
CPU_LLMC = {"awq_nsamples": CPU_CALIBRATION[0], "awq_seqlen": CPU_CALIBRATION[1]}
SMALL_TRT = {"trt_calib_size": 4, "trt_calib_seqlen": 64, "trt_calib_batch_size": 4}
# name -> (backend, mode, QUANTIZATION, simulated SM, extra settings)
VARIANTS: dict[str, tuple[str, str, str | None, int | None, dict[str, Any]]] = {
    "int8_sq_a0.5": ("trt", "int8", "int8_sq", 86, {**SEED_TRT, "trt_smoothquant_alpha": 0.5}),
    "int8_sq_a0.8": ("trt", "int8", "int8_sq", 86, {**SEED_TRT, "trt_smoothquant_alpha": 0.8}),
    "int8_wo": ("trt", "int8", "int8_wo", 86, {}),
    "fp8": ("trt", "8bit", None, 90, SMALL_TRT),
    "int4_awq": ("trt", "4bit", None, None, SMALL_TRT),
    "fp8_dynamic": ("vllm", "8bit", None, 90, {}),
    "fp8_w8a16": ("vllm", "8bit", None, 86, {}),
    "w8a8_int8": ("vllm", "int8", None, None, CPU_LLMC),
    "awq": ("vllm", "awq", None, None, CPU_LLMC),
    "w4a16": ("vllm", "4bit", "w4a16", None, {}),
    "w4a16_asym": ("vllm", "4bit", "w4a16_asym", None, {}),
}


def main(argv: list[str]) -> int:
    floor_wanted = "--no-floor" not in argv
    argv = [a for a in argv if a != "--no-floor"]
    out = Path(argv[0])
    model = Path(argv[1] if len(argv) > 1 else "engines/smollm2-135m-instruct").resolve()
    names = argv[2:] or list(VARIANTS)
    venv = Path(os.environ.get("YAP_QUANT_VENV", ".venv-quant")).resolve()
    progress = Progress()
    with tempfile.TemporaryDirectory(prefix="yap-quant-quality-") as store:
        requests = []
        for name in names:
            backend, mode, quantization, sm, extra = VARIANTS[name]
            settings = QuantSettings.from_env(model=str(model), backend=backend, mode=mode, quantization=quantization,
                                              engines_dir=Path(store), quant_venv=venv, **extra)  # fmt: skip
            requests.append((settings, Gpu(sm, "simulated", "flag") if sm is not None else None))
        started = time.perf_counter()
        builds = build_many(requests, progress=progress)
        build_wall = time.perf_counter() - started
        settings = requests[0][0]
        paths = [b.path for b in builds]
        assert all(paths)
        reports = evaluate_many([(p, None) for p in paths if p is not None], settings=settings, progress=progress)
        floor = evaluate_floor(model, settings=settings, progress=progress) if floor_wanted else None
    rows: dict[str, Any] = {"eval_floor": floor.model_dump(mode="json")} if floor else {}
    for name, build, report in zip(names, builds, reports, strict=True):
        rows[name] = {**report.model_dump(mode="json"), "calibration": build.metadata.calibration if build.metadata
                      else None, "recipe": build.metadata.recipe if build.metadata else None}  # fmt: skip
    lines = table({**({"eval_floor": floor} if floor else {}), **dict(zip(names, reports, strict=True))})
    load = os.getloadavg()
    out.write_text(json.dumps({"rows": rows, "table": lines, "build_wall_s": round(build_wall, 1),
                               "load_average": load}, indent=1) + "\n")  # fmt: skip
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
