"""Typed config -> modules. The one place that maps config fields to constructor arguments."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch

from fomm_deploy.runtime.core.config import FommConfig

from .discriminator import MultiScaleDiscriminator
from .generator import OcclusionAwareGenerator
from .keypoint_detector import KPDetector


class Models(NamedTuple):
    kp_detector: KPDetector
    generator: OcclusionAwareGenerator
    discriminator: MultiScaleDiscriminator | None


def build_kp_detector(cfg: FommConfig) -> KPDetector:
    common = cfg.model_params.common_params
    kp = cfg.model_params.kp_detector_params
    return KPDetector(
        block_expansion=kp.block_expansion, num_kp=common.num_kp, num_channels=common.num_channels,
        max_features=kp.max_features, num_blocks=kp.num_blocks, temperature=kp.temperature,
        estimate_jacobian=common.estimate_jacobian, scale_factor=kp.scale_factor,
        single_jacobian_map=kp.single_jacobian_map, pad=kp.pad,
    )


def build_generator(cfg: FommConfig) -> OcclusionAwareGenerator:
    common = cfg.model_params.common_params
    g = cfg.model_params.generator_params
    dm = dataclasses.asdict(g.dense_motion_params) if g.dense_motion_params is not None else None
    return OcclusionAwareGenerator(
        num_channels=common.num_channels, num_kp=common.num_kp, block_expansion=g.block_expansion,
        max_features=g.max_features, num_down_blocks=g.num_down_blocks,
        num_bottleneck_blocks=g.num_bottleneck_blocks, estimate_occlusion_map=g.estimate_occlusion_map,
        dense_motion_params=dm, estimate_jacobian=common.estimate_jacobian, align_corners=common.align_corners,
    )


def build_discriminator(cfg: FommConfig) -> MultiScaleDiscriminator:
    common = cfg.model_params.common_params
    d = cfg.model_params.discriminator_params
    return MultiScaleDiscriminator(
        scales=d.scales, num_channels=common.num_channels, block_expansion=d.block_expansion,
        num_blocks=d.num_blocks, max_features=d.max_features, sn=d.sn, use_kp=d.use_kp,
        num_kp=common.num_kp, kp_variance=d.kp_variance,
    )


def build_models(cfg: FommConfig, *, discriminator: bool = False, device: str | torch.device = "cpu") -> Models:
    """Build the networks of a config, in eval mode.

    ``device="meta"`` builds them without allocating memory (shapes only), which is how checkpoints are
    matched against every bundled config cheaply.
    """
    with torch.device(device):
        kp = build_kp_detector(cfg).eval()
        gen = build_generator(cfg).eval()
        disc = build_discriminator(cfg).eval() if discriminator else None
    return Models(kp, gen, disc)
