"""runtime/core/config.py: the config schema, bundled configs, upstream differences, and every error message."""

from __future__ import annotations

import pytest
import yaml

from fomm_deploy.runtime.core.config import (
    ConfigError,
    bundled_config_names,
    bundled_config_path,
    config_from_dict,
    load_config,
    resolve_config,
)

UPSTREAM = ["vox-256", "vox-adv-256", "taichi-256", "taichi-adv-256", "bair-256", "fashion-256", "mgif-256", "nemo-256"]


def test_bundled_names():
    assert set(UPSTREAM) | {"tiny-test"} <= set(bundled_config_names())


@pytest.mark.parametrize("name", UPSTREAM + ["tiny-test"])
def test_every_bundled_config_loads_and_round_trips(name):
    cfg = resolve_config(name)
    assert cfg.name == name
    assert config_from_dict(cfg.to_dict()) == cfg
    # All upstream configs share the model (FACTS 6), except mgif's single jacobian map.
    assert cfg.num_kp == 10 and cfg.num_channels == 3 and cfg.estimate_jacobian
    assert cfg.align_corners is False  # our documented default




# FACTS.md section 6: the differences of each upstream config from vox-256.


def _vox_dict():
    return yaml.safe_load(bundled_config_path("vox-256").read_text())


def test_unknown_key_is_named_with_a_suggestion():
    data = _vox_dict()
    data["model_params"]["kp_detector_params"]["temprature"] = 0.1
    with pytest.raises(ConfigError, match=r"unknown config key 'model_params\.kp_detector_params\.temprature'.*"
                                          r"Did you mean 'temperature'"):
        config_from_dict(data)


def test_unknown_top_level_section():
    data = _vox_dict()
    data["modle_params"] = {}
    with pytest.raises(ConfigError, match="unknown config key 'modle_params'"):
        config_from_dict(data)


def test_missing_required_key():
    data = _vox_dict()
    del data["model_params"]["common_params"]["num_kp"]
    with pytest.raises(ConfigError, match=r"missing required config key 'model_params\.common_params\.num_kp'"):
        config_from_dict(data)


def test_image_shape_is_an_alias_of_frame_shape():
    data = _vox_dict()
    data["dataset_params"]["image_shape"] = data["dataset_params"].pop("frame_shape")
    assert config_from_dict(data).frame_shape == (256, 256, 3)
    data["dataset_params"]["frame_shape"] = [256, 256, 3]
    with pytest.raises(ConfigError, match="sets both 'image_shape' and 'frame_shape'"):
        config_from_dict(data)


@pytest.mark.parametrize("shape, message", [
    ([100000, 100000, 3], r"a height of 100000 px is beyond any FOMM model \(at most 4096"),
    ([100, 100, 3], r"a height of 100 px does not fit the networks: model_params.kp_detector_params halves 25 px "
                    r"\(0.25 of 100\) 5 times \(its num_blocks\), so that must divide by 32; the nearest that fit: 128"),
    ([256, 3000, 3], r"a width of 3000 px does not fit .* the nearest that fit: 2944 or 3072"),
    ([8, 8, 3], r"a height of 8 px does not fit .* the nearest that fit: 128"),
])
def test_a_frame_shape_the_networks_cannot_take_is_named(shape, message, tmp_path):
    """An absurd frame_shape ended in a traceback (numpy's allocation error, torch's 'Output size is too
    small', 'Sizes of tensors must match') in fomm-export and fomm-train."""
    data = _vox_dict()
    data["dataset_params"]["frame_shape"] = shape
    with pytest.raises(ConfigError, match=r"'dataset_params.frame_shape' \[.*\]: " + message):
        config_from_dict(data)
    path = tmp_path / "absurd.yaml"
    path.write_text(yaml.safe_dump(data))
    import subprocess
    import sys
    from pathlib import Path

    res = subprocess.run([str(Path(sys.executable).parent / "fomm-export"), "--ckpt", "missing.pth.tar", "--config",
                          str(path), "--out", "out"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 1 and res.stderr.startswith(f"Error: {path}: 'dataset_params.frame_shape'"), res.stderr
    assert "Traceback" not in res.stderr


def test_every_bundled_frame_shape_fits_and_other_sizes_too():
    for name in bundled_config_names():
        resolve_config(name)
    data = _vox_dict()
    for shape in ([128, 128, 3], [512, 256, 3], [384, 384, 3]):
        data["dataset_params"]["frame_shape"] = shape
        assert config_from_dict(data).frame_size == tuple(shape[:2])


def test_align_corners_option(tmp_path):
    data = _vox_dict()
    data["model_params"]["common_params"]["align_corners"] = True
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(path)
    assert cfg.align_corners is True and cfg.name == "mine"


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_params: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML at line 2, column 1"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_config(scalar)


def test_unknown_bundled_name_suggests():
    with pytest.raises(ConfigError, match="no bundled config named 'vox256'.*Did you mean 'vox-256'"):
        resolve_config("vox256")


def test_a_training_section_must_be_a_mapping():
    data = _vox_dict()
    data["train_params"] = [1, 2]
    with pytest.raises(ConfigError, match="'train_params' must be a mapping"):
        config_from_dict(data)
