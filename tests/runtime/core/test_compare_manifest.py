"""runtime/core/compare.py, runtime/core/manifest.py and fileio.sha256_file: the judges and the names export relies on."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

from fomm_deploy.runtime.core.compare import compare, kp_pixel_error, psnr
from fomm_deploy.runtime.core.config import resolve_config
from fomm_deploy.runtime.core.contract import graph_specs
from fomm_deploy.runtime.core.precision import FP16_BUDGET, INT8_BUDGET, Budget, budget
from fomm_deploy.runtime.core.errors import ExportFolderError, InputError, ParityError
from fomm_deploy.runtime.core.feeds import feed_set, generator_feed, source_inputs
from fomm_deploy.runtime.core.fileio import sha256_file
from fomm_deploy.runtime.core.keypoints import KP
from fomm_deploy.runtime.core.manifest import (MANIFEST_FORMAT, CheckpointInfo, GraphEntry, Manifest, engine_file_name,
                                               graph_file_name, tool_versions)


def test_psnr_and_keypoint_pixels():
    a = np.zeros((2, 3, 4, 4), np.float32)
    assert psnr(a, a) == math.inf
    assert psnr(a + 0.1, a) == pytest.approx(20.0)
    assert psnr(np.full(3, 25.5), np.zeros(3), peak=255) == pytest.approx(20.0)
    kp = np.zeros((1, 2, 2), np.float32)
    moved = kp.copy()
    moved[0, 1] = [0.01, -0.04]  # x: 0.01 * 200 / 2 = 1 px; y: 0.04 * 100 / 2 = 2 px
    assert kp_pixel_error(moved, kp, (100, 200)) == pytest.approx((2.0, 1.0))


def test_tolerance_check_lists_every_failing_output():
    ref = {"kp_value": np.zeros((1, 10, 2), np.float32), "kp_jacobian": np.zeros((1, 10, 2, 2), np.float32)}
    ours = {"kp_value": ref["kp_value"] + 1e-3, "kp_jacobian": np.full_like(ref["kp_jacobian"], np.nan)}
    result = compare("kp_detector", ours, ref, frame_size=(64, 64))
    assert result["kp_value"].max_abs == pytest.approx(1e-3) and not result["kp_jacobian"].finite
    assert result["kp_value"].kp_max_px == pytest.approx(1e-3 * 32)
    failures = result.tolerance_failures()
    assert len(failures) == 2 and "'kp_value' max abs error 0.001 > tolerance 5e-05" in failures[0]
    assert "non-finite" in failures[1]
    with pytest.raises(ParityError) as info:
        result.raise_for()
    assert info.value.graph == "kp_detector" and info.value.failures == failures
    ok = compare("kp_detector", ref, ref)
    assert ok.tolerance_failures() == [] and ok.ok
    ok.raise_for()  # nothing to raise
    with pytest.raises(ParityError, match="shape"):
        compare("g", {"kp_value": np.zeros((2, 10, 2))}, {"kp_value": np.zeros((1, 10, 2))})


def test_budget_check_and_record():
    ref = {"prediction": np.full((1, 3, 8, 8), 0.5, np.float32)}
    good = compare("g", {"prediction": ref["prediction"] + 0.001}, ref, precision="fp16")  # 60 dB
    assert good.budget_failures(FP16_BUDGET) == [] and good.summary() == "PSNR 60.0 dB"
    bad = compare("g", {"prediction": ref["prediction"] + 0.1}, ref, precision="int8")  # 20 dB
    assert bad.budget_failures(budget("int8")) == [f"prediction PSNR 20.0 dB < budget "
                                                   f"{INT8_BUDGET.prediction_min_psnr_db} dB"]
    record = bad.to_dict()
    assert record["passed"] is False and record["budget"] == INT8_BUDGET.to_dict()
    assert record["prediction_psnr_db"] == pytest.approx(20.0)
    json.dumps(record)  # JSON-ready
    with pytest.raises(ParityError, match="< budget.*do this"):
        bad.raise_for(hint="do this")


def test_feed_builder_repeats_the_source_and_matches_the_contract():
    cfg = resolve_config("tiny-test")
    spec = graph_specs(cfg)["generator"]
    k = cfg.num_kp
    kp_s = KP(np.zeros((1, k, 2), np.float32), np.tile(np.eye(2, dtype=np.float32), (1, k, 1, 1)))
    kp_d = KP(np.ones((3, k, 2), np.float64), np.tile(np.eye(2), (3, k, 1, 1)))
    feed = generator_feed({"source": np.zeros((1, 3, 128, 128), np.float32)}, kp_s, kp_d)
    assert list(feed) == spec.input_names
    for t in spec.inputs:
        assert feed[t.name].shape == t.concrete_shape(3) and feed[t.name].dtype == np.float32
        assert feed[t.name].flags.c_contiguous
    assert source_inputs({"source": np.zeros((1, 3, 4, 4), np.float32)}, KP(kp_s.value), 2).keys() == \
        {"source", "kp_source_value"}  # no jacobian without one


def test_artefact_names():
    assert graph_file_name("generator", "fp32") == "generator.onnx"
    assert graph_file_name("generator", "fp16") == "generator.fp16.onnx"
    assert graph_file_name("generator_frame", "int8") == "generator_frame.int8.onnx"
    assert graph_file_name("kp_detector", "int8") == "kp_detector.onnx"  # fp32 at int8
    assert graph_file_name("kp_detector", "fp16") == "kp_detector.fp16.onnx"
    assert engine_file_name("generator", "fp16", "abc") == "generator.fp16.abc.engine"
    with pytest.raises(InputError, match="unknown precision 'int4'"):
        graph_file_name("generator", "int4")


def test_sha256_file(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"fomm" * 1000)
    assert sha256_file(path, chunk=7) == hashlib.sha256(b"fomm" * 1000).hexdigest()


def _manifest() -> Manifest:
    cfg = resolve_config("tiny-test")
    spec = graph_specs(cfg)["kp_detector"]
    return Manifest(checkpoint=CheckpointInfo("/x.pth.tar", "ab" * 32, 3), config_name=cfg.name,
                    config=cfg.to_dict(), opset=16, align_corners=False, frame_size=(128, 128), num_kp=cfg.num_kp,
                    estimate_jacobian=True, graphs={"kp_detector": GraphEntry("kp_detector.onnx", "fp32", "cd" * 32,
                                                                              spec)})


def test_manifest_round_trip(tmp_path):
    m = _manifest()
    m.write(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # written through a temporary name
    back = Manifest.read(tmp_path)
    assert back == m and back.format == MANIFEST_FORMAT
    assert {"python", "numpy"} <= set(back.tools) == set(tool_versions())


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("format"), "has no format field.*export again"),
    (lambda d: d.update(format="fomm-deploy-manifest/1"), "has format 'fomm-deploy-manifest/1'.*export again"),
    (lambda d: d.pop("graphs"), "damaged.*export again"),
])
def test_manifest_format_is_checked_on_read(tmp_path, change, message):
    data = _manifest().to_dict()
    change(data)
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ExportFolderError, match=message):
        Manifest.read(tmp_path)
    from fomm_deploy.runtime.graphs import load_exported

    with pytest.raises(ExportFolderError, match="export again"):
        load_exported(tmp_path)


def test_damaged_manifest(tmp_path):
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(ExportFolderError, match="is damaged.*export again"):
        Manifest.read(tmp_path)
    (tmp_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(ExportFolderError, match="has no format field"):
        Manifest.read(tmp_path)


def test_mean_and_max_errors_and_output_selection():
    ref = {"a": np.zeros(4, np.float32), "b": np.zeros(2, np.float32)}
    result = compare("g", {"a": np.array([0, 0, 0, 0.004], np.float32)}, ref, outputs=["a"])
    assert list(result.outputs) == ["a"]  # "b" neither compared nor required
    assert result["a"].max_abs == pytest.approx(0.004) and result["a"].mean_abs == pytest.approx(0.001)


def test_keypoint_budget_and_summaries():
    ref = {"kp_value": np.zeros((1, 10, 2), np.float32)}
    ours = {"kp_value": ref["kp_value"] + 0.25}  # 0.25 * 64 / 2 = 8 px
    result = compare("kp", ours, ref, precision="int8", frame_size=(64, 64))
    assert result.summary() == "8.00 px max"
    assert result.budget_failures(Budget(kp_max_px=5.0, prediction_min_psnr_db=20.0)) == [
        "keypoint error 8 px > budget 5.0 px"]
    assert compare("kp", ours, ref, frame_size=(64, 64)).budget_failures(
        Budget(kp_max_px=9.0, prediction_min_psnr_db=20.0)) == []


def test_fp32_summary_names_the_worst_output_relative_to_its_tolerance():
    ref = {"a": np.zeros(3, np.float32), "b": np.zeros(3, np.float32)}
    result = compare("g", {"a": np.full(3, 0.5, np.float32), "b": np.full(3, 1e-5, np.float32)}, ref)
    assert result.summary() == "max abs 0.5 (a)"  # not judged yet: the largest error
    result.tolerance_failures(lambda precision, name: {"a": 1.0, "b": 1e-6}[name])
    assert result.summary() == "max abs 1e-05 (b)"  # 10x its tolerance, against a's 0.5x


def test_feed_holds_the_keypoints_it_was_given():
    rng = np.random.default_rng(0)
    kp_s = KP(rng.uniform(-1, 1, (1, 4, 2)).astype(np.float32), rng.normal(size=(1, 4, 2, 2)).astype(np.float32))
    kp_d = KP(rng.uniform(-1, 1, (3, 4, 2)), rng.normal(size=(3, 4, 2, 2)))
    source = rng.uniform(0, 1, (1, 3, 8, 8)).astype(np.float32)
    feed = generator_feed({"source": source}, kp_s, kp_d)
    for row in range(3):
        np.testing.assert_array_equal(feed["source"][row], source[0])
        np.testing.assert_array_equal(feed["kp_source_value"][row], kp_s.value[0])
        np.testing.assert_array_equal(feed["kp_source_jacobian"][row], kp_s.jacobian[0])
    np.testing.assert_array_equal(feed["kp_driving_value"], kp_d.value.astype(np.float32))
    np.testing.assert_array_equal(feed["kp_driving_jacobian"], kp_d.jacobian.astype(np.float32))
    per_frame = KP(rng.uniform(-1, 1, (3, 4, 2)).astype(np.float32))  # already one row per frame: kept
    np.testing.assert_array_equal(source_inputs({"source": source}, per_frame, 3)["kp_source_value"],
                                  per_frame.value)


def test_feed_set_feeds_every_graph_by_its_contract():
    cfg = resolve_config("tiny-test")
    specs = graph_specs(cfg)
    rng = np.random.default_rng(1)
    h, w = cfg.frame_size
    k = cfg.num_kp
    source = rng.uniform(0, 1, (1, 3, h, w)).astype(np.float32)
    driving = rng.uniform(0, 1, (2, 3, h, w)).astype(np.float32)
    kp_s = KP(rng.uniform(-1, 1, (1, k, 2)), rng.normal(size=(1, k, 2, 2)))
    kp_d = KP(rng.uniform(-1, 1, (2, k, 2)), rng.normal(size=(2, k, 2, 2)))
    encoded = {t.name: rng.normal(size=t.concrete_shape(1)).astype(np.float32) for t in specs["source_encoder"].outputs}
    reference = feed_set(source, kp_s, driving, kp_d)
    assert list(reference) == ["kp_detector", "generator"]  # the split graphs need the source encoded
    feeds = feed_set(source, kp_s, driving, kp_d, encoded=encoded)
    assert list(feeds) == ["kp_detector", "generator", "source_encoder", "generator_frame", "frame_step"]
    for graph, feed in feeds.items():
        batch = 1 if graph == "source_encoder" else 2
        assert list(feed) == specs[graph].input_names, graph
        for t in specs[graph].inputs:
            assert feed[t.name].shape == t.concrete_shape(batch) and feed[t.name].dtype == t.dtype, (graph, t.name)
            assert feed[t.name].flags.c_contiguous
    np.testing.assert_array_equal(feeds["kp_detector"]["image"], driving)
    np.testing.assert_array_equal(feeds["source_encoder"]["source"], source)
    for name, value in generator_feed(encoded, kp_s, kp_d).items():
        np.testing.assert_array_equal(feeds["generator_frame"][name], value)
    for name, value in reference["generator"].items():
        np.testing.assert_array_equal(feeds["generator"][name], value)
    varied = feed_set(source, kp_s, driving, kp_d, encoded=encoded, encoder_images=driving)
    np.testing.assert_array_equal(varied["source_encoder"]["source"], driving)


def test_kp_from_outputs_copies_reused_buffers():
    from fomm_deploy.runtime.core.feeds import kp_from_outputs

    buffers = {"kp_value": np.ones((1, 2, 2), np.float32), "kp_jacobian": np.ones((1, 2, 2, 2), np.float32)}
    kp = kp_from_outputs(buffers)
    buffers["kp_value"][:] = 0
    buffers["kp_jacobian"][:] = 0
    assert (kp.value == 1).all() and (kp.jacobian == 1).all()
    assert kp_from_outputs({"kp_value": buffers["kp_value"]}).jacobian is None
