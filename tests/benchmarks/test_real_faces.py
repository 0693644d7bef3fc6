"""benchmarks/real_faces: its --model parsing and its PSNR (the measurements themselves run on real models)."""

from __future__ import annotations

import numpy as np
import pytest

from fomm_deploy.benchmarks.real_faces import parse_model, psnr
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
