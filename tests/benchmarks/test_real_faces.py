"""benchmarks/real_faces: its --model parsing and its PSNR (the measurements themselves run on real models)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fomm_deploy.benchmarks.bench import machine_info
from fomm_deploy.benchmarks.real_faces import markdown, no_nan, parse_model, psnr
from fomm_deploy.runtime.core.errors import InputError


def test_model_spec_names_checkpoint_and_config(tmp_path):
    ckpt = tmp_path / "a b.pth.tar"
    ckpt.write_bytes(b"x")
    m = parse_model(f"mine={ckpt}:configs/portrait-64.yaml")
    assert (m.name, m.ckpt, m.config) == ("mine", ckpt, "configs/portrait-64.yaml")
    with pytest.raises(InputError, match="NAME=CKPT:CONFIG"):
        parse_model(str(ckpt))
    with pytest.raises(InputError, match="no checkpoint at"):
        parse_model(f"mine={tmp_path / 'missing.pth.tar'}:vox-256")


def test_psnr_in_decibels_of_uint8():
    a = np.zeros((4, 4, 3), np.uint8)
    assert psnr(a, a) == float("inf")
    b = a.copy()
    b[...] = 1  # mse 1 -> 48.13 dB
    assert psnr(a, b) == pytest.approx(10 * np.log10(255.0 ** 2), abs=1e-9)


def _row(mouth: float) -> dict:
    return {"astronaut_frame0_psnr": 22.7, "synthetic_l1": 0.0307,
            "carphone_reconstruction": {"l1": 0.1382, "l1_copy": 0.0647, "akd": 15.8, "akd_copy": 5.45,
                                        "kp_spread_px": 1.23, "jacobian_scale_range": math.nan},
            "astronaut_by_carphone": {"mouth_corr": mouth, "aed_to_source": 0.598, "aed_to_driver": 0.801}}


def test_results_name_the_machine_and_keep_json_standard():
    """A model with no face found has NaN metrics: the JSON says null (json.loads of NaN is not standard JSON),
    and the table names the CPU by family/model and instruction sets, as fomm-bench's do."""
    rows = {"bundled": _row(math.nan), "trained": _row(0.36)}
    text = json.dumps(no_nan(rows), allow_nan=False)  # raises on any NaN left
    assert json.loads(text)["bundled"]["astronaut_by_carphone"]["mouth_corr"] is None
    assert json.loads(text)["trained"]["astronaut_by_carphone"]["mouth_corr"] == 0.36
    machine = machine_info()
    table = markdown(rows, "cmd", machine)
    assert f"family/model {machine['cpu_family_model']}, {machine['isa']}" in table
    assert "| trained | 22.7 | 0.1382 (0.0647) | 15.80 (5.45) | 0.36 | 0.598 | 0.801 | 0.0307 |" in table
    assert "| bundled | 22.7 | 0.1382 (0.0647) | 15.80 (5.45) | - | 0.598 | 0.801 | 0.0307 |" in table
    assert "| trained | 1.23 | - |" in table  # the keypoint diagnostics; no jacobians: no scale range


def test_keypoint_diagnostics_see_a_collapse_and_an_unsteady_scale():
    from fomm_deploy.benchmarks.real_faces import keypoint_diagnostics
    from fomm_deploy.runtime.core.keypoints import KP

    rng = np.random.default_rng(0)
    corners = np.array([[-0.5, -0.5], [0.5, -0.5], [-0.5, 0.5], [0.5, 0.5]])  # RMS 0.5*sqrt(2) from the centre
    moving = corners[None] + rng.uniform(-0.2, 0.2, (6, 1, 2))  # the whole set shifts: the spread stays
    steady = np.broadcast_to(np.eye(2) * 1.5, (6, 4, 2, 2)).copy()
    d = keypoint_diagnostics(KP(moving.astype(np.float32), steady.astype(np.float32)), 64)
    assert d["kp_spread_px"] == pytest.approx(0.5 * np.sqrt(2) * 32, rel=1e-5)
    assert d["jacobian_scale_range"] == pytest.approx(1.0, abs=1e-6)
    collapsed = moving.mean(axis=1, keepdims=True) + rng.normal(0, 1e-3, (6, 4, 2))
    growing = steady * np.linspace(1, 2, 6)[:, None, None, None]  # det grows 4x over the clip
    d = keypoint_diagnostics(KP(collapsed.astype(np.float32), growing.astype(np.float32)), 64)
    assert d["kp_spread_px"] < 0.1
    assert d["jacobian_scale_range"] == pytest.approx(4.0, rel=1e-5)
    assert math.isnan(keypoint_diagnostics(KP(moving.astype(np.float32)), 64)["jacobian_scale_range"])
