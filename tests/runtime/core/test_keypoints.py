"""normalize_kp in numpy against upstream's golden values, plus its edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from fomm_deploy.runtime.core.errors import KeypointError
from fomm_deploy.runtime.core.keypoints import KP, convex_hull_area, movement_scale, normalize_kp


@pytest.fixture
def golden_kp(golden_expected):
    e = golden_expected
    source = KP(e["kp_source_value"], e["kp_source_jacobian"])
    driving = KP(e["kp_driving_value"], e["kp_driving_jacobian"])
    initial = KP(driving.value[:1], driving.jacobian[:1])
    return source, driving, initial


@pytest.mark.parametrize("adapt, prefix", [(False, "kp_norm"), (True, "kp_norm_adapt")])
def test_matches_upstream(golden_kp, golden_expected, adapt, prefix):
    out = normalize_kp(*golden_kp, adapt_movement_scale=adapt, use_relative_movement=True,
                       use_relative_jacobian=True)
    assert out.value.dtype == np.float32 and out.jacobian.dtype == np.float32
    np.testing.assert_allclose(out.value, golden_expected[prefix + "_value"], atol=2e-5, rtol=0)
    np.testing.assert_allclose(out.jacobian, golden_expected[prefix + "_jacobian"], atol=2e-5, rtol=0)


def test_movement_scale_matches_upstream(golden_kp, golden_expected):
    source, _, initial = golden_kp
    np.testing.assert_allclose(movement_scale(source, initial), golden_expected["adapt_movement_scale"], rtol=1e-5)


def test_first_frame_maps_onto_the_source(golden_kp):
    source, driving, initial = golden_kp
    out = normalize_kp(source, KP(driving.value[:1], driving.jacobian[:1]), initial, adapt_movement_scale=True,
                       use_relative_movement=True, use_relative_jacobian=True)
    np.testing.assert_array_equal(out.value, source.value)
    np.testing.assert_allclose(out.jacobian, source.jacobian, atol=1e-6)


def test_absolute_mode_returns_driving_unchanged(golden_kp):
    source, driving, initial = golden_kp
    out = normalize_kp(source, driving, initial, use_relative_movement=False, use_relative_jacobian=True)
    assert out.value is driving.value and out.jacobian is driving.jacobian


def test_relative_movement_without_relative_jacobian_keeps_driving_jacobian(golden_kp):
    source, driving, initial = golden_kp
    out = normalize_kp(source, driving, initial, use_relative_movement=True, use_relative_jacobian=False)
    assert out.jacobian is driving.jacobian


def test_convex_hull_area():
    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0.5], [0.2, 0.7]])
    assert convex_hull_area(square) == pytest.approx(1.0)
    triangle = np.array([[0, 0], [4, 0], [0, 3], [1, 1], [4, 0]])
    assert convex_hull_area(triangle) == pytest.approx(6.0)
    assert convex_hull_area(np.array([[0, 0], [1, 1], [2, 2]])) == 0.0


def test_degenerate_reference_is_a_clear_error():
    source = KP(np.random.default_rng(0).uniform(-1, 1, (1, 10, 2)).astype(np.float32))
    collinear = KP(np.stack([np.linspace(-1, 1, 10)] * 2, -1)[None].astype(np.float32))
    with pytest.raises(KeypointError, match="reference frame are collinear"):
        normalize_kp(source, collinear, collinear, adapt_movement_scale=True, use_relative_movement=True)


def test_bad_shape_is_named():
    good = KP(np.zeros((1, 10, 2), np.float32))
    with pytest.raises(KeypointError, match=r"kp_driving.value: got shape \(1, 10, 3\), expected \(B, K, 2\)"):
        normalize_kp(good, KP(np.zeros((1, 10, 3), np.float32)), good, use_relative_movement=True)


def test_degenerate_source_is_a_clear_error():
    reference = KP(np.random.default_rng(1).uniform(-1, 1, (1, 10, 2)).astype(np.float32))
    coincident = KP(np.zeros((1, 10, 2), np.float32))
    with pytest.raises(KeypointError, match="source are collinear"):
        movement_scale(coincident, reference)


def test_movement_scale_is_the_ratio_of_hull_sizes():
    square = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5], [0.1, 0.2]], np.float32)
    small = KP(square[None] * 0.5)
    large = KP(square[None])
    assert movement_scale(small, large) == pytest.approx(0.5)
    assert movement_scale(large, small) == pytest.approx(2.0)


def test_missing_batch_axis_is_named():
    good = KP(np.zeros((1, 10, 2), np.float32))
    with pytest.raises(KeypointError, match=r"kp_source.value: got shape \(10, 2\), expected \(B, K, 2\)"):
        normalize_kp(KP(np.zeros((10, 2), np.float32)), good, good, use_relative_movement=True)


def test_relative_jacobian_without_jacobians_gives_none():
    rng = np.random.default_rng(2)
    source, initial = (KP(rng.uniform(-1, 1, (1, 10, 2)).astype(np.float32)) for _ in range(2))
    driving = KP(rng.uniform(-1, 1, (3, 10, 2)).astype(np.float32))
    out = normalize_kp(source, driving, initial, use_relative_movement=True, use_relative_jacobian=True)
    assert out.jacobian is None
    np.testing.assert_allclose(out.value, driving.value - initial.value + source.value, atol=1e-6)


def test_float64_keypoints_come_back_float32(golden_kp):
    source, driving, initial = (KP(kp.value.astype(np.float64), kp.jacobian.astype(np.float64)) for kp in golden_kp)
    out = normalize_kp(source, driving, initial, adapt_movement_scale=True, use_relative_movement=True,
                       use_relative_jacobian=True)
    assert out.value.dtype == np.float32 and out.jacobian.dtype == np.float32
