"""Config schema: bundled configs, upstream differences, and every error message."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from fomm_deploy.training.config import training_config
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


def test_vox_256_values_from_the_original_document():
    cfg = resolve_config("vox-256")
    mp, tcfg = cfg.model_params, training_config(resolve_config("vox-256"))
    assert cfg.frame_shape == tcfg.dataset_params.frame_shape == (256, 256, 3)
    assert tcfg.dataset_params.pairs_list == "data/vox256.csv"
    assert (mp.kp_detector_params.temperature, mp.kp_detector_params.block_expansion,
            mp.kp_detector_params.max_features, mp.kp_detector_params.scale_factor,
            mp.kp_detector_params.num_blocks) == (0.1, 32, 1024, 0.25, 5)
    g = mp.generator_params
    assert (g.block_expansion, g.max_features, g.num_down_blocks, g.num_bottleneck_blocks,
            g.estimate_occlusion_map) == (64, 512, 2, 6, True)
    assert dataclasses.astuple(g.dense_motion_params)[:4] == (64, 1024, 5, 0.25)
    d = mp.discriminator_params
    assert (d.scales, d.block_expansion, d.max_features, d.num_blocks, d.sn, d.use_kp) == ((1,), 32, 512, 4, True, False)
    t = tcfg.train_params
    assert (t.num_epochs, t.num_repeats, t.epoch_milestones, t.batch_size, t.checkpoint_freq) == (100, 75, (60, 90), 40, 50)
    assert t.loss_weights.generator_gan == 0 and t.loss_weights.perceptual == (10, 10, 10, 10, 10)
    assert tcfg.animate_params.normalization_params == dataclasses.replace(
        tcfg.animate_params.normalization_params, adapt_movement_scale=False, use_relative_movement=True,
        use_relative_jacobian=True)


# FACTS.md section 6: the differences of each upstream config from vox-256.
@pytest.mark.parametrize("name, checks", [
    ("vox-adv-256", {"disc.sn": False, "disc.use_kp": True, "gan": 1, "epochs": 150, "milestones": (), "batch": 36}),
    ("taichi-256", {"root": "data/taichi-png", "pairs": "data/taichi256.csv", "disc.sn": False, "batch": 30,
                    "repeats": 150, "gan": 0}),
    ("taichi-adv-256", {"disc.use_kp": True, "gan": 1, "lr_kp": 0, "epochs": 150, "milestones": (), "batch": 27}),
    ("bair-256", {"id_sampling": False, "pairs": None, "gan": 1, "epochs": 20, "milestones": (12, 18), "repeats": 1,
                  "batch": 36, "ckpt_freq": 10}),
    ("fashion-256", {"id_sampling": False, "jitter": (0, 0, 0, 0.1), "disc.sn": False, "gan": 1, "repeats": 50,
                     "batch": 27}),
    ("mgif-256", {"id_sampling": False, "single_jac": True, "gan": 1, "repeats": 25, "batch": 36, "ckpt_freq": 100,
                  "jitter": (0, 0, 0, 0.5), "crop": (256, 256), "resize": (0.9, 1.1)}),
    ("nemo-256", {"id_sampling": False, "jitter": None, "gan": 1, "repeats": 8, "batch": 36}),
])
def test_upstream_config_differences(name, checks):
    cfg = resolve_config(name)
    tcfg = training_config(cfg)
    mp, tp, dp = cfg.model_params, tcfg.train_params, tcfg.dataset_params
    aug = dp.augmentation_params
    jitter = aug.jitter_param
    actual = {
        "disc.sn": mp.discriminator_params.sn, "disc.use_kp": mp.discriminator_params.use_kp,
        "gan": tp.loss_weights.generator_gan, "epochs": tp.num_epochs, "milestones": tp.epoch_milestones,
        "batch": tp.batch_size, "root": dp.root_dir, "pairs": dp.pairs_list, "repeats": tp.num_repeats,
        "lr_kp": tp.lr_kp_detector, "id_sampling": dp.id_sampling, "ckpt_freq": tp.checkpoint_freq,
        "jitter": dataclasses.astuple(jitter) if jitter else None,
        "single_jac": mp.kp_detector_params.single_jacobian_map,
        "crop": aug.crop_param.size if aug.crop_param else None,
        "resize": aug.resize_param.ratio if aug.resize_param else None,
    }
    assert {k: actual[k] for k in checks} == checks


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


@pytest.mark.parametrize("path, value, message", [
    (("model_params", "common_params", "num_kp"), "ten", "must be an integer"),
    (("model_params", "common_params", "estimate_jacobian"), "yes", "must be true or false"),
    (("train_params", "epoch_milestones"), 60, "must be a list"),
    (("model_params", "kp_detector_params", "scale_factor"), 4, r"must be in \(0, 1\]"),
])
def test_wrong_types_are_named(path, value, message):
    data = _vox_dict()
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ConfigError, match=message):
        training_config(config_from_dict(data))  # training sections are checked by training, the model at load


def test_image_shape_is_an_alias_of_frame_shape():
    data = _vox_dict()
    data["dataset_params"]["image_shape"] = data["dataset_params"].pop("frame_shape")
    assert config_from_dict(data).frame_shape == (256, 256, 3)
    data["dataset_params"]["frame_shape"] = [256, 256, 3]
    with pytest.raises(ConfigError, match="sets both 'image_shape' and 'frame_shape'"):
        config_from_dict(data)


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


def test_training_sections_are_kept_for_training_and_checked_there():
    data = _vox_dict()
    data["train_params"]["num_epoch"] = 3  # misspelt: deployment does not read it, training refuses it
    cfg = config_from_dict(data)
    assert cfg.sections["train_params"]["num_epoch"] == 3
    with pytest.raises(ConfigError, match=r"unknown config key 'train_params\.num_epoch'.*Did you mean 'num_epochs'"):
        training_config(cfg)


def test_a_training_section_must_be_a_mapping():
    data = _vox_dict()
    data["train_params"] = [1, 2]
    with pytest.raises(ConfigError, match="'train_params' must be a mapping"):
        config_from_dict(data)


def test_perceptual_backbone_is_checked():
    data = _vox_dict()
    data["train_params"]["perceptual_backbone"] = "resnet"
    with pytest.raises(ConfigError, match="vgg19 or pixel"):
        training_config(config_from_dict(data))
