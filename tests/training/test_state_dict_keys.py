"""The networks have upstream's exact state-dict keys, order and shapes (so checkpoints load strictly)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fomm_deploy.runtime.core.config import resolve_config
from fomm_deploy.training.model import build_models

KEYS_DIR = Path(__file__).resolve().parents[1] / "data" / "upstream-keys"


@pytest.mark.parametrize("name", ["vox-256", "vox-adv-256", "taichi-256"])
@pytest.mark.parametrize("part", ["kp_detector", "generator", "discriminator"])
def test_keys_and_shapes_match_upstream(name, part):
    reference = json.loads((KEYS_DIR / f"keys-{name}.json").read_text())
    models = build_models(resolve_config(name), discriminator=True, device="meta")
    ours = {key: list(t.shape) for key, t in getattr(models, part).state_dict().items()}
    assert list(ours) == list(reference[part]), "keys or their order differ"
    assert ours == reference[part]
    params = sum(p.numel() for p in getattr(models, part).parameters())
    assert params == reference["_summary"][part]["num_parameters"]


# FACTS.md 1.7: parameter counts (nn.Parameters) per config; mgif has a single jacobian map.
@pytest.mark.parametrize("name, kp, gen, disc", [
    ("vox-256", 14_215_368, 45_575_391, 2_758_849),
    ("vox-adv-256", 14_215_368, 45_575_391, 2_769_089),
    ("taichi-adv-256", 14_215_368, 45_575_391, 2_769_089),
    ("bair-256", 14_215_368, 45_575_391, 2_758_849),
    ("fashion-256", 14_215_368, 45_575_391, 2_758_849),
    ("nemo-256", 14_215_368, 45_575_391, 2_758_849),
    ("mgif-256", 14_153_592, 45_575_391, 2_758_849),
])
def test_parameter_counts(name, kp, gen, disc):
    models = build_models(resolve_config(name), discriminator=True, device="meta")
    counts = [sum(p.numel() for p in m.parameters()) for m in models]
    assert counts == [kp, gen, disc]
