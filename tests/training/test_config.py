"""training/config.py: the training sections of a config, checked by training (the model part is
tests/runtime/core/test_config.py's)."""

from __future__ import annotations

import dataclasses

import pytest

from fomm_deploy.runtime.core.config import ConfigError, config_from_dict, resolve_config
from fomm_deploy.training.config import training_config
from tests.runtime.core.test_config import _vox_dict

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


def test_training_sections_are_kept_for_training_and_checked_there():
    data = _vox_dict()
    data["train_params"]["num_epoch"] = 3  # misspelt: deployment does not read it, training refuses it
    cfg = config_from_dict(data)
    assert cfg.sections["train_params"]["num_epoch"] == 3
    with pytest.raises(ConfigError, match=r"unknown config key 'train_params\.num_epoch'.*Did you mean 'num_epochs'"):
        training_config(cfg)


def test_perceptual_backbone_is_checked():
    data = _vox_dict()
    data["train_params"]["perceptual_backbone"] = "resnet"
    with pytest.raises(ConfigError, match="vgg19 or pixel"):
        training_config(config_from_dict(data))
