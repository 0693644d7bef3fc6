"""Every backend honours the graph contract and agrees with the others; the animator reproduces upstream."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shlex

import numpy as np
import pytest

from fomm_deploy.runtime.animator import Animator, find_best_frame
from fomm_deploy.runtime.backends.base import Backend
from fomm_deploy.runtime.backends.onnxrt import session_from_onnx
from fomm_deploy.runtime.backends.tensorrt import (BUILDER_REVISION, EngineKey, engine_key, engine_path_for,
                                                   onnx_file_for)
from fomm_deploy.runtime.core.contract import check_feed
from fomm_deploy.runtime.core.precision import tolerance
from fomm_deploy.runtime.core.errors import FommError, InputError, InputMismatchError
from fomm_deploy.runtime.graphs import load_exported, make_backend, open_animator
from fomm_deploy.runtime.core.keypoints import KP

from tests.conftest import RANDOM_WEIGHTS_INT8

BACKENDS = ["torch", "onnxruntime", pytest.param("tensorrt", marks=[pytest.mark.gpu, pytest.mark.tensorrt])]


N = 3  # golden frames per test batch


def _golden_case(golden_inputs, golden_expected, graph, backend_for):
    """(feed, expected outputs) for ``graph`` from upstream's golden outputs, never from another backend.

    The golden fixture has upstream's keypoints, ``source_down`` and predictions. The split graphs have no
    upstream counterpart of their own, so ``generator_frame`` is fed what the backend's own
    ``source_encoder`` makes of the golden source and must then give upstream's prediction, and
    ``source_encoder`` is checked through its ``source_down`` (and through ``generator_frame``).
    """
    e = golden_expected
    source = np.repeat(golden_inputs["source"], N, 0)
    kp = {"kp_source_value": np.repeat(e["kp_source_value"], N, 0),
          "kp_source_jacobian": np.repeat(e["kp_source_jacobian"], N, 0),
          "kp_driving_value": e["kp_norm_adapt_value"][:N],
          "kp_driving_jacobian": e["kp_norm_adapt_jacobian"][:N]}
    if graph == "kp_detector":
        return {"image": golden_inputs["driving"][:N]}, {"kp_value": e["kp_driving_value"][:N],
                                                          "kp_jacobian": e["kp_driving_jacobian"][:N]}
    if graph == "generator":
        return {"source": source, **kp}, {"prediction": e["prediction"][:N]}
    if graph == "source_encoder":
        return {"source": source}, {"source_down": np.repeat(e["source_down"], N, 0)}
    with backend_for("source_encoder") as encoder:
        encoded = {k: v.copy() for k, v in encoder.infer({"source": source}).items()}
    return {**encoded, **kp}, {"prediction": e["prediction"][:N]}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("graph", ["kp_detector", "generator", "source_encoder", "generator_frame"])
def test_backend_contract_and_agreement(golden_export, golden_inputs, golden_expected, backend, graph):
    exported = load_exported(golden_export)
    feed, expected = _golden_case(golden_inputs, golden_expected, graph,
                                  lambda g: make_backend(backend, exported, g))
    with make_backend(backend, exported, graph) as b:
        out = b.infer(feed)
        assert list(out) == b.spec.output_names
        for t in b.spec.outputs:
            assert out[t.name].dtype == np.float32 and out[t.name].shape == t.concrete_shape(N)
            assert np.isfinite(out[t.name]).all()
        for name, want in expected.items():
            np.testing.assert_allclose(out[name], want, atol=tolerance("fp32", name), rtol=0, err_msg=name)
        with pytest.raises(InputMismatchError, match="got shape"):
            bad = dict(feed)
            key = b.spec.input_names[-1]
            bad[key] = np.zeros(bad[key].shape[:-1] + (3,), np.float32)
            b.infer(bad)


def test_backends_agree_on_the_features_upstream_has_no_golden_for(golden_export, golden_inputs):
    # source_features exists only in our split; ONNX Runtime's must match the torch reference's.
    exported = load_exported(golden_export)
    feed = {"source": np.repeat(golden_inputs["source"], N, 0)}
    with make_backend("torch", exported, "source_encoder") as ref_backend:
        ref = ref_backend.infer(feed)["source_features"].copy()
    with make_backend("onnxruntime", exported, "source_encoder") as b:
        np.testing.assert_allclose(b.infer(feed)["source_features"], ref, atol=tolerance("fp32", "source_features"))


@pytest.mark.parametrize("split", [False, True], ids=["reference-generator", "split-graphs"])
@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_animator_reproduces_upstream_demo(golden_export, golden_inputs, golden_expected, backend, split):
    """Upstream demo with --relative --adapt_scale: the first driving frame is the reference."""
    exported = load_exported(golden_export)
    animator = open_animator(exported, backend, split=split, relative=True, adapt_scale=True)
    assert (animator.generator_frame is not None) == split
    animator.set_source(golden_inputs["source"][0].transpose(1, 2, 0))
    frames = golden_inputs["driving"].transpose(0, 2, 3, 1)
    pred = np.concatenate([animator.animate_prepared(frames[:2], return_float=True),
                           animator.animate_prepared(frames[2:], return_float=True)])
    np.testing.assert_allclose(pred, golden_expected["prediction"], atol=1e-4, rtol=0)
    uint8 = animator.animate(frames[4])
    assert uint8.dtype == np.uint8 and uint8.shape == (128, 128, 3)
    expected_u8 = np.rint(golden_expected["prediction"][4].transpose(1, 2, 0) * 255)
    assert np.abs(uint8.astype(int) - expected_u8).max() <= 1


def test_animator_absolute_mode_and_reference(golden_export, golden_inputs):
    exported = load_exported(golden_export)
    kp = make_backend("onnxruntime", exported, "kp_detector").activate()
    gen = make_backend("onnxruntime", exported, "generator").activate()
    frames = golden_inputs["driving"].transpose(0, 2, 3, 1)
    source = golden_inputs["source"][0].transpose(1, 2, 0)
    relative = Animator(kp, gen, (128, 128))
    relative.set_source(source)
    relative.set_reference(frames[2], prepared=True)
    # With the reference equal to the driving frame, relative motion gives the source's own keypoints.
    out_ref = relative.animate_prepared(frames[2:3], return_float=True)
    absolute = Animator(kp, gen, (128, 128), relative=False)
    absolute.set_source(source)
    out_src = absolute.animate_prepared(source[None], return_float=True)
    np.testing.assert_allclose(out_ref, out_src, atol=2e-5)


def test_best_frame_finds_the_source_pose(golden_export, golden_inputs):
    exported = load_exported(golden_export)
    kp = make_backend("onnxruntime", exported, "kp_detector").activate()
    gen = make_backend("onnxruntime", exported, "generator").activate()
    animator = Animator(kp, gen, (128, 128))
    source = golden_inputs["source"][0].transpose(1, 2, 0)
    animator.set_source(source)
    frames = golden_inputs["driving"].transpose(0, 2, 3, 1)
    clip = np.concatenate([frames[::-1], source[None], frames])  # the source pose sits at index 5
    values = animator.keypoints(clip).value
    assert find_best_frame(animator.source_keypoints, values) == 5


def test_best_frame_ignores_translation_and_scale_but_not_rotation():
    rng = np.random.default_rng(0)
    src = rng.uniform(-0.6, 0.6, (1, 10, 2))

    def rotated(deg):
        a = np.deg2rad(deg)
        r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        return src[0] @ r.T

    frames = np.stack([rotated(30), rotated(10), 0.5 * src[0] + [0.3, -0.2], rotated(-20)])
    assert find_best_frame(KP(src), frames) == 2
    assert find_best_frame(KP(src), frames[[0, 1, 3]]) == 1  # the smallest rotation


def test_feed_checks(golden_export):
    spec = load_exported(golden_export).specs["generator"]
    good = {t.name: np.zeros(t.concrete_shape(2), np.float32) for t in spec.inputs}
    assert check_feed(spec, good) == 2
    with pytest.raises(InputMismatchError, match=r"missing \['source'\]"):
        check_feed(spec, {k: v for k, v in good.items() if k != "source"})
    with pytest.raises(InputMismatchError, match="got dtype float64"):
        check_feed(spec, dict(good, source=good["source"].astype(np.float64)))
    with pytest.raises(InputMismatchError, match=r"got shape \(2, 10, 3\). Expected \(B, 10, 2\)"):
        check_feed(spec, dict(good, kp_driving_value=np.zeros((2, 10, 3), np.float32)))
    with pytest.raises(InputMismatchError, match="batch 3 differs from 2"):
        check_feed(spec, dict(good, kp_driving_value=np.zeros((3, 10, 2), np.float32)))


def test_infer_needs_activate(golden_export):
    backend = make_backend("onnxruntime", load_exported(golden_export), "kp_detector")
    with pytest.raises(RuntimeError, match="activate"):
        backend.infer({"image": np.zeros((1, 3, 128, 128), np.float32)})


def test_export_folder_errors(tmp_path, golden_export):
    with pytest.raises(FommError, match="no export folder"):
        load_exported(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FommError, match="has no manifest.json"):
        load_exported(tmp_path / "empty")
    (tmp_path / "empty" / "vox").mkdir()
    (tmp_path / "empty" / "vox" / "manifest.json").write_text("{}")
    with pytest.raises(FommError, match=r"exports found: .*vox: pass --onnx .*vox"):  # after make demo: exported/demo
        load_exported(tmp_path / "empty")
    spaced = tmp_path / "my exports"  # the hint pastes into a shell as one word
    (spaced / "vox").mkdir(parents=True)
    (spaced / "vox" / "manifest.json").write_text("{}")
    with pytest.raises(FommError) as info:
        load_exported(spaced)
    assert shlex.split(str(info.value).rsplit("pass --onnx ", 1)[1]) == [str(spaced / "vox")]
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(FommError, match="damaged"):
        load_exported(tmp_path)
    manifest = json.loads((golden_export / "manifest.json").read_text())
    manifest["graphs"]["generator"]["inputs"][1]["shape"] = ["B", 15, 2]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FommError, match="contract differs"):
        load_exported(tmp_path)


def test_torch_backend_runs_on_device_tensors_as_infer_does(golden_export, golden_inputs):
    backend = make_backend("torch", load_exported(golden_export), "kp_detector")
    feed = {"image": golden_inputs["driving"][:2]}
    with pytest.raises(RuntimeError, match="activate"):
        backend.run_device([])
    with backend:
        args = backend.device_inputs(feed)
        assert [tuple(a.shape) for a in args] == [feed["image"].shape]
        out = backend.run_device(args)
        want = backend.infer(feed)
    assert len(out) == len(want)
    for name, tensor in zip(backend.spec.output_names, out):
        assert not tensor.requires_grad
        np.testing.assert_array_equal(tensor.numpy(), want[name])


def test_torch_backend_needs_the_checkpoint(tmp_path, golden_export):
    manifest = json.loads((golden_export / "manifest.json").read_text())
    manifest["checkpoint"]["path"] = str(tmp_path / "moved.pth.tar")
    folder = tmp_path / "exp"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FommError, match="pass --ckpt"):
        make_backend("torch", load_exported(folder), "kp_detector")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed")
def test_tensorrt_backend_says_what_is_missing(golden_export):
    with pytest.raises(FommError, match="needs the 'tensorrt' package"):
        make_backend("tensorrt", load_exported(golden_export), "generator", "fp16")


def test_engine_cache_key(golden_export):
    onnx32 = onnx_file_for(golden_export, "generator", "fp32")
    onnx16 = onnx_file_for(golden_export, "generator", "fp16")
    assert onnx32.name == "generator.onnx" and onnx16.name == "generator.fp16.onnx"
    facts = dict(tensorrt_version="10.13.0", gpu_name="NVIDIA H100", compute_capability="9.0")
    base = engine_key(onnx16, "fp16", **facts)
    assert base == engine_key(onnx16, "fp16", **facts)  # deterministic
    variants = [
        engine_key(onnx32, "fp16", **facts),  # other graph file
        engine_key(onnx16, "fp32", **facts),
        engine_key(onnx16, "fp16", **dict(facts, tensorrt_version="11.0.0")),
        engine_key(onnx16, "fp16", **dict(facts, gpu_name="NVIDIA RTX 4090")),
        engine_key(onnx16, "fp16", **dict(facts, compute_capability="8.9")),
        engine_key(onnx16, "fp16", **facts, batch=(1, 4, 8)),
        engine_key(onnx16, "fp16", **facts, optimization_level=5),
        # Builder settings and the builder revision: an engine built before a builder fix is never reused.
        dataclasses.replace(base, tf32=not base.tf32),
        dataclasses.replace(base, strongly_typed=not base.strongly_typed),
        dataclasses.replace(base, workspace_bytes=base.workspace_bytes // 2),
        dataclasses.replace(base, builder_revision=base.builder_revision - 1),
    ]
    digests = {base.digest()} | {v.digest() for v in variants}
    assert len(digests) == len(variants) + 1
    assert base.builder_revision == BUILDER_REVISION and base.strongly_typed
    assert base.tf32 and not engine_key(onnx32, "fp32", **facts).tf32  # TF32 off for fp32 engines only
    path = engine_path_for(golden_export / "engines", "generator", base)
    assert path.name == f"generator.fp16.{base.digest()}.engine"
    assert isinstance(base, EngineKey) and base.onnx_sha256 == json.loads(
        (golden_export / "manifest.json").read_text())["graphs"]["generator.fp16"]["sha256"]
    with pytest.raises(InputError, match="1 <= min <= opt <= max"):
        engine_key(onnx16, "fp16", **facts, batch=(4, 1, 8))


def test_onnx_file_for_missing_fp16(tmp_path):
    with pytest.raises(FommError, match=r"export with --precision fp16"):
        onnx_file_for(tmp_path, "generator", "fp16")


class ReusingBackend(Backend):
    """Wraps a backend and returns the same output arrays on every call, as TensorRT's pinned buffers do."""

    kind = "reusing"

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner.spec)
        self.inner, self.buffers = inner, {}

    def _activate(self) -> None:
        self.inner.activate()

    def _infer(self, feed):
        for name, value in self.inner.infer(feed).items():
            if name not in self.buffers or self.buffers[name].shape != value.shape:
                self.buffers[name] = np.empty_like(value)
            self.buffers[name][...] = value
        return self.buffers


def test_keypoints_survive_the_next_inference(golden_export, golden_inputs):
    # Keypoints kept by the animator (source, reference) must not change when the detector runs again on
    # a backend that reuses its output buffers.
    exported = load_exported(golden_export)
    kp = ReusingBackend(make_backend("onnxruntime", exported, "kp_detector")).activate()
    gen = make_backend("onnxruntime", exported, "generator").activate()
    a = Animator(kp, gen, (128, 128))
    frames = golden_inputs["driving"].transpose(0, 2, 3, 1)
    first = a.keypoints(frames[:1])
    kept = first.value.copy(), first.jacobian.copy()
    second = a.keypoints(frames[1:2])
    assert not np.allclose(second.value, kept[0])  # the frames really differ
    np.testing.assert_array_equal(first.value, kept[0])
    np.testing.assert_array_equal(first.jacobian, kept[1])
    a.set_source(frames[2])
    source_kp = a.source_keypoints.value.copy()
    a.animate_prepared(frames[3:4])  # runs the detector on another frame
    np.testing.assert_array_equal(a.source_keypoints.value, source_kp)


def test_int8_animator_uses_fp32_keypoints_and_int8_generator(golden_export, golden_inputs, golden_expected):
    exported = load_exported(golden_export)
    assert exported.has_precision("int8") and exported.has_split("int8")
    animator = open_animator(exported, "onnxruntime", "int8", relative=True, adapt_scale=True)
    assert animator.kp_detector.onnx_path.name == "kp_detector.onnx"
    assert animator.generator_frame.onnx_path.name == "generator_frame.int8.onnx"
    source, driving = golden_inputs["source"][0].transpose(1, 2, 0), golden_inputs["driving"].transpose(0, 2, 3, 1)
    animator.set_source(source)
    pred = animator.animate_prepared(driving, return_float=True)
    # The fp32 split with only generator_frame swapped for its int8 graph: the fp32 animator's keypoints and
    # encoded source (both fp32 at int8) make the feed, which generator_frame.int8.onnx, run directly, turns into
    # exactly the int8 animator's frames. (How far int8 is from fp32 on these random weights depends on the
    # CPU's int8 kernels, so only the floor of conftest.py is asked; int8 quality is tested on a trained model.)
    fp32 = open_animator(exported, "onnxruntime", "fp32", split=True, frame_step=False, relative=True,
                         adapt_scale=True)
    fp32.set_source(source)
    feed = fp32._motion_feed(fp32.keypoints(driving))
    int8 = session_from_onnx(golden_export / "generator_frame.int8.onnx").run(["prediction"], feed)[0]
    np.testing.assert_allclose(pred, int8, atol=1e-6, rtol=0)
    reference = fp32.generator_frame.infer(feed)["prediction"]
    np.testing.assert_allclose(reference, golden_expected["prediction"], atol=1e-4, rtol=0)  # fp32: upstream's
    assert np.abs(pred - reference).max() > 1e-3  # quantised: not the fp32 frames
    floor = RANDOM_WEIGHTS_INT8["int8"].prediction_min_psnr_db  # what the export gated these graphs with
    assert 10 * np.log10(1 / float(np.mean((pred - reference) ** 2))) > floor
    with pytest.raises(FommError, match="int8 graphs are for ONNX Runtime"):
        make_backend("tensorrt", exported, "generator", "int8")
