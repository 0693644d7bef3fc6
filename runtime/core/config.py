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

The runtime owns what deployment needs: ``model_params``, the frame shape, and the bundled configs.
Upstream's training sections (``train_params``, ``dataset_params`` beyond its frame shape,
``reconstruction_params``, ``animate_params``, ``visualizer_params``) are kept as plain data here and
parsed and validated by ``fomm_deploy.training.config``.
"""

from __future__ import annotations

import copy
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


# Upstream's top-level sections that deployment does not read. They are kept as given (plain YAML data) and
# validated by their owner, training (``fomm_deploy.training.config.training_config``).
TRAINING_SECTIONS = ("dataset_params", "train_params", "reconstruction_params", "animate_params",
                     "visualizer_params")
DEFAULT_FRAME_SHAPE = (256, 256, 3)


@dataclass(frozen=True)
class FommConfig:
    """A FOMM config as deployment needs it: the model's parameters and the frame shape.

    ``sections`` holds upstream's other top-level sections (``train_params``, ``dataset_params``, ...) as
    plain data, so that a config round-trips unchanged through an export manifest; training parses them.
    ``name`` is the bundled name or the file stem; ``source`` where it came from.
    """

    model_params: ModelParams
    frame_shape: tuple[int, int, int] = DEFAULT_FRAME_SHAPE
    sections: dict[str, Any] = field(default_factory=dict, hash=False)
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
        return int(self.frame_shape[0]), int(self.frame_shape[1])

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-ready dict in upstream's layout (``None`` sections left out)."""
        out: dict[str, Any] = {}
        for section in TRAINING_SECTIONS:
            if section == "dataset_params":
                out[section] = {**copy.deepcopy(self.sections.get(section) or {}), "frame_shape": list(self.frame_shape)}
            elif self.sections.get(section) is not None:
                out[section] = copy.deepcopy(self.sections[section])
        out["model_params"] = _to_plain(self.model_params)
        return out

    def replace_model(self, **common: Any) -> "FommConfig":
        """A copy with some ``common_params`` changed (e.g. ``align_corners=True``)."""
        mp = self.model_params
        return dataclasses.replace(
            self, model_params=dataclasses.replace(mp, common_params=dataclasses.replace(mp.common_params, **common))
        )




def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
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


def build_section(cls: type, data: dict[str, Any], where: str) -> Any:
    """Check a mapping against the dataclass ``cls`` and build it (nested dataclasses, tuples, scalars).

    Shared by the runtime (``model_params``) and training (its own sections), so every section reports
    errors the same way.

    Raises:
        ConfigError: unknown key (with the closest valid one), missing required key, or a wrong type.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"'{where}' must be a mapping of keys, got {type(data).__name__} {data!r}")
    return _build(cls, data, where)


def frame_shape_of(dataset: dict[str, Any] | None, where: str = "dataset_params") -> tuple[int, int, int]:
    """``dataset_params.frame_shape`` (or its older spelling ``image_shape``) as a 3-tuple of ints."""
    dataset = dataset or {}
    if not isinstance(dataset, dict):
        raise ConfigError(f"'{where}' must be a mapping of keys, got {type(dataset).__name__} {dataset!r}")
    if "image_shape" in dataset and "frame_shape" in dataset:
        raise ConfigError(f"'{where}' sets both 'image_shape' and 'frame_shape'; keep only 'frame_shape'")
    key = "image_shape" if "image_shape" in dataset else "frame_shape"
    shape = _convert(dataset.get(key, list(DEFAULT_FRAME_SHAPE)), tuple[int, ...], f"{where}.{key}")
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"'{where}.frame_shape' must be [H, W, C], got {list(shape)}")
    return shape


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
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
    known = ("model_params", *TRAINING_SECTIONS)
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else f" Valid keys here: {', '.join(known)}."
            raise ConfigError(f"unknown config key '{key}'.{hint}")
    if "model_params" not in data:
        raise ConfigError("missing required config key 'model_params'")
    for section in TRAINING_SECTIONS:
        if data.get(section) is not None and not isinstance(data[section], dict):
            raise ConfigError(f"'{section}' must be a mapping of keys, got {type(data[section]).__name__}")
    model = build_section(ModelParams, data["model_params"], "model_params")
    shape = frame_shape_of(data.get("dataset_params"))
    sections = {k: copy.deepcopy(data[k]) for k in TRAINING_SECTIONS if data.get(k) is not None}
    if "dataset_params" in sections:  # one spelling, one place: FommConfig.frame_shape
        sections["dataset_params"].pop("image_shape", None)
        sections["dataset_params"].pop("frame_shape", None)
    cfg = FommConfig(model_params=model, frame_shape=shape, sections=sections, name=name, source=source)
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
    if mp.common_params.estimate_jacobian is False and mp.kp_detector_params.single_jacobian_map:
        raise ConfigError("'single_jacobian_map' needs 'estimate_jacobian: true'")
    _check_frame_shape(cfg)


MAX_FRAME_SIDE = 4096  # far above any FOMM model trained (upstream's are 256 px); a larger side is a typo


def _check_frame_shape(cfg: FommConfig) -> None:
    """The frame size must pass through the networks: each hourglass halves its input (the frame scaled by its
    ``scale_factor``) once per block and joins the halves back, so that size must divide by 2 that many
    times; the generator's encoder halves the frame ``num_down_blocks`` times."""
    mp = cfg.model_params
    dm = mp.generator_params.dense_motion_params
    stages = [("model_params.kp_detector_params", mp.kp_detector_params.scale_factor, mp.kp_detector_params.num_blocks),
              ("model_params.generator_params", 1.0, mp.generator_params.num_down_blocks)]
    if dm is not None:
        stages.append(("model_params.generator_params.dense_motion_params", dm.scale_factor, dm.num_blocks))

    def fits(side: int) -> bool:
        return all(int(side * scale) >= 1 and int(side * scale) % (2 ** blocks) == 0 for _, scale, blocks in stages)

    shape = list(cfg.frame_shape)
    for axis, side in (("height", shape[0]), ("width", shape[1])):
        if side > MAX_FRAME_SIDE:
            raise ConfigError(f"'dataset_params.frame_shape' {shape}: a {axis} of {side} px is beyond any FOMM model "
                              f"(at most {MAX_FRAME_SIDE}; upstream's models are 256x256); check the config")
        if fits(side):
            continue
        where, scale, blocks = next((w, sc, b) for w, sc, b in stages
                                    if not (int(side * sc) >= 1 and int(side * sc) % (2 ** b) == 0))
        at = f"{int(side * scale)} px ({scale:g} of {side})" if scale != 1 else f"{side} px"
        near = [n for n in (next((n for n in range(side, 0, -1) if fits(n)), None),
                            next((n for n in range(side, MAX_FRAME_SIDE + 1) if fits(n)), None)) if n]
        hint = f"; the nearest that fit: {' or '.join(str(n) for n in dict.fromkeys(near))}" if near else ""
        raise ConfigError(f"'dataset_params.frame_shape' {shape}: a {axis} of {side} px does not fit the networks: "
                          f"{where} halves {at} {blocks} times (its num_blocks), so that must divide by "
                          f"{2 ** blocks}{hint}")


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
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config {path} is not valid YAML{where}: {problem}") from None
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
