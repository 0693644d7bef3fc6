"""The training sections of a FOMM config: ``dataset_params``, ``train_params``, ``reconstruction_params``,
``animate_params`` and ``visualizer_params``, in upstream's YAML schema.

The runtime's :class:`~fomm_deploy.runtime.core.config.FommConfig` carries these sections as plain data (deployment
never reads them); :func:`training_config` parses and validates them with the same schema machinery, so a
misspelt or mistyped key is named the same way. Field names are upstream's keys, defaults its defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from fomm_deploy.runtime.core.config import FommConfig, build_section
from fomm_deploy.runtime.core.errors import ConfigError

@dataclass(frozen=True)
class FlipParams:
    horizontal_flip: bool = False
    time_flip: bool = False


@dataclass(frozen=True)
class JitterParams:
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0


@dataclass(frozen=True)
class CropParams:
    size: tuple[int, ...] = ()


@dataclass(frozen=True)
class ResizeParams:
    ratio: tuple[float, ...] = ()


@dataclass(frozen=True)
class RotationParams:
    degrees: float = 0.0


@dataclass(frozen=True)
class AugmentationParams:
    flip_param: FlipParams | None = None
    jitter_param: JitterParams | None = None
    crop_param: CropParams | None = None
    resize_param: ResizeParams | None = None
    rotation_param: RotationParams | None = None


@dataclass(frozen=True)
class NearPairs:
    """fomm-deploy addition: ``share`` of the training pairs take their two frames at most ``max_gap`` frames
    apart (0: the same frame twice), the rest two frames anywhere in the video as upstream. Relative animation
    spends most frames close to the driver's first frame, where detail kept matters more than large motion."""
    share: float = 0.0
    max_gap: int = 2


@dataclass(frozen=True)
class DatasetParams:
    root_dir: str = ""
    frame_shape: tuple[int, ...] = (256, 256, 3)
    id_sampling: bool = False
    pairs_list: str | None = None
    augmentation_params: AugmentationParams | None = None
    near_pairs: NearPairs | None = None  # fomm-deploy addition; absent: upstream's sampling


@dataclass(frozen=True)
class TransformParams:
    sigma_affine: float = 0.05
    sigma_tps: float = 0.005
    points_tps: int = 5


@dataclass(frozen=True)
class LossWeights:
    generator_gan: float = 0.0
    discriminator_gan: float = 1.0
    feature_matching: tuple[float, ...] = (10, 10, 10, 10)
    perceptual: tuple[float, ...] = (10, 10, 10, 10, 10)
    equivariance_value: float = 10.0
    equivariance_jacobian: float = 10.0


@dataclass(frozen=True)
class TrainParams:
    num_epochs: int = 100
    num_repeats: int = 1
    epoch_milestones: tuple[int, ...] = ()
    lr_generator: float = 2.0e-4
    lr_discriminator: float = 2.0e-4
    lr_kp_detector: float = 2.0e-4
    batch_size: int = 1
    scales: tuple[float, ...] = (1, 0.5, 0.25, 0.125)
    checkpoint_freq: int = 50
    transform_params: TransformParams = field(default_factory=TransformParams)
    loss_weights: LossWeights = field(default_factory=LossWeights)
    # fomm-deploy addition: 'vgg19' (upstream; needs torchvision-format weights, fomm-train --vgg19 PATH)
    # or 'pixel' (multi-scale L1 on the image pyramid; no weights, for tests and the synthetic demo).
    perceptual_backbone: str = "vgg19"


@dataclass(frozen=True)
class ReconstructionParams:
    num_videos: int = 1000
    format: str = ".mp4"


@dataclass(frozen=True)
class NormalizationParams:
    adapt_movement_scale: bool = False
    use_relative_movement: bool = True
    use_relative_jacobian: bool = True


@dataclass(frozen=True)
class AnimateParams:
    num_pairs: int = 50
    format: str = ".mp4"
    normalization_params: NormalizationParams = field(default_factory=NormalizationParams)


@dataclass(frozen=True)
class VisualizerParams:
    kp_size: int = 5
    draw_border: bool = True
    colormap: str = "gist_rainbow"


@dataclass(frozen=True)
class TrainingConfig:
    """The parsed training sections of one config (``model`` is the config they came from)."""

    model: FommConfig = field(compare=False, repr=False)
    dataset_params: DatasetParams = field(default_factory=DatasetParams)
    train_params: TrainParams = field(default_factory=TrainParams)
    reconstruction_params: ReconstructionParams = field(default_factory=ReconstructionParams)
    animate_params: AnimateParams = field(default_factory=AnimateParams)
    visualizer_params: VisualizerParams = field(default_factory=VisualizerParams)


_SECTION_TYPES = {
    "dataset_params": DatasetParams,
    "train_params": TrainParams,
    "reconstruction_params": ReconstructionParams,
    "animate_params": AnimateParams,
    "visualizer_params": VisualizerParams,
}


def training_config(cfg: FommConfig) -> TrainingConfig:
    """Parse and validate the training sections of ``cfg``.

    Raises:
        ConfigError: an unknown, missing or mistyped key in a training section (the message names it), a
            ``perceptual_backbone`` other than ``vgg19`` / ``pixel``, or ``near_pairs`` out of range.
    """
    parsed = {}
    for section, cls in _SECTION_TYPES.items():
        data = dict(cfg.sections.get(section) or {})
        if section == "dataset_params":
            data["frame_shape"] = list(cfg.frame_shape)
        parsed[section] = build_section(cls, data, section)
    tcfg = TrainingConfig(model=cfg, **parsed)
    backbone = tcfg.train_params.perceptual_backbone
    if backbone not in ("vgg19", "pixel"):
        raise ConfigError(f"'train_params.perceptual_backbone' must be vgg19 or pixel, got {backbone!r}")
    near = tcfg.dataset_params.near_pairs
    if near is not None and not (0.0 <= near.share <= 1.0 and near.max_gap >= 0):
        raise ConfigError(f"'dataset_params.near_pairs' needs share in [0, 1] and max_gap >= 0, got share "
                          f"{near.share}, max_gap {near.max_gap}")
    return tcfg


def with_training_params(cfg: FommConfig, section: str, **changes) -> FommConfig:
    """A copy of ``cfg`` with keys of one training section changed (e.g. ``train_params``, ``num_epochs=3``)."""
    if section not in _SECTION_TYPES:
        raise ConfigError(f"unknown training section '{section}'; choose from {', '.join(_SECTION_TYPES)}")
    sections = {k: dict(v) for k, v in cfg.sections.items()}
    sections[section] = {**sections.get(section, {}), **changes}
    return dataclasses.replace(cfg, sections=sections)
