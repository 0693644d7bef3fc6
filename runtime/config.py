"""Typed FOMM configuration: upstream's YAML schema read once into frozen dataclasses.

The schema is upstream first-order-model's (``config/vox-256.yaml`` and friends), so users' existing
configs load unchanged. Two additions, both optional:

* ``model_params.common_params.align_corners`` (default ``false``): the ``align_corners`` of every
  ``grid_sample`` in the dense-motion network and generator. ``false`` is what upstream code does under
  any PyTorch >= 1.3; ``true`` is how the published checkpoints were trained (torch 1.0 semantics).
* ``dataset_params.image_shape`` is accepted as the older spelling of ``frame_shape``.
* ``train_params.perceptual_backbone`` (default ``vgg19``): ``pixel`` trains without VGG19 weights.

An unknown or misspelt key is an error that names the key (and the closest valid one). This module
imports no torch, so the runtime can read configs stored in export manifests.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

__all__ = [
    "ConfigError",
    "FommConfig",
    "bundled_config_names",
    "bundled_config_path",
    "config_from_dict",
    "load_config",
    "resolve_config",
]


# --------------------------------------------------------------------------------------------
# Schema. Field names are upstream's YAML keys; defaults are upstream's constructor defaults.
# --------------------------------------------------------------------------------------------


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
class DatasetParams:
    root_dir: str = ""
    frame_shape: tuple[int, ...] = (256, 256, 3)
    id_sampling: bool = False
    pairs_list: str | None = None
    augmentation_params: AugmentationParams | None = None


@dataclass(frozen=True)
class CommonParams:
    num_kp: int
    num_channels: int
    estimate_jacobian: bool = False
    # fomm-deploy addition; see the module docstring.
    align_corners: bool = False


@dataclass(frozen=True)
class KPDetectorParams:
    temperature: float
    block_expansion: int
    max_features: int
    num_blocks: int
    scale_factor: float = 1.0
    single_jacobian_map: bool = False
    pad: int = 0


@dataclass(frozen=True)
class DenseMotionParams:
    block_expansion: int
    max_features: int
    num_blocks: int
    scale_factor: float = 1.0
    kp_variance: float = 0.01


@dataclass(frozen=True)
class GeneratorParams:
    block_expansion: int
    max_features: int
    num_down_blocks: int
    num_bottleneck_blocks: int
    estimate_occlusion_map: bool = False
    dense_motion_params: DenseMotionParams | None = None


@dataclass(frozen=True)
class DiscriminatorParams:
    scales: tuple[float, ...] = (1,)
    block_expansion: int = 64
    max_features: int = 512
    num_blocks: int = 4
    sn: bool = False
    use_kp: bool = False
    kp_variance: float = 0.01


@dataclass(frozen=True)
class ModelParams:
    common_params: CommonParams
    kp_detector_params: KPDetectorParams
    generator_params: GeneratorParams
    discriminator_params: DiscriminatorParams = field(default_factory=DiscriminatorParams)


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
class FommConfig:
    """A whole FOMM config. ``name`` is the bundled name or the file stem; ``source`` where it came from."""

    model_params: ModelParams
    dataset_params: DatasetParams = field(default_factory=DatasetParams)
    train_params: TrainParams = field(default_factory=TrainParams)
    reconstruction_params: ReconstructionParams = field(default_factory=ReconstructionParams)
    animate_params: AnimateParams = field(default_factory=AnimateParams)
    visualizer_params: VisualizerParams = field(default_factory=VisualizerParams)
    name: str = field(default="", compare=False)
    source: str = field(default="", compare=False)

    # Convenience views used throughout the code base.
    @property
    def num_kp(self) -> int:
        return self.model_params.common_params.num_kp

    @property
    def num_channels(self) -> int:
        return self.model_params.common_params.num_channels

    @property
    def estimate_jacobian(self) -> bool:
        return self.model_params.common_params.estimate_jacobian

    @property
    def align_corners(self) -> bool:
        return self.model_params.common_params.align_corners

    @property
    def frame_size(self) -> tuple[int, int]:
        """(H, W) of the frames the model works on."""
        shape = self.dataset_params.frame_shape
        return int(shape[0]), int(shape[1])

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-ready dict in upstream's layout (``None`` sections left out)."""
        return _to_plain(self)

    def replace_model(self, **common: Any) -> "FommConfig":
        """A copy with some ``common_params`` changed (e.g. ``align_corners=True``)."""
        mp = self.model_params
        return dataclasses.replace(
            self, model_params=dataclasses.replace(mp, common_params=dataclasses.replace(mp.common_params, **common))
        )


_RENAMED_KEYS = {("dataset_params", "image_shape"): "frame_shape"}
# Keys of FommConfig that are bookkeeping, not YAML.
_INTERNAL_FIELDS = {"name", "source"}


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            if f.name in _INTERNAL_FIELDS:
                continue
            value = getattr(obj, f.name)
            if value is None:
                continue
            out[f.name] = _to_plain(value)
        return out
    if isinstance(obj, tuple):
        return [_to_plain(v) for v in obj]
    return obj


def _type_label(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert it (lists to tuples, dicts to dataclasses)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], where)
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"'{where}' must be a mapping of keys, got {type(value).__name__} {value!r}")
        return _build(tp, value, where)
    if origin is tuple:
        (item_tp, _) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{where}' must be a list, got {value!r}")
        return tuple(_convert(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"'{where}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"'{where}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"'{where}' must be a number, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"'{where}' must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported schema type {_type_label(tp)} at {where}")  # programming error


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in _INTERNAL_FIELDS}
    data = dict(data)
    for (section, old), new in _RENAMED_KEYS.items():
        if where.endswith(section) and old in data:
            if new in data:
                raise ConfigError(f"'{where}' sets both '{old}' and '{new}'; keep only '{new}'")
            data[new] = data.pop(old)
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else f" Valid keys here: {', '.join(fields)}."
            raise ConfigError(f"unknown config key '{path}'.{hint}")
        kwargs[key] = _convert(value, hints[key], path)
    for name, f in fields.items():
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            path = f"{where}.{name}" if where else name
            raise ConfigError(f"missing required config key '{path}'")
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any], *, name: str = "", source: str = "") -> FommConfig:
    """Validate a parsed YAML mapping and return the typed config.

    Raises:
        ConfigError: unknown, missing or mistyped key; the message names the key.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a YAML mapping at top level, got {type(data).__name__}")
    cfg = _build(FommConfig, data, "")
    cfg = dataclasses.replace(cfg, name=name, source=source)
    _check_semantics(cfg)
    return cfg


def _check_semantics(cfg: FommConfig) -> None:
    mp = cfg.model_params
    if mp.common_params.num_kp < 1:
        raise ConfigError("'model_params.common_params.num_kp' must be at least 1")
    for where, scale in (
        ("model_params.kp_detector_params.scale_factor", mp.kp_detector_params.scale_factor),
        (
            "model_params.generator_params.dense_motion_params.scale_factor",
            mp.generator_params.dense_motion_params.scale_factor if mp.generator_params.dense_motion_params else 1,
        ),
    ):
        if not 0 < scale <= 1:
            raise ConfigError(f"'{where}' must be in (0, 1], got {scale}")
    if len(cfg.dataset_params.frame_shape) != 3:
        raise ConfigError(f"'dataset_params.frame_shape' must be [H, W, C], got {list(cfg.dataset_params.frame_shape)}")
    if cfg.train_params.perceptual_backbone not in ("vgg19", "pixel"):
        raise ConfigError(f"'train_params.perceptual_backbone' must be vgg19 or pixel, got "
                          f"{cfg.train_params.perceptual_backbone!r}")
    if mp.common_params.estimate_jacobian is False and mp.kp_detector_params.single_jacobian_map:
        raise ConfigError("'single_jacobian_map' needs 'estimate_jacobian: true'")


# --------------------------------------------------------------------------------------------
# Files and bundled names
# --------------------------------------------------------------------------------------------


def bundled_config_names() -> list[str]:
    """Names of the configs shipped in ``configs/`` (``vox-256``, ``taichi-256``, ``tiny-test``, ...)."""
    root = resources.files("fomm_deploy.configs")
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def bundled_config_path(name: str) -> Path:
    """Path of a bundled config by name; raises ConfigError listing the names if unknown."""
    names = bundled_config_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"no bundled config named '{name}'.{hint} Bundled configs: {', '.join(names)}.")
    return Path(str(resources.files("fomm_deploy.configs").joinpath(f"{name}.yaml")))


def load_config(path: str | Path) -> FommConfig:
    """Read and validate a YAML config file.

    Raises:
        ConfigError: missing or unreadable file, invalid YAML, or a schema error.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    try:
        return config_from_dict(data, name=path.stem, source=str(path))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def resolve_config(spec: str | Path | None, default: str = "vox-256") -> FommConfig:
    """A bundled config name (``vox-256``) or a YAML path; ``None`` gives ``default``."""
    if spec is None:
        spec = default
    text = str(spec)
    if text.endswith((".yaml", ".yml")) or "/" in text or Path(text).is_file():
        return load_config(text)
    cfg = load_config(bundled_config_path(text))
    return dataclasses.replace(cfg, name=text)
