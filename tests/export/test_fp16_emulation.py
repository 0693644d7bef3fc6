"""export/fp16_emulation.py really emulates fp16 arithmetic; export/fp16.py puts Casts only at region borders;
the bundled model's worst case fits the fp16 budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fomm_deploy.export import fp16 as fp16_module
from fomm_deploy.export.fp16 import convert_to_mixed_fp16
from fomm_deploy.export.fp16_emulation import Fp16Emulator, emulate
from fomm_deploy.runtime.backends.onnxrt import session_from_onnx
from fomm_deploy.runtime.core.precision import FP16_BUDGET

REPO = Path(__file__).resolve().parents[2]


def _conv_model(cin: int = 256, cout: int = 4, size: int = 6, seed: int = 0) -> onnx.ModelProto:
    """One 3x3 conv with a wide reduction (cin * 9 terms), named inside an fp16 scope, then a Relu."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1, (cout, cin, 3, 3)).astype(np.float32)
    b = rng.normal(0, 1, cout).astype(np.float32)
    conv = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="/bottleneck/r0/conv1/Conv", pads=[1, 1, 1, 1])
    relu = helper.make_node("Relu", ["y"], ["z"], name="/bottleneck/r0/Relu")
    graph = helper.make_graph([conv, relu], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, size, size])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, cout, size, size])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])


def _ort(model: onnx.ModelProto, feed):
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.onnx"
        onnx.save(model, str(path))
        s = session_from_onnx(path)
        return s.run(None, feed)[0]


def test_fp32_graph_emulation_matches_onnx_runtime():
    model = _conv_model()
    x = np.random.default_rng(1).normal(0, 1, (1, 256, 6, 6)).astype(np.float32)
    for mode in ("best", "worst"):  # an fp32 graph has no fp16 tensor: both modes are plain fp32
        np.testing.assert_allclose(emulate(model, [{"x": x}], mode)["z"], _ort(model, {"x": x}), atol=1e-4, rtol=1e-5)


def test_emulation_differs_from_fp32_and_worst_is_at_least_as_far_off_as_best():
    fp32 = _conv_model()
    half = convert_to_mixed_fp16(fp32)
    x = np.random.default_rng(1).normal(0, 1, (1, 256, 6, 6)).astype(np.float32)
    ref = _ort(fp32, {"x": x}).astype(np.float64)
    ort16 = _ort(half, {"x": x})
    best = emulate(half, [{"x": x}], "best")["z"]
    worst = emulate(half, [{"x": x}], "worst")["z"]
    e_ort, e_best, e_worst = (float(np.abs(a - ref).max()) for a in (ort16, best, worst))
    # best: the conv output is rounded to fp16 (values ~ +-48 -> steps of 2**-5), which ORT CPU never does
    assert e_best > 1e-3 and e_best > 2 * e_ort
    assert np.all(best.astype(np.float16).astype(np.float32) == best)  # really fp16 values
    # worst: 256 rounded additions per output; markedly worse than best
    assert e_worst >= e_best and float(np.abs(worst - ref).mean()) > 1.5 * float(np.abs(best - ref).mean())


def test_emulation_counts_fp16_nodes_and_rejects_unknown_modes():
    half = convert_to_mixed_fp16(_conv_model(cin=8))
    emulator = Fp16Emulator(half, "best")
    emulator.run({"x": np.ones((1, 8, 6, 6), np.float32)})
    assert emulator.fp16_nodes >= 2  # Conv and Relu (and the output Cast)
    with pytest.raises(ValueError, match="unknown emulation mode"):
        Fp16Emulator(half, "typical")


def _casts(model: onnx.ModelProto) -> int:
    return sum(n.op_type == "Cast" for n in model.graph.node)


def test_casts_only_at_region_borders(tmp_path, golden_dir, monkeypatch):
    """fp16 is carried through the up blocks' interleave (Slice / Unsqueeze / Concat / Reshape) and BN
    parameters behind Identity, so generator_frame.fp16 has far fewer Casts than when only the arithmetic ops
    in the scopes are converted (measured on tiny-test: 33 -> 9)."""
    from .golden_graph import traced_golden_graph

    model, feed = traced_golden_graph(golden_dir, tmp_path)
    after = convert_to_mixed_fp16(model)
    monkeypatch.setattr(fp16_module, "TYPE_AGNOSTIC_OPS", set())
    monkeypatch.setattr(fp16_module, "_resolve_identities", lambda graph: None)
    before = convert_to_mixed_fp16(model)
    assert _casts(after) <= 10 < 30 <= _casts(before)
    # the precision Casts left sit on borders: a cast back to fp32 follows fp16 arithmetic, never a data move
    producers = {o: n for n in after.graph.node for o in n.output}
    precision_casts = [n for n in after.graph.node if n.op_type == "Cast" and (
        n.attribute[0].i == TensorProto.FLOAT16 or n.input[0].endswith("__fp16_result")
        or n.output[0].endswith("__as_fp32"))]
    assert 0 < len(precision_casts) <= 6
    for node in precision_casts:
        src = producers.get(node.input[0])
        if node.attribute[0].i == TensorProto.FLOAT:
            assert src.op_type not in fp16_module.TYPE_AGNOSTIC_OPS, src.name
    # the converted graph still computes the same function within fp16 rounding
    ref, out = _ort(model, feed), _ort(after, feed)
    assert float(np.abs(ref - out).max()) < 0.05


@pytest.mark.slow
def test_bundled_model_worst_case_fp16_fits_the_budget(tmp_path):
    """The bundled synthetic-faces model, exported at fp16: the worst-case emulation of every fp16 graph and of
    the deployed split is within budget (measured 74.2 dB for the split)."""
    from fomm_deploy.export.exporter import run_export
    from fomm_deploy.runtime.core.config import resolve_config

    result = run_export(REPO / "checkpoints" / "synthetic-faces.pth.tar", resolve_config("synthetic-faces"),
                        tmp_path / "out", precision="fp16")
    for report in result.graphs:
        if report.precision == "fp16":
            assert report.emulated["worst"].ok, report.name
    worst = result.emulated_pipelines["split.fp16"]["worst"]
    assert worst.ok and worst.psnr_db >= FP16_BUDGET.prediction_min_psnr_db
