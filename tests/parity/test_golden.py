"""Parity with upstream first-order-model on the golden-small fixture, for both align_corners settings.

Flow as in the fixture's README: every module call with batch size 1, relative motion with relative
jacobians, generator driven by the adapt-scale keypoints. Tolerances are the fixture's suggested ones.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fomm_deploy.runtime.core.config import load_config
from fomm_deploy.runtime.core.keypoints import KP, movement_scale, normalize_kp
from fomm_deploy.training.checkpoint import load_checkpoint

KP_ATOL = 2e-5
MAP_ATOL = 2e-5  # deformation, occlusion_map, mask
PRED_ATOL = 1e-4
WARP_ATOL, WARP_MEAN = 2e-4, 1e-5  # sparse_deformed, deformed


def _kp_np(kp) -> KP:
    return KP(kp["value"].numpy(), kp["jacobian"].numpy())


def _kp_torch(kp: KP, i: int) -> dict:
    return {"value": torch.from_numpy(kp.value[i:i + 1]), "jacobian": torch.from_numpy(kp.jacobian[i:i + 1])}


def run_flow(golden_dir, inputs, align_corners: bool) -> dict[str, np.ndarray]:
    cfg = load_config(golden_dir / "config.yaml").replace_model(align_corners=align_corners)
    models = load_checkpoint(golden_dir / "checkpoint.pth.tar", cfg).models
    kp_det, gen = models.kp_detector, models.generator
    source = torch.from_numpy(inputs["source"])
    driving = torch.from_numpy(inputs["driving"])
    out: dict[str, list] = {}
    with torch.no_grad():
        kp_source = _kp_np(kp_det(source))
        kp_init = _kp_np(kp_det(driving[0:1]))
        kp_frames = [_kp_np(kp_det(driving[i:i + 1])) for i in range(len(driving))]
        kp_driving = KP(np.concatenate([k.value for k in kp_frames]), np.concatenate([k.jacobian for k in kp_frames]))
        norm = normalize_kp(kp_source, kp_driving, kp_init, use_relative_movement=True, use_relative_jacobian=True)
        norm_adapt = normalize_kp(kp_source, kp_driving, kp_init, adapt_movement_scale=True,
                                  use_relative_movement=True, use_relative_jacobian=True)
        kp_source_t = _kp_torch(kp_source, 0)
        for i in range(len(driving)):
            result = gen(source, _kp_torch(norm_adapt, i), kp_source_t)
            for key, value in result.items():
                out.setdefault(key, []).append(value.numpy())
        source_down = kp_det.down(source).numpy()
    arrays = {key: np.concatenate(values) for key, values in out.items()}
    arrays.update(
        kp_source_value=kp_source.value, kp_source_jacobian=kp_source.jacobian,
        kp_driving_value=kp_driving.value, kp_driving_jacobian=kp_driving.jacobian,
        kp_norm_value=norm.value, kp_norm_jacobian=norm.jacobian,
        kp_norm_adapt_value=norm_adapt.value, kp_norm_adapt_jacobian=norm_adapt.jacobian,
        adapt_movement_scale=np.float64(movement_scale(kp_source, kp_init)), source_down=source_down,
    )
    return arrays


@pytest.fixture(scope="module")
def ours_false(golden_dir, golden_inputs):
    return run_flow(golden_dir, golden_inputs, align_corners=False)


@pytest.fixture(scope="module")
def ours_true(golden_dir, golden_inputs):
    return run_flow(golden_dir, golden_inputs, align_corners=True)


def _tolerance(key: str) -> tuple[float, float | None]:
    if key.startswith("kp_") or key == "source_down":
        return KP_ATOL, None
    if key in ("deformation", "occlusion_map", "mask"):
        return MAP_ATOL, None
    if key == "prediction":
        return PRED_ATOL, None
    if key in ("sparse_deformed", "deformed"):
        return WARP_ATOL, WARP_MEAN
    raise KeyError(key)


def _check(key: str, ours: np.ndarray, expected: np.ndarray) -> None:
    assert ours.shape == expected.shape, f"{key}: shape {ours.shape} vs expected {expected.shape}"
    atol, mean_tol = _tolerance(key)
    err = np.abs(ours.astype(np.float64) - expected.astype(np.float64))
    assert err.max() <= atol, f"{key}: max abs error {err.max():.3g} > {atol}"
    if mean_tol is not None:
        assert err.mean() <= mean_tol, f"{key}: mean abs error {err.mean():.3g} > {mean_tol}"


EXPECTED_KEYS = [
    "kp_source_value", "kp_source_jacobian", "kp_driving_value", "kp_driving_jacobian", "kp_norm_value",
    "kp_norm_jacobian", "kp_norm_adapt_value", "kp_norm_adapt_jacobian", "source_down", "prediction",
    "deformation", "occlusion_map", "mask", "sparse_deformed", "deformed",
]


def test_fixture_has_the_arrays_we_check(golden_expected):
    assert set(golden_expected) == set(EXPECTED_KEYS) | {"adapt_movement_scale"}


@pytest.mark.parametrize("key", EXPECTED_KEYS)
def test_matches_upstream_align_corners_false(ours_false, golden_expected, key):
    _check(key, ours_false[key], golden_expected[key])


def test_adapt_movement_scale(ours_false, golden_expected):
    np.testing.assert_allclose(ours_false["adapt_movement_scale"], golden_expected["adapt_movement_scale"], rtol=1e-5)


@pytest.mark.parametrize("key", ["prediction", "deformation", "occlusion_map"])
def test_matches_upstream_align_corners_true(ours_true, golden_expected_ac, key):
    ours = ours_true[key]
    if key == "prediction":
        ours = ours[golden_expected_ac["frame_index"]]
    _check(key, ours, golden_expected_ac[key])


def test_align_corners_setting_matters(ours_false, ours_true):
    # The two conventions are different functions (FACTS 2.7): a test that passed for both with the
    # same outputs would mean the switch does nothing.
    assert np.abs(ours_false["prediction"] - ours_true["prediction"]).max() > 0.1
    np.testing.assert_array_equal(ours_false["kp_driving_value"], ours_true["kp_driving_value"])


def test_batched_equals_per_frame(golden_dir, golden_inputs, ours_false):
    cfg = load_config(golden_dir / "config.yaml")
    models = load_checkpoint(golden_dir / "checkpoint.pth.tar", cfg).models
    with torch.no_grad():
        kp = models.kp_detector(torch.from_numpy(golden_inputs["driving"]))
    np.testing.assert_allclose(kp["value"].numpy(), ours_false["kp_driving_value"], atol=KP_ATOL, rtol=0)
