"""Flat wrappers: named tensor inputs and outputs (the graph contract) instead of upstream's dicts.

Used by the ONNX export and by the runtime's torch reference backend, so both run the same code.
"""

from __future__ import annotations

import torch
from torch import nn

from fomm_deploy.runtime.core.keypoints import KP, relative_motion

from .generator import OcclusionAwareGenerator
from .keypoint_detector import KPDetector


def kp_to_numpy(kp: dict[str, torch.Tensor]) -> KP:
    """The model's keypoint dict -> the runtime's numpy ``KP`` (for ``normalize_kp``)."""
    return KP(kp["value"].detach().cpu().numpy(), kp["jacobian"].detach().cpu().numpy() if "jacobian" in kp else None)


def kp_to_torch(kp: KP) -> dict[str, torch.Tensor]:
    """A numpy ``KP`` -> the keypoint dict the model takes."""
    out = {"value": torch.from_numpy(kp.value)}
    if kp.jacobian is not None:
        out["jacobian"] = torch.from_numpy(kp.jacobian)
    return out


class KPDetectorForExport(nn.Module):
    """image (B, C, H, W) in [0, 1] -> kp_value (B, K, 2) [, kp_jacobian (B, K, 2, 2)]."""

    def __init__(self, kp_detector: KPDetector) -> None:
        super().__init__()
        self.kp_detector = kp_detector

    def forward(self, image: torch.Tensor):
        out = self.kp_detector(image)
        if "jacobian" in out:
            return out["value"], out["jacobian"]
        return out["value"]


def _kp_dicts(kp: tuple[torch.Tensor, ...], with_jacobian: bool) -> tuple[dict, dict]:
    """Flat keypoint inputs (value, jacobian per side, or values only) -> the model's kp_source, kp_driving."""
    if with_jacobian:
        ksv, ksj, kdv, kdj = kp
        return {"value": ksv, "jacobian": ksj}, {"value": kdv, "jacobian": kdj}
    ksv, kdv = kp
    return {"value": ksv}, {"value": kdv}


class GeneratorForExport(nn.Module):
    """source, kp_source_*, kp_driving_* -> prediction (B, C, H, W) in [0, 1].

    Inputs are ``(source, kp_source_value, kp_source_jacobian, kp_driving_value, kp_driving_jacobian)``
    with jacobians, or ``(source, kp_source_value, kp_driving_value)`` without.
    """

    def __init__(self, generator: OcclusionAwareGenerator, with_jacobian: bool) -> None:
        super().__init__()
        self.generator = generator
        self.with_jacobian = with_jacobian

    def forward(self, source: torch.Tensor, *kp: torch.Tensor) -> torch.Tensor:
        kp_source, kp_driving = _kp_dicts(kp, self.with_jacobian)
        return self.generator(source, kp_driving, kp_source, with_deformed=False)["prediction"]


class SourceEncoderForExport(nn.Module):
    """source (B, C, H, W) -> source_features, source_down: everything of the generator that depends only on
    the source."""

    def __init__(self, generator: OcclusionAwareGenerator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, source: torch.Tensor):
        g = self.generator
        return g.encode_source(source), g.dense_motion_network.downsample(source)


class GeneratorFrameForExport(nn.Module):
    """source_features, source_down, kp_source_*, kp_driving_* -> prediction: the per-frame generator."""

    def __init__(self, generator: OcclusionAwareGenerator, with_jacobian: bool) -> None:
        super().__init__()
        self.generator = generator
        self.with_jacobian = with_jacobian

    def forward(self, source_features: torch.Tensor, source_down: torch.Tensor, *kp: torch.Tensor) -> torch.Tensor:
        kp_source, kp_driving = _kp_dicts(kp, self.with_jacobian)
        return self.generator.animate_encoded(source_features, source_down, kp_driving, kp_source)["prediction"]


class FrameStepForExport(nn.Module):
    """driving (B, H, W, C) uint8 + the session's constants -> frame (B, H, W, C) uint8: one whole frame.

    The keypoints of the driving frame, their relative normalisation (``runtime.core.keypoints.relative_motion``,
    the same lines the host runs, here on tensors) and the per-frame generator, then the conversion to 8-bit
    pixels (``runtime.core.pixels.to_uint8``'s rounding). Inputs follow ``contract.graph_specs()["frame_step"]``.
    The sub-modules keep the names ``kp_detector`` and ``generator``, so the precision policy finds its parts by
    node name (``precision.COMPOSITE_PARTS``).
    """

    def __init__(self, kp_detector: KPDetector, generator: OcclusionAwareGenerator, with_jacobian: bool) -> None:
        super().__init__()
        self.kp_detector = kp_detector
        self.generator = generator
        self.with_jacobian = with_jacobian

    def forward(self, driving: torch.Tensor, source_features: torch.Tensor, source_down: torch.Tensor,
                *session: torch.Tensor) -> torch.Tensor:
        if self.with_jacobian:
            source_value, source_jacobian, initial_value, initial_jacobian, scale, relative = session
        else:
            (source_value, initial_value, scale, relative), source_jacobian, initial_jacobian = session, None, None
        image = driving.permute(0, 3, 1, 2).float() / 255.0
        kp = self.kp_detector(image)
        value, jacobian = relative_motion(kp["value"], kp.get("jacobian"), initial_value, initial_jacobian,
                                          source_value, source_jacobian, scale[:, :, None], stack=torch.stack)
        use = relative[:, :, None] > 0.5  # absolute rows keep the detected keypoints, bit for bit
        kp_driving = {"value": torch.where(use, value, kp["value"])}
        kp_source = {"value": source_value}
        if self.with_jacobian:
            kp_driving["jacobian"] = torch.where(use[..., None], jacobian, kp["jacobian"])
            kp_source["jacobian"] = source_jacobian
        prediction = self.generator.animate_encoded(source_features, source_down, kp_driving, kp_source)["prediction"]
        return (prediction * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def flat_module(graph: str, models, with_jacobian: bool) -> nn.Module:
    """The flat wrapper of one graph of the contract, in eval mode."""
    if graph == "kp_detector":
        return KPDetectorForExport(models.kp_detector).eval()
    if graph == "generator":
        return GeneratorForExport(models.generator, with_jacobian).eval()
    if graph == "source_encoder":
        return SourceEncoderForExport(models.generator).eval()
    if graph == "generator_frame":
        return GeneratorFrameForExport(models.generator, with_jacobian).eval()
    if graph == "frame_step":
        return FrameStepForExport(models.kp_detector, models.generator, with_jacobian).eval()
    raise ValueError(f"no graph named '{graph}'")
