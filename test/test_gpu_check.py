"""bench/gpu_check.py in its reduced mode: every part is reported, the CPU equivalence check really
compares the fused op with the reference and passes, and the table is printed.

Runs in-process through ``main(argv)`` (on CPU when there is no CUDA; the same code paths the GPU run
takes, at tiny sizes). No timing is asserted: the numbers depend on the machine and its load.
"""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from bench import gpu_check


def _has_numbers(obj) -> bool:
    """True when ``obj`` holds at least one number (bools excluded) somewhere inside."""
    if isinstance(obj, dict):
        return any(_has_numbers(v) for v in obj.values())
    if isinstance(obj, list):
        return any(_has_numbers(v) for v in obj)
    return isinstance(obj, (int, float)) and not isinstance(obj, bool)


@pytest.fixture(scope="module")
def reduced_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check.json"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = gpu_check.main(["--reduced", "--out", str(out)])
    return rc, json.loads(out.read_text()), buf.getvalue()


@pytest.mark.slow          # the reduced run: ~30 s on a loaded 2-core CPU
def test_every_part_has_numbers_or_a_reason(reduced_run):
    rc, result, _ = reduced_run
    assert rc == 0
    assert result["reduced"] is True
    env = result["environment"]
    assert "torch" in env and "device_name" in env and "driver_version" in env and "triton" in env
    assert set(result["parts"]) == set(gpu_check.PARTS)
    assert set(result["part_seconds"]) == set(gpu_check.PARTS)
    for name, body in result["parts"].items():
        assert isinstance(body, dict), name
        assert "error" not in body, f"{name}: {body.get('error')}"
        if "skipped" in body:
            assert isinstance(body["skipped"], str) and body["skipped"].strip(), name
        else:
            assert _has_numbers(body) or name == "targets", name


@pytest.mark.slow          # the reduced run: ~30 s on a loaded 2-core CPU
def test_cpu_equivalence_compared_fused_with_reference_and_passed(reduced_run):
    _, result, _ = reduced_run
    eq = result["parts"]["equivalence"]
    assert eq["tolerances"]["float32"]["outputs"] <= 1e-4
    for level in ("composite", "render_rays"):
        entry = eq[level]["float32"]
        assert "error" not in entry, entry
        # Both paths were run and compared, outputs and gradients.
        assert any(k.startswith("grad.") for k in entry["fused_vs_reference"])
        assert any(not k.startswith("grad.") for k in entry["fused_vs_reference"])
        assert entry["passed"] is True and entry["failed"] == [], entry
        assert entry["max_fused_err"] is not None
    # The op with its inputs cast to bf16 (the fused CPU op runs in bf16) passes its looser tolerance.
    assert eq["composite"]["bfloat16"]["passed"] is True, eq["composite"]["bfloat16"]
    # Autocast around the whole renderer (the mixed-precision training path) runs and passes.
    assert eq["render_rays"]["bfloat16"].get("passed") is True, eq["render_rays"]["bfloat16"]


@pytest.mark.slow          # the reduced run: ~30 s on a loaded 2-core CPU
def test_gpu_only_items_say_why_they_were_skipped(reduced_run):
    _, result, _ = reduced_run
    ml = result["parts"]["model_latency"]
    assert ml["base"]["skipped"]
    assert ml["tiny"]["float32"]["median_ms"] > 0 and ml["tiny"]["float32"]["stage_median_ms"]
    assert ml["tiny_fusion"]["float32"]["median_ms"] > 0
    if not result["environment"]["cuda_available"]:
        assert ml["tiny"]["cuda_graph_bfloat16"]["skipped"]
        assert result["parts"]["render_timing"]["peak_bandwidth_gb_s"] is None
    for t in result["parts"]["targets"].values():
        assert {"target", "measured", "pass"} <= set(t)
        assert t["pass"] is None                       # reduced runs never claim a target


@pytest.mark.slow          # the reduced run: ~30 s on a loaded 2-core CPU
def test_pipeline_and_train_step_report_their_numbers(reduced_run):
    _, result, _ = reduced_run
    pl = result["parts"]["pipeline"]["tiny"]
    for key in ("preprocess_ms", "inference_ms", "postprocess_ms", "end_to_end_hz"):
        assert pl[key] > 0, key
    ts = result["parts"]["train_step"]
    assert ts["measured"] == "self_supervised" and ts["self_supervised"]["median_ms"] > 0
    assert "photometric" in ts["self_supervised"]["loss_terms"]


@pytest.mark.slow          # the reduced run: ~30 s on a loaded 2-core CPU
def test_table_is_printed(reduced_run):
    _, result, text = reduced_run
    assert text.startswith("mv4d GPU check (reduced)")
    for name in gpu_check.PARTS:
        assert f"== {name} (" in text
    assert "fused_speedup_fwd_bwd_composite" in text and result["out"] in text


def test_peak_bandwidth_table_matches_the_specific_part_first():
    assert gpu_check.peak_bandwidth("NVIDIA H200")[0] == pytest.approx(4.8e12)
    assert gpu_check.peak_bandwidth("NVIDIA GH200 480GB")[0] == pytest.approx(4.0e12)
    assert gpu_check.peak_bandwidth("NVIDIA H100 80GB HBM3")[0] == pytest.approx(3.35e12)
    assert gpu_check.peak_bandwidth("NVIDIA H100 PCIe")[0] == pytest.approx(2.0e12)
    assert gpu_check.peak_bandwidth("NVIDIA A100-SXM4-80GB")[0] == pytest.approx(2.039e12)
    assert gpu_check.peak_bandwidth("NVIDIA L40S")[0] == pytest.approx(0.864e12)
    assert gpu_check.peak_bandwidth("NVIDIA L4")[0] == pytest.approx(0.3e12)
    peak, note = gpu_check.peak_bandwidth("Some Future GPU")
    assert peak is None and "not in the peak-bandwidth table" in note


def test_compositing_byte_count():
    # R rays x S samples x C channels, float32: forward reads 3 RS + RSC (+ inv_s), writes RS + R (2 + C).
    b = gpu_check.composite_bytes(R=10, S=4, C=3)
    assert b["forward"] == 4 * (40 * 6 + 1) + 4 * (40 + 10 * 5)
    assert b["forward_backward"] > 2 * b["forward"]
