"""fomm-export: golden reproduction through ONNX Runtime, contract checks, fp16, manifest, user errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from fomm_deploy.export.checks import check_graph
from fomm_deploy.export.exporter import BUDGET_HINTS, run_export
from fomm_deploy.export.fp16 import fp16_node_types
from fomm_deploy.runtime.backends.onnxrt import session_from_onnx
from fomm_deploy.runtime.core.config import config_from_dict, resolve_config
from fomm_deploy.runtime.core.contract import OPSET, graph_specs
from fomm_deploy.runtime.core.precision import FP16_BUDGET, INT8_BUDGET, Budget
from fomm_deploy.runtime.core.errors import ContractError, ExportError, ParityError
from fomm_deploy.runtime.core.feeds import generator_feed
from fomm_deploy.runtime.core.fileio import sha256_file
from fomm_deploy.runtime.core.keypoints import KP
from fomm_deploy.runtime.core.manifest import MANIFEST_FORMAT, graph_file_name
from fomm_deploy.training.checkpoint import CheckpointError
from tests.conftest import RANDOM_WEIGHTS_INT8

REPO = Path(__file__).resolve().parents[2]
GOLDEN_KP_ATOL, GOLDEN_PRED_ATOL = 2e-5, 1e-4  # the fixture's suggested tolerances, also for ONNX
# The golden checkpoint has random weights, no int8 quality reference: whether its int8 graphs meet the default
# int8 budget depends on the CPU's int8 kernels (tests/conftest.py), so no test here expects it to pass
# or to fail. Budget failures are forced with explicit budgets that no graph can meet; tests that need its int8
# graphs for their structure pass the floor RANDOM_WEIGHTS_INT8 (one definition, beside the shared
# golden export in tests/conftest.py); int8 quality is tested on the bundled trained model (test_int8_quality_on_the_bundled_model).
# A PSNR budget no comparison reaches: the pixels of a reduced-precision graph are never all exactly equal to
# fp32's (PSNR inf), and short of that 500 dB is far beyond float32's resolution.
UNREACHABLE_DB = 500.0
BUNDLED_CKPT, BUNDLED_CONFIG = REPO / "checkpoints" / "synthetic-faces.pth.tar", "synthetic-faces"


@pytest.fixture(scope="module")
def golden_ckpt(golden_dir):
    return golden_dir / "checkpoint.pth.tar"


@pytest.fixture(scope="module")
def exported(tmp_path_factory, golden_ckpt):
    out = tmp_path_factory.mktemp("export") / "tiny"
    return run_export(golden_ckpt, resolve_config("tiny-test"), out, precision="all", budgets=RANDOM_WEIGHTS_INT8)


@pytest.fixture(scope="module")
def exported_ac(tmp_path_factory, golden_ckpt):
    out = tmp_path_factory.mktemp("export_ac") / "tiny-ac"
    return run_export(golden_ckpt, resolve_config("tiny-test").replace_model(align_corners=True), out)


def _run(path: Path, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = session_from_onnx(path)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed)))


def _kp_feed(golden_expected, i=None, adapt=True):
    """The keypoint inputs of a generator feed: the golden source keypoints and the normalised driving ones."""
    e = golden_expected
    key = "kp_norm_adapt" if adapt else "kp_norm"
    sl = slice(None) if i is None else slice(i, i + 1)
    feed = generator_feed({}, KP(e["kp_source_value"], e["kp_source_jacobian"]),
                          KP(e[key + "_value"][sl], e[key + "_jacobian"][sl]))
    return feed


def test_writes_the_expected_files(exported):
    files = sorted(p.name for p in exported.out_dir.iterdir())
    assert files == ["frame_step.fp16.onnx", "frame_step.int8.onnx", "frame_step.onnx",
                     "generator.fp16.onnx", "generator.int8.onnx", "generator.onnx", "generator_frame.fp16.onnx",
                     "generator_frame.int8.onnx", "generator_frame.onnx", "kp_detector.fp16.onnx", "kp_detector.onnx",
                     "manifest.json", "source_encoder.fp16.onnx", "source_encoder.onnx"]
    leftovers = [p.name for p in exported.out_dir.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_kp_detector_onnx_reproduces_upstream(exported, golden_inputs, golden_expected):
    path = exported.out_dir / "kp_detector.onnx"
    src = _run(path, {"image": golden_inputs["source"]})
    np.testing.assert_allclose(src["kp_value"], golden_expected["kp_source_value"], atol=GOLDEN_KP_ATOL, rtol=0)
    np.testing.assert_allclose(src["kp_jacobian"], golden_expected["kp_source_jacobian"], atol=GOLDEN_KP_ATOL, rtol=0)
    for i in range(len(golden_inputs["driving"])):  # batch 1, as upstream's demo
        d = _run(path, {"image": golden_inputs["driving"][i:i + 1]})
        np.testing.assert_allclose(d["kp_value"], golden_expected["kp_driving_value"][i:i + 1],
                                   atol=GOLDEN_KP_ATOL, rtol=0)
        np.testing.assert_allclose(d["kp_jacobian"], golden_expected["kp_driving_jacobian"][i:i + 1],
                                   atol=GOLDEN_KP_ATOL, rtol=0)


def test_generator_onnx_reproduces_upstream(exported, golden_inputs, golden_expected):
    path = exported.out_dir / "generator.onnx"
    for i in range(len(golden_inputs["driving"])):
        feed = {"source": golden_inputs["source"], **_kp_feed(golden_expected, i)}
        pred = _run(path, feed)["prediction"]
        np.testing.assert_allclose(pred, golden_expected["prediction"][i:i + 1], atol=GOLDEN_PRED_ATOL, rtol=0)


def test_generator_onnx_reproduces_upstream_align_corners_true(exported_ac, golden_inputs, golden_expected,
                                                                golden_expected_ac):
    path = exported_ac.out_dir / "generator.onnx"
    for row, i in enumerate(golden_expected_ac["frame_index"]):
        feed = {"source": golden_inputs["source"], **_kp_feed(golden_expected, int(i))}
        pred = _run(path, feed)["prediction"]
        np.testing.assert_allclose(pred, golden_expected_ac["prediction"][row:row + 1], atol=GOLDEN_PRED_ATOL, rtol=0)


@pytest.mark.parametrize("name", ["kp_detector", "generator", "source_encoder", "generator_frame",
                                  "kp_detector.fp16", "generator.fp16", "source_encoder.fp16", "generator_frame.fp16"])
def test_graph_contract(exported, name):
    model = onnx.load(str(exported.out_dir / f"{name}.onnx"))
    spec = graph_specs(resolve_config("tiny-test"))[name.split(".")[0]]
    check_graph(model, spec, align_corners=False)
    assert {o.domain or "ai.onnx": o.version for o in model.opset_import} == {"ai.onnx": OPSET}
    ops = {n.op_type for n in model.graph.node}
    assert "Inverse" not in ops
    grid = [n for n in model.graph.node if n.op_type == "GridSample"]
    if name.startswith("generator"):
        assert len(grid) == 2  # sparse motions, feature warp (deformed is not exported)
    if name.startswith("source_encoder"):
        assert not grid
    for node in grid:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["mode"] == b"bilinear" and attrs["align_corners"] == 0


def test_split_graphs_equal_the_reference_generator(exported, golden_inputs, golden_expected):
    """source_encoder once + generator_frame per frame == generator.onnx per frame."""
    out = exported.out_dir
    encoded = _run(out / "source_encoder.onnx", {"source": golden_inputs["source"]})
    assert set(encoded) == {"source_features", "source_down"}
    assert encoded["source_features"].shape == (1, 32, 32, 32) and encoded["source_down"].shape == (1, 3, 32, 32)
    np.testing.assert_allclose(encoded["source_down"], golden_expected["source_down"], atol=2e-5, rtol=0)
    for i in range(5):
        kp = _kp_feed(golden_expected, i)
        full = _run(out / "generator.onnx", {"source": golden_inputs["source"], **kp})["prediction"]
        split = _run(out / "generator_frame.onnx", {**encoded, **kp})["prediction"]
        np.testing.assert_allclose(split, full, atol=1e-5, rtol=0)
        np.testing.assert_allclose(split, golden_expected["prediction"][i:i + 1], atol=GOLDEN_PRED_ATOL, rtol=0)


def test_align_corners_reaches_the_graph(exported_ac):
    model = onnx.load(str(exported_ac.out_dir / "generator.onnx"))
    values = [onnx.helper.get_attribute_value(a) for n in model.graph.node if n.op_type == "GridSample"
              for a in n.attribute if a.name == "align_corners"]
    assert values == [1, 1]
    assert exported_ac.manifest.align_corners is True


def _mutated(path: Path, mutate) -> onnx.ModelProto:
    model = onnx.load(str(path))
    mutate(model)
    return model


def _set_gridsample_mode(model, mode):
    for node in model.graph.node:
        if node.op_type == "GridSample":
            for a in node.attribute:
                if a.name == "mode":
                    a.s = mode


@pytest.mark.parametrize("mutate, message", [
    (lambda m: _set_gridsample_mode(m, b"linear"), "has mode 'linear'"),
    (lambda m: m.opset_import[0].__setattr__("version", 20), "opset 20"),
    (lambda m: m.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1)), "com.microsoft"),
    (lambda m: m.graph.node[0].__setattr__("op_type", "Inverse"), "matrix Inverse"),
    (lambda m: m.graph.output[0].__setattr__("name", "pred"), "output names"),
])
def test_contract_check_fails_loudly(exported, mutate, message):
    spec = graph_specs(resolve_config("tiny-test"))["generator"]
    model = _mutated(exported.out_dir / "generator.onnx", mutate)
    with pytest.raises(ContractError, match=message):
        check_graph(model, spec, align_corners=False)


def test_contract_check_catches_align_corners_mismatch(exported):
    spec = graph_specs(resolve_config("tiny-test"))["generator"]
    with pytest.raises(ContractError, match="align_corners=0, the config says 1"):
        check_graph(onnx.load(str(exported.out_dir / "generator.onnx")), spec, align_corners=True)


@pytest.mark.parametrize("graph", ["kp_detector", "generator"])
def test_dynamic_batch_gives_the_same_per_item_results(exported, golden_inputs, golden_expected, graph):
    path = exported.out_dir / f"{graph}.onnx"
    if graph == "kp_detector":
        feed4 = {"image": golden_inputs["driving"][:4]}
    else:
        feed4 = {"source": np.repeat(golden_inputs["source"], 4, 0), **_kp_feed(golden_expected)}
        feed4 = {k: v[:4] for k, v in feed4.items()}
    out4 = _run(path, feed4)
    for i in range(4):
        out1 = _run(path, {k: v[i:i + 1] for k, v in feed4.items()})
        for name in out1:
            np.testing.assert_allclose(out4[name][i:i + 1], out1[name], atol=2e-5, rtol=0)


def test_fp16_graphs_keep_float32_io_and_sensitive_ops_in_fp32(exported):
    for graph in ("generator", "generator_frame"):
        model = onnx.load(str(exported.out_dir / f"{graph}.fp16.onnx"))
        types = fp16_node_types(model)
        assert "Conv" in types["fp16"]
        for sensitive in ("Softmax", "GridSample", "Div", "ReduceSum", "Exp", "MatMul"):
            assert sensitive not in types["fp16"], f"{graph}: {sensitive} runs in fp16"
        assert (exported.out_dir / f"{graph}.fp16.onnx").stat().st_size < \
            0.7 * (exported.out_dir / f"{graph}.onnx").stat().st_size


def test_fp16_deployment_keeps_the_keypoint_detector_fp32(exported):
    """Policy (runtime/core/precision.py FP32_AT_FP16): with its hourglass in fp16 the worst-case emulation moves the golden
    keypoints by 3.2 px (best case 1.2 px, budget 2 px); kp_detector.fp16.onnx holds the fp32 graph."""
    model = onnx.load(str(exported.out_dir / "kp_detector.fp16.onnx"))
    assert fp16_node_types(model)["fp16"] == set()
    kp = exported.manifest.parity["results"]["kp_detector.fp16"]
    assert kp["kp_max_px"] == 0 and kp["emulated"]["worst"]["kp_max_px"] < 0.01  # fp32 op implementations differ


def test_fp16_numbers_are_measured_and_within_budget(exported):
    results = exported.manifest.parity["results"]
    for graph in ("generator.fp16", "generator_frame.fp16"):
        assert FP16_BUDGET.prediction_min_psnr_db <= results[graph]["prediction_psnr_db"] < 200
    assert 0 < results["source_encoder.fp16"]["outputs"]["source_features"]["max_abs"] < 0.1
    assert exported.manifest.parity["budgets"]["fp16"] == FP16_BUDGET.to_dict()


def test_fp16_arithmetic_is_emulated_and_the_worst_case_fits_the_budget(exported):
    """Every fp16 graph and the deployed fp16 split carry best- and worst-case emulated numbers; the worst
    case (fp16 accumulation) is within the fp16 budget on the golden fixture, and no better than the best case,
    which in turn is no better than ONNX Runtime's CPU number (fp32 arithmetic inside the fp16 regions)."""
    parity = exported.manifest.parity
    assert parity["fp16_emulation"]
    entries = {g: parity["results"][g] for g in ("generator.fp16", "generator_frame.fp16")}
    entries["split.fp16"] = parity["pipelines"]["split.fp16"]
    for name, entry in entries.items():
        best, worst = entry["emulated"]["best"], entry["emulated"]["worst"]
        assert best["passed"] and worst["passed"], name
        assert worst["budget"] == FP16_BUDGET.to_dict()
        assert FP16_BUDGET.prediction_min_psnr_db <= worst["prediction_psnr_db"] <= best["prediction_psnr_db"], name
        assert best["prediction_psnr_db"] <= entry["prediction_psnr_db"] + 0.5, name
    enc = parity["results"]["source_encoder.fp16"]["emulated"]
    assert enc["worst"]["outputs"]["source_features"]["max_abs"] >= enc["best"]["outputs"]["source_features"]["max_abs"]


def test_the_deployed_split_is_measured_end_to_end(exported, golden_inputs, golden_expected):
    """source_encoder.fp16 feeding generator_frame.fp16 is measured and gated, and the number is what the
    chain really gives (recomputed here from the published files)."""
    pipelines = exported.manifest.parity["pipelines"]
    assert set(pipelines) == {"split.fp16", "split.int8"}
    fp16 = pipelines["split.fp16"]
    assert fp16["passed"] and fp16["budget"] == FP16_BUDGET.to_dict()
    assert FP16_BUDGET.prediction_min_psnr_db <= fp16["prediction_psnr_db"] < 200
    assert exported.pipelines["split.fp16"].psnr_db == fp16["prediction_psnr_db"]
    out = exported.out_dir
    kp = _kp_feed(golden_expected)
    encoded = _run(out / "source_encoder.fp16.onnx", {"source": golden_inputs["source"]})
    chained = _run(out / "generator_frame.fp16.onnx", generator_feed(encoded, KP(kp["kp_source_value"][:1],
                   kp["kp_source_jacobian"][:1]), KP(kp["kp_driving_value"], kp["kp_driving_jacobian"])))
    ref = _run(out / "generator.onnx", {"source": np.repeat(golden_inputs["source"], len(kp["kp_driving_value"]), 0),
                                         **kp})
    from fomm_deploy.runtime.core.compare import psnr

    assert FP16_BUDGET.prediction_min_psnr_db <= psnr(chained["prediction"], ref["prediction"]) < 200


def test_manifest(exported, golden_ckpt):
    m = json.loads((exported.out_dir / "manifest.json").read_text())
    assert m["format"] == MANIFEST_FORMAT
    assert m["checkpoint"]["sha256"] == sha256_file(golden_ckpt) and m["checkpoint"]["epoch"] == 99
    assert m["opset"] == OPSET and m["align_corners"] is False and m["config_name"] == "tiny-test"
    assert config_from_dict(m["config"]) == resolve_config("tiny-test")
    for name, entry in m["graphs"].items():
        assert sha256_file(exported.out_dir / entry["file"]) == entry["sha256"]
    spec = graph_specs(resolve_config("tiny-test"))
    assert m["graphs"]["generator"]["inputs"] == spec["generator"].to_dict()["inputs"]
    assert [t["name"] for t in m["graphs"]["kp_detector"]["outputs"]] == ["kp_value", "kp_jacobian"]
    for graph in ("kp_detector", "generator", "source_encoder", "generator_frame"):
        assert m["parity"]["results"][graph]["passed"]
        for out, numbers in m["parity"]["results"][graph]["outputs"].items():
            assert numbers["max_abs"] <= numbers["tolerance"]
    assert {"torch", "onnx", "onnxruntime", "python"} <= set(m["tools"])


def test_parity_failure_names_the_output_and_leaves_nothing(tmp_path, golden_ckpt):
    out = tmp_path / "out"
    with pytest.raises(ParityError, match=r"kp_detector\.onnx vs PyTorch.*'kp_value' max abs error .* > tolerance 0"):
        run_export(golden_ckpt, resolve_config("tiny-test"), out, tolerances=lambda precision, output: 0.0)
    assert list(tmp_path.iterdir()) == []


def test_fp16_budget_failure_leaves_nothing(tmp_path, golden_ckpt):
    out = tmp_path / "out"
    with pytest.raises(ParityError, match=r"PSNR .* dB < budget 500"):
        run_export(golden_ckpt, resolve_config("tiny-test"), out, precision="fp16",
                   budgets={"fp16": Budget(kp_max_px=2.0, prediction_min_psnr_db=UNREACHABLE_DB)})
    assert list(tmp_path.iterdir()) == []


def test_int8_budget_failure_says_what_to_do_and_leaves_nothing(tmp_path, golden_ckpt):
    """An int8 graph under its budget (forced: no int8 graph reaches the budget passed here, on any CPU) stops
    the export with one ParityError that names the graph, its PSNR and the budget, and says what to do."""
    budgets = {"int8": Budget(kp_max_px=INT8_BUDGET.kp_max_px, prediction_min_psnr_db=UNREACHABLE_DB)}
    with pytest.raises(ParityError, match=r"generator\.int8\.onnx vs generator\.onnx.*PSNR [0-9.]+ dB < budget "
                                          r"500\.0 dB.*--calibration VIDEO.*--precision fp16") as info:
        run_export(golden_ckpt, resolve_config("tiny-test"), tmp_path / "out", precision="int8", budgets=budgets)
    assert info.value.graph == "generator.int8.onnx vs generator.onnx"
    assert list(tmp_path.iterdir()) == []


# ---- the gates: an export is published only when every comparison it records passed -------------------


def _parity_records(parity: dict):
    """(name, record) of every judged comparison in a manifest's parity section: each graph, each deployed
    split, and their emulated fp16 best and worst cases."""
    for group in ("results", "pipelines"):
        for key, entry in parity[group].items():
            yield f"{group}: {key}", entry
            for mode, emulated in entry.get("emulated", {}).items():
                yield f"{group}: {key} ({mode}-case fp16 arithmetic)", emulated


@pytest.mark.parametrize("fixture", ["exported", "exported_ac", "bundled_int8"])
def test_a_published_export_passed_every_comparison_it_records(request, fixture):
    """What a published manifest.json records (every graph, the deployed splits, the emulated fp16 cases) all
    passed its tolerance or budget: an export that failed one is never published."""
    manifest = json.loads((request.getfixturevalue(fixture).out_dir / "manifest.json").read_text())
    assert set(manifest["parity"]["results"]) == set(manifest["graphs"])  # every published graph was compared
    records = dict(_parity_records(manifest["parity"]))
    assert [name for name, record in records.items() if record["passed"] is not True] == []


def _refused(ckpt: Path, out: Path, **options) -> ParityError:
    """The ParityError that stops the export of ``ckpt`` (tiny-test) to ``out``; a test failure, naming the
    records that failed, when the export is published instead."""
    try:
        result = run_export(ckpt, resolve_config("tiny-test"), out, **options)
    except ParityError as exc:
        return exc
    failed = [name for name, record in _parity_records(result.manifest.parity) if not record["passed"]]
    pytest.fail(f"the export was published; records in its manifest that failed their budget: {failed or 'none'}")


class _DamageStaged:
    """A ``progress`` callback that, at the first step starting with ``step``, rewrites the staged graph
    ``graph`` so that its ``output`` is scaled by ``factor``: a graph of the right contract whose numbers are
    off, as a wrong conversion would leave it."""

    def __init__(self, out: Path, step: str, graph: str, output: str, factor: float) -> None:
        self.out, self.step, self.graph, self.output, self.factor = out, step, graph, output, factor
        self.fired = False

    def __call__(self, message: str) -> None:
        if self.fired or not message.startswith(self.step):
            return
        (staging,) = self.out.parent.glob(f".{self.out.name}.partial-*")
        path = staging / self.graph
        model = onnx.load(str(path))
        raw, factor = f"{self.output}_undamaged", f"{self.output}_damage"
        for node in model.graph.node:
            for names in (node.input, node.output):
                renamed = [raw if name == self.output else name for name in names]
                del names[:]
                names.extend(renamed)
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(self.factor, np.float32), factor))
        model.graph.node.append(onnx.helper.make_node("Mul", [raw, factor], [self.output]))
        onnx.save(model, str(path))
        self.fired = True


def test_fp16_worst_case_gate_stops_an_export_that_onnx_runtime_numbers_pass(tmp_path, golden_ckpt, exported):
    """A budget between the worst-case fp16 arithmetic and ONNX Runtime's CPU numbers (both measured on this
    machine by the fixture's export; about 55 dB): every CPU comparison passes it, the emulated worst case of
    generator.fp16 does not, and the export stops there, at the per-graph gate, writing nothing."""
    parity = exported.manifest.parity
    cpu = min([parity["results"][g]["prediction_psnr_db"] for g in ("generator.fp16", "generator_frame.fp16")]
              + [parity["pipelines"]["split.fp16"]["prediction_psnr_db"]])
    worst = parity["results"]["generator.fp16"]["emulated"]["worst"]["prediction_psnr_db"]
    assert worst + 2 < cpu, (worst, cpu)  # fp16 arithmetic costs more than fp16 weights alone (else no such budget)
    budget = round((worst + cpu) / 2, 1)
    error = _refused(golden_ckpt, tmp_path / "out", precision="fp16",
                     budgets={"fp16": Budget(kp_max_px=FP16_BUDGET.kp_max_px, prediction_min_psnr_db=budget)})
    assert error.graph == "generator.fp16.onnx (worst-case fp16 arithmetic) vs generator.onnx"
    assert re.search(rf"PSNR [0-9.]+ dB < budget {re.escape(str(budget))} dB", str(error)), str(error)
    assert BUDGET_HINTS["fp16"] in str(error)
    assert list(tmp_path.iterdir()) == []


def test_split_gate_judges_the_source_encoder_that_nothing_else_judges(tmp_path, golden_ckpt):
    """source_encoder.fp16's outputs are features, which no budget covers: its own comparison only requires them
    to be finite. Here they are off (halved, once the graph is staged): the end-to-end comparison of the deployed
    split (source_encoder.fp16 -> generator_frame.fp16 against generator.onnx) stops the export, writing nothing."""
    out = tmp_path / "out"
    damage = _DamageStaged(out, "measuring source_encoder.fp16.onnx", "source_encoder.fp16.onnx", "source_features",
                           0.5)
    error = _refused(golden_ckpt, out, precision="fp16", emulate_fp16=False, progress=damage)
    assert damage.fired
    assert error.graph == "source_encoder.fp16.onnx -> generator_frame.fp16.onnx vs generator.onnx"
    assert f"dB < budget {FP16_BUDGET.prediction_min_psnr_db} dB" in str(error) and BUDGET_HINTS["fp16"] in str(error)
    assert list(tmp_path.iterdir()) == []


def test_split_worst_case_gate_stops_the_export(tmp_path, golden_ckpt):
    """The deployed split's emulated worst case has a gate of its own. On the golden model its numbers equal
    generator.fp16's, whose gate would stop the export first; so here the staged encoder is damaged only after
    ONNX Runtime measured the split, and the emulation of the split is the one comparison that sees it."""
    out = tmp_path / "out"
    damage = _DamageStaged(out, "emulating fp16 arithmetic of source_encoder -> generator_frame",
                           "source_encoder.fp16.onnx", "source_features", 0.5)
    error = _refused(golden_ckpt, out, precision="fp16", progress=damage)
    assert damage.fired
    assert error.graph == "source_encoder.fp16 -> generator_frame.fp16 (worst-case fp16 arithmetic) vs generator.onnx"
    assert f"dB < budget {FP16_BUDGET.prediction_min_psnr_db} dB" in str(error) and BUDGET_HINTS["fp16"] in str(error)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_force(tmp_path, golden_ckpt):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    with pytest.raises(ExportError, match="already exists and is not empty; pass --force"):
        run_export(golden_ckpt, resolve_config("tiny-test"), out)
    assert (out / "old.txt").exists()
    # --force never removes the user's files
    with pytest.raises(ExportError, match=r"no manifest.json that lists its files \(it holds old.txt\)"):
        run_export(golden_ckpt, resolve_config("tiny-test"), out, force=True)
    assert (out / "old.txt").read_text() == "keep me"
    (out / "old.txt").unlink()
    (out / "manifest.json").write_text('{"graphs": {"generator": {"file": "generator.onnx"}}}')  # an earlier export
    (out / "generator.onnx").write_bytes(b"old graph")
    run_export(golden_ckpt, resolve_config("tiny-test"), out, force=True)
    assert (out / "generator.onnx").read_bytes() != b"old graph" and (out / "manifest.json").stat().st_size > 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_mismatched_checkpoint_is_rejected_before_writing(tmp_path, golden_ckpt):
    with pytest.raises(CheckpointError, match="Use --config tiny-test"):
        run_export(golden_ckpt, resolve_config("vox-256"), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def _cli(*args, cwd):
    script = Path(sys.executable).parent / "fomm-export"
    assert script.exists(), "fomm-export is not installed; run the README set-up (make setup)"
    return subprocess.run([str(script), *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_cli_success_prints_the_table(tmp_path, golden_ckpt):
    res = _cli("--ckpt", str(golden_ckpt), "--config", "tiny-test", "--precision", "fp16", "--min-psnr", "fp16=30",
               cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "Warning" not in res.stderr, res.stderr  # torch's warnings are the exporter's business, not the user's
    out = tmp_path / "exported"  # the default --out, relative to the current directory
    assert (out / "manifest.json").exists()
    budget = json.loads((out / "manifest.json").read_text())["parity"]["budgets"]["fp16"]  # --min-psnr's
    assert budget == Budget(kp_max_px=FP16_BUDGET.kp_max_px, prediction_min_psnr_db=30.0).to_dict()
    for name in ("kp_detector.onnx", "generator.onnx", "kp_detector.fp16.onnx", "generator.fp16.onnx",
                 "source_encoder.onnx", "generator_frame.onnx"):
        line = next(line for line in res.stdout.splitlines() if line.startswith(name))
        assert " 16 " in line
    assert "dB vs fp32" in res.stdout and "px max vs fp32" in res.stdout
    assert re.search(r"deployed split\.fp16 +PSNR [0-9.]+ dB end to end vs fp32 \(budget >= 30 dB\)", res.stdout)


@pytest.mark.parametrize("make_args, message", [
    (lambda t, g: ["--ckpt", str(t / "missing.pth.tar")], "checkpoint not found"),
    (lambda t, g: ["--ckpt", str(_corrupt(t, g))], "truncated or corrupt"),
    (lambda t, g: ["--ckpt", str(g)], "does not fit config 'vox-256'.*Use --config tiny-test"),
    (lambda t, g: ["--ckpt", str(g), "--config", "tiny-tset"], "Did you mean 'tiny-test'"),
    (lambda t, g: ["--ckpt", str(g), "--config", "tiny-test", "--out", str(_existing(t))], "pass --force"),
    (lambda t, g: ["--ckpt", str(g), "--config", "tiny-test", "--out", str(_file(t))], "is a file"),
    (lambda t, g: ["--ckpt", str(g), "--config", "tiny-test", "--out", str(_file(t) / "sub")], "cannot write"),
    (lambda t, g: ["--ckpt", str(g), "--config", "tiny-test", "--engine"], "--engine needs"),
    (lambda t, g: ["--ckpt", str(g), "--config", "tiny-test", "--precision", "int8", "--min-psnr",
                   f"int8={UNREACHABLE_DB:g}"], r"generator\.int8\.onnx vs generator\.onnx: .*PSNR [0-9.]+ dB < "
                                                r"budget 500\.0 dB.*--calibration VIDEO.*--precision fp16"),
    (lambda t, g: ["--ckpt", str(g), "--config", "tiny-test", "--min-psnr", "int8"], "expected PRECISION=DB"),
    (lambda t, g: ["--ckpt", str(g), "--config", "tiny-test", "--precision", "all", "--min-psnr", "int8=x"],
     "'x' is not a number of dB"),
    (lambda t, g: ["--ckpt", str(g), "--config", "tiny-test", "--precision", "fp16", "--min-psnr", "int8=30"],
     "writes no int8 graphs"),
])
def test_cli_user_errors_are_one_line_and_write_nothing(tmp_path, golden_ckpt, make_args, message):
    work = tmp_path / "work"
    work.mkdir()
    args = make_args(tmp_path, golden_ckpt)
    before = sorted(p.name for p in tmp_path.iterdir())
    res = _cli(*args, cwd=work)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    assert re.search(message, lines[0]), lines[0]
    assert not (work / "exported").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def _corrupt(tmp: Path, golden: Path) -> Path:
    path = tmp / "corrupt.pth.tar"
    path.write_bytes(golden.read_bytes()[:100_000])
    return path


def _existing(tmp: Path) -> Path:
    path = tmp / "existing"
    path.mkdir(exist_ok=True)
    (path / "x").write_text("x")
    return path


def _file(tmp: Path) -> Path:
    path = tmp / "a-file"
    path.write_text("x")
    return path


@pytest.mark.slow
def test_full_size_vox_256_export(tmp_path):
    """The real vox-256 architecture (60M parameters, random weights) exports and verifies."""
    import torch

    from fomm_deploy.training.checkpoint import save_checkpoint
    from fomm_deploy.training.model import build_models

    torch.manual_seed(0)
    models = build_models(resolve_config("vox-256"))
    ckpt = save_checkpoint(tmp_path / "vox.pth.tar", generator=models.generator, kp_detector=models.kp_detector)
    # emulate_fp16 off: the worst-case emulation of vox-256 takes far longer than the export itself
    result = run_export(ckpt, resolve_config("vox-256"), tmp_path / "out", precision="all", emulate_fp16=False)
    assert (tmp_path / "out" / "generator.fp16.onnx").exists()
    assert result.manifest.graphs["generator"].spec.inputs[0].shape == ("B", 3, 256, 256)


@pytest.mark.parametrize("name", ["generator.int8", "generator_frame.int8"])
def test_int8_graphs(exported, name):
    model = onnx.load(str(exported.out_dir / f"{name}.onnx"))
    spec = graph_specs(resolve_config("tiny-test"))[name.split(".")[0]]
    check_graph(model, spec, align_corners=False)  # float32 I/O: the same contract
    ops = [n.op_type for n in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    # Only convolutions are quantised: no Q/DQ feeds the grid sampling, softmax or keypoint maths.
    producers = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type in ("GridSample", "Softmax", "Exp"):
            assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in node.input)
    # The up blocks' interleave moves uint8 (quantize.sink_dequantize): no Concat there reads a float tensor,
    # and nothing is dequantised only to be quantised again.
    def moved_from(tensor):  # the op that made the values a chain of data movement ends in
        node = producers.get(tensor)
        while node is not None and node.op_type in ("Slice", "Split", "Unsqueeze", "Squeeze", "Reshape", "Concat"):
            node = producers.get(node.input[0])
        return node.op_type if node is not None else None

    interleave = [n for n in model.graph.node
                  if n.op_type == "Concat" and "/up_blocks." in n.name and "/hourglass/" not in n.name
                  and moved_from(n.input[0]) in ("QuantizeLinear", "DequantizeLinear")]
    assert interleave
    for node in interleave:
        assert all(moved_from(i) == "QuantizeLinear" for i in node.input), node.name
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] in producers:
            assert producers[node.input[0]].op_type != "DequantizeLinear", node.name


def test_int8_keeps_the_keypoint_detector_and_source_encoder_fp32(exported):
    assert not (exported.out_dir / "kp_detector.int8.onnx").exists()
    assert not (exported.out_dir / "source_encoder.int8.onnx").exists()
    assert graph_file_name("kp_detector", "int8") == "kp_detector.onnx"
    assert graph_file_name("source_encoder", "int8") == "source_encoder.onnx"
    assert graph_file_name("generator_frame", "int8") == "generator_frame.int8.onnx"
    assert graph_file_name("generator", "fp16") == "generator.fp16.onnx"
    results = exported.manifest.parity["results"]
    assert "kp_detector.int8" not in results and "source_encoder.int8" not in results
    for graph in ("generator.int8", "generator_frame.int8"):  # measured and gated (with the floor passed here)
        assert results[graph]["budget"] == RANDOM_WEIGHTS_INT8["int8"].to_dict() and results[graph]["passed"]
        assert 20 <= results[graph]["prediction_psnr_db"] < 100


@pytest.fixture(scope="module")
def bundled_int8(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundled") / "int8"
    return run_export(BUNDLED_CKPT, resolve_config(BUNDLED_CONFIG), out, precision="int8")


def test_int8_quality_on_the_bundled_model(bundled_int8):
    """A trained model passes the default int8 budget, graph by graph and for the deployed split."""
    parity = bundled_int8.manifest.parity
    assert parity["budgets"] == {"int8": INT8_BUDGET.to_dict()}
    assert "real frames" in parity["int8_inputs"]
    for key in ("generator.int8", "generator_frame.int8"):
        assert INT8_BUDGET.prediction_min_psnr_db <= parity["results"][key]["prediction_psnr_db"] < 100
    split = parity["pipelines"]["split.int8"]
    assert split["passed"] and INT8_BUDGET.prediction_min_psnr_db <= split["prediction_psnr_db"] < 100


def test_int8_calibration_video_splits_real_frames(tmp_path, golden_ckpt):
    from fomm_deploy.runtime.media.samples import write_sample_driving_video

    from fomm_deploy.export.inputs import calibration_frames

    video = write_sample_driving_video(tmp_path / "clip.mp4", frames=40, size=96)
    cfg = resolve_config("tiny-test")
    calib, held_out = calibration_frames(cfg, video)
    assert calib.shape == (24, 128, 128, 3) and held_out.shape == (8, 128, 128, 3)
    # No evaluation frame was used for calibration.
    assert all(min(np.abs(c - h).max() for c in calib) > 0 for h in held_out)
    result = run_export(golden_ckpt, cfg, tmp_path / "out", precision="int8", calibration=video,
                        budgets=RANDOM_WEIGHTS_INT8)
    assert str(video) in result.manifest.parity["int8_inputs"]
    assert "24 calibration frames, judged on 8 other frames" in result.manifest.parity["int8_inputs"]
    assert not (tmp_path / "out" / "generator.fp16.onnx").exists()
    assert result.manifest.parity["results"]["generator_frame.int8"]["prediction_psnr_db"] >= 20


def test_cli_int8_calibration_too_short_is_a_clear_error(tmp_path, golden_ckpt):
    from fomm_deploy.runtime.media.samples import write_sample_driving_video

    video = write_sample_driving_video(tmp_path / "short.mp4", frames=3, size=96)
    res = _cli("--ckpt", str(golden_ckpt), "--config", "tiny-test", "--precision", "int8", "--calibration",
               str(video), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "has 3 frames; needs at least 4" in res.stderr
    assert not (tmp_path / "out").exists()
