"""The frame_step graph: one whole frame (keypoints, relative normalisation, generator_frame, uint8 in and out)
against the split graphs with the host's normalisation, on ONNX Runtime and torch, on the golden fixture."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from fomm_deploy.export.fp16 import fp16_node_types
from fomm_deploy.runtime.core.config import resolve_config
from fomm_deploy.runtime.core.contract import graph_specs
from fomm_deploy.runtime.core.errors import ExportFolderError
from fomm_deploy.runtime.core.feeds import split_step_feed, step_image, step_inputs
from fomm_deploy.runtime.core.keypoints import KP, movement_scale, normalize_kp, relative_motion
from fomm_deploy.runtime.core.manifest import MANIFEST_NAME
from fomm_deploy.runtime.core.pixels import to_uint8
from fomm_deploy.runtime.graphs import load_exported, open_animator


@pytest.fixture(scope="module")
def frames(golden_inputs):
    """The golden fixture's source and driving frames, on the 8-bit grid (as decoded video is), (N, H, W, 3)."""
    source = to_uint8(golden_inputs["source"][0].transpose(1, 2, 0)).astype(np.float32) / 255
    driving = to_uint8(golden_inputs["driving"].transpose(0, 2, 3, 1)).astype(np.float32) / 255
    return source, driving


def _animate(animator, source, driving, batches):
    animator.set_source(source)
    out, i = [], 0
    for b in batches:
        out.append(animator.animate_prepared(driving[i:i + b]))
        i += b
    return np.concatenate(out)


def test_contract_and_manifest_record_frame_step(golden_export):
    spec = graph_specs(resolve_config("tiny-test"))["frame_step"]
    assert spec.input_names == ["driving", "source_features", "source_down", "kp_source_value", "kp_source_jacobian",
                                "kp_initial_value", "kp_initial_jacobian", "movement_scale", "relative"]
    assert [t.dtype for t in (spec.inputs[0], spec.outputs[0])] == ["uint8", "uint8"]
    manifest = json.loads((golden_export / MANIFEST_NAME).read_text())
    for key in ("frame_step", "frame_step.fp16", "frame_step.int8"):
        assert key in manifest["graphs"], key
    checked = manifest["parity"]["frame_step"]
    assert set(checked) == {"fp32", "fp16", "int8"} and all(c["passed"] for c in checked.values())
    assert checked["fp32"]["outputs"]["frame"]["max_abs"] <= 1.0  # 8-bit levels


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("relative,adapt", [(True, True), (True, False), (False, False)])
def test_frame_step_equals_the_split_on_onnxruntime(golden_export, frames, precision, relative, adapt):
    """Batch 1 then 3 (and 1 again): the same uint8 frames as the split graphs with the motion on the host."""
    exported = load_exported(golden_export)
    source, driving = frames
    step = open_animator(exported, "onnxruntime", precision, relative=relative, adapt_scale=adapt)
    split = open_animator(exported, "onnxruntime", precision, frame_step=False, relative=relative, adapt_scale=adapt)
    assert step.graphs == "frame_step" and split.graphs == "kp_detector + generator_frame"
    batches = (1, 3, len(driving) - 4)
    ours, ref = _animate(step, source, driving, batches), _animate(split, source, driving, batches)
    assert ours.dtype == np.uint8 and ours.shape == ref.shape
    assert np.abs(ours.astype(int) - ref).max() <= 1
    # Each mode really is what it says: relative motion with adapt-scale moves the frames differently.
    if relative and adapt:
        plain = open_animator(exported, "onnxruntime", precision, relative=False)
        assert np.abs(_animate(plain, source, driving, batches).astype(int) - ours).max() > 10


def test_frame_step_int8_is_within_its_budget_of_the_fp32_split(golden_export, frames):
    exported = load_exported(golden_export)
    source, driving = frames
    ours = _animate(open_animator(exported, "onnxruntime", "int8"), source, driving, (len(driving),))
    ref = _animate(open_animator(exported, "onnxruntime", "fp32", frame_step=False), source, driving, (len(driving),))
    mse = np.mean((ours.astype(np.float64) - ref) ** 2)
    assert 10 * np.log10(255 ** 2 / mse) > 20.0  # the floor the fixture's random-weight int8 graphs export with


def test_frame_step_on_torch_equals_onnxruntime(golden_export, golden_dir, frames):
    exported = load_exported(golden_export)
    source, driving = frames
    ckpt = golden_dir / "checkpoint.pth.tar"
    torch_step = open_animator(exported, "torch", ckpt=ckpt, adapt_scale=True)
    assert torch_step.graphs == "frame_step"
    ours = _animate(torch_step, source, driving, (2, len(driving) - 2))
    ref = _animate(open_animator(exported, "onnxruntime", adapt_scale=True), source, driving, (2, len(driving) - 2))
    assert np.abs(ours.astype(int) - ref).max() <= 1


def test_split_step_feed_is_the_host_normalisation(golden_export, frames):
    """The export's parity check builds the split's feed with split_step_feed: it must be normalize_kp's."""
    exported = load_exported(golden_export)
    source, driving = frames
    a = open_animator(exported, "onnxruntime", frame_step=False, adapt_scale=True)
    a.set_source(source)
    a.set_reference(driving[0], prepared=True)
    kp_ref, kp_src = a._kp_reference, a.source_keypoints
    scale = movement_scale(kp_src, kp_ref)
    feed = {"driving": to_uint8(driving[1:4]), **step_inputs(a._encoded, kp_src, kp_ref, 3, scale=scale)}
    kp = a.keypoints(step_image(feed).transpose(0, 2, 3, 1))
    got = split_step_feed(feed, kp)
    want = normalize_kp(kp_src, kp, kp_ref, adapt_movement_scale=True, use_relative_movement=True,
                        use_relative_jacobian=True)
    np.testing.assert_array_equal(got["kp_driving_value"], want.value)
    np.testing.assert_array_equal(got["kp_driving_jacobian"], want.jacobian)


@pytest.mark.parametrize("adapt", [True, False])
def test_torch_normalisation_equals_normalize_kp(adapt):
    """The device side (relative_motion on tensors, as frame_step traces it) against numpy's normalize_kp."""
    rng = np.random.default_rng(3)

    def kp(batch):
        return KP(rng.uniform(-0.8, 0.8, (batch, 10, 2)).astype(np.float32),
                  (np.eye(2) + rng.normal(0, 0.3, (batch, 10, 2, 2))).astype(np.float32))

    source, initial, driving = kp(1), kp(1), kp(4)
    scale = movement_scale(source, initial) if adapt else 1.0
    want = normalize_kp(source, driving, initial, adapt_movement_scale=adapt, use_relative_movement=True,
                        use_relative_jacobian=True)
    t = torch.from_numpy
    value, jacobian = relative_motion(t(driving.value), t(driving.jacobian), t(initial.value), t(initial.jacobian),
                                      t(source.value), t(source.jacobian), torch.full((4, 1, 1), np.float32(scale)),
                                      stack=torch.stack)
    np.testing.assert_allclose(value.numpy(), want.value, rtol=0, atol=1e-6)
    np.testing.assert_allclose(jacobian.numpy(), want.jacobian, rtol=0, atol=1e-5)
    assert np.abs(want.value - driving.value).max() > 0.1  # the normalisation did something


def test_precision_policy_keeps_the_keypoint_part_of_frame_step_in_fp32(golden_export):
    fp16 = fp16_node_types(onnx.load(str(golden_export / "frame_step.fp16.onnx")))
    assert fp16["fp16"], "no node of frame_step.fp16 computes in fp16"
    # fp16_node_types lists op types; the names decide the part: none of the keypoint detector's nodes is half.
    model = onnx.load(str(golden_export / "frame_step.fp16.onnx"))
    half_inputs = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16}
    kp_half = [n.name for n in model.graph.node if n.name.startswith("/kp_detector/")
               and any(i in half_inputs for i in n.input)]
    assert not kp_half, kp_half[:3]
    int8 = onnx.load(str(golden_export / "frame_step.int8.onnx"))
    quantised = [n for n in int8.graph.node if n.op_type == "DequantizeLinear"]
    assert quantised, "frame_step.int8 has no quantised node"
    assert not [n.name for n in quantised if n.name.startswith("/kp_detector/")
                or any(i.startswith("/kp_detector/") or "kp_detector" in i for i in n.input)]


def test_frame_step_asked_for_but_not_exported_is_a_clear_error(golden_export, tmp_path):
    exported = load_exported(golden_export)
    with pytest.raises(ExportFolderError, match="frame_step"):
        open_animator(exported, "onnxruntime", "fp32", split=False, frame_step=True)


def test_fomm_compare_checks_frame_step_with_torch_eager(golden_export, golden_dir, monkeypatch):
    """fomm-compare checks the frame_step graph the manifest lists, like the others, and opens the torch
    reference without torch.compile (its default on CUDA)."""
    from click.testing import CliRunner

    from fomm_deploy.runtime import compare_cli

    opened = []
    make_backend = compare_cli.make_backend

    def recording(kind, exported, graph, precision="fp32", **options):
        opened.append((kind, graph, options.get("compile")))
        return make_backend(kind, exported, graph, precision, **options)

    monkeypatch.setattr(compare_cli, "make_backend", recording)
    result = CliRunner().invoke(compare_cli.compare_main, ["--onnx", str(golden_export), "--backends",
                                                           "torch,onnxruntime", "--batch", "1", "--ckpt",
                                                           str(golden_dir / "checkpoint.pth.tar")])
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()]
    frame = next((r for r in rows if r[:2] == ["frame_step", "frame"]), None)
    assert frame is not None and frame[5] == "ok", result.output
    assert "all outputs within tolerance" in result.output
    assert {g for _, g, _ in opened} == {"kp_detector", "generator", "source_encoder", "generator_frame",
                                         "frame_step"}
    assert [c for k, _, c in opened if k == "torch"] == [False] * 5


def test_animate_together_finds_a_missing_reference_on_the_uint8_frame(golden_export, frames):
    """With frame_step, a session without a reference takes it from the uint8 frame the graph is given, as the
    same animator alone does (animate_prepared -> animate_uint8), also for frames between two 8-bit levels."""
    from fomm_deploy.runtime.animator import Animator, animate_together

    source, driving = frames
    off_grid = np.clip(driving[:2] + np.float32(0.4 / 255), 0, 1)  # rounds back to driving's levels
    alone = open_animator(load_exported(golden_export), "onnxruntime")
    assert alone.graphs == "frame_step"
    together = [Animator(alone.kp_detector, None, alone.frame_size, source_encoder=alone.source_encoder,
                         generator_frame=alone.generator_frame, frame_step=alone.frame_step) for _ in range(2)]
    for a in together:
        a.set_source(source)
    batch = animate_together(together, off_grid)
    expected = []
    for a, frame in zip(together, off_grid):
        alone.set_source(source)
        alone.reset_reference()
        expected.append(alone.animate_prepared(frame[None])[0])
        np.testing.assert_array_equal(a._kp_reference.value, alone._kp_reference.value)
        np.testing.assert_array_equal(a._kp_reference.jacobian, alone._kp_reference.jacobian)
    assert np.abs(batch.astype(int) - np.stack(expected)).max() <= 1
