"""The FOMM networks, with upstream attribute names so upstream checkpoints load strictly."""

from .blocks import AntiAliasInterpolation2d, inverse_2x2, kp2gaussian, make_coordinate_grid
from .build import Models, build_discriminator, build_generator, build_kp_detector, build_models
from .dense_motion import DenseMotionNetwork
from .discriminator import MultiScaleDiscriminator
from .generator import OcclusionAwareGenerator
from .keypoint_detector import KPDetector

__all__ = [
    "AntiAliasInterpolation2d", "DenseMotionNetwork", "KPDetector", "Models", "MultiScaleDiscriminator",
    "OcclusionAwareGenerator", "build_discriminator", "build_generator", "build_kp_detector", "build_models",
    "inverse_2x2", "kp2gaussian", "make_coordinate_grid",
]
