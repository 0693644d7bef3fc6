"""Training losses (paper Sec. 3.5 / upstream ``modules/model.py``): perceptual pyramid, equivariance
(value and jacobian) under a random affine + thin-plate-spline transform, LSGAN and feature matching."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fomm_deploy.runtime.core.config import FommConfig
from fomm_deploy.runtime.core.errors import InputError

from .model.blocks import AntiAliasInterpolation2d, inverse_2x2, make_coordinate_grid
from .config import training_config

VGG19_WEIGHTS_HELP = (
    "the perceptual loss needs ImageNet VGG19 weights in torchvision's format (vgg19-dcbb9e9d.pth, from "
    "torchvision's model zoo: torchvision.models.vgg19(weights='IMAGENET1K_V1')); pass the file with "
    "--vgg19 PATH, or set train_params.perceptual_backbone: pixel for a weight-free pixel loss")


def uses_vgg19(cfg: FommConfig) -> bool:
    """Whether training ``cfg`` needs the VGG19 weights (perceptual loss on, vgg19 backbone)."""
    tp = training_config(cfg).train_params
    return tp.perceptual_backbone == "vgg19" and sum(tp.loss_weights.perceptual) != 0


class ImagePyramide(nn.Module):
    """The image at each scale (AntiAlias downsampling); keys ``prediction_<scale>`` as upstream."""

    def __init__(self, scales, num_channels: int) -> None:
        super().__init__()
        self.downs = nn.ModuleDict({str(s).replace(".", "-"): AntiAliasInterpolation2d(num_channels, s) for s in scales})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"prediction_" + k.replace("-", "."): down(x) for k, down in self.downs.items()}


# Layers of torchvision's VGG19 ``features`` up to relu5_1 (index 29); conv indices match its state dict.
_VGG19_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512]
_VGG19_TAPS = (1, 6, 11, 20, 29)  # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1


class Vgg19(nn.Module):
    """VGG19 features to relu5_1 with ImageNet normalisation; frozen. Loads torchvision-format weights."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for v in _VGG19_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=False)]
                c = v
        self.features = nn.Sequential(*layers[: _VGG19_TAPS[-1] + 1])
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.requires_grad_(False)

    @classmethod
    def from_file(cls, path: str | Path) -> "Vgg19":
        path = Path(path)
        if not path.is_file():
            raise InputError(f"VGG19 weights not found: {path}; " + VGG19_WEIGHTS_HELP)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise InputError(f"cannot read VGG19 weights {path} ({type(exc).__name__}); " + VGG19_WEIGHTS_HELP) from None
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        model = cls()
        wanted = {k: v for k, v in state.items() if k.startswith("features.") and int(k.split(".")[1]) <= _VGG19_TAPS[-1]}
        missing = [k for k in model.state_dict() if k.startswith("features.") and k not in wanted]
        if missing:
            raise InputError(f"{path} is not a torchvision VGG19 state dict (missing {missing[:3]}); " + VGG19_WEIGHTS_HELP)
        model.load_state_dict(wanted, strict=False)
        return model.eval()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = (x - self.mean) / self.std
        taps = []
        for i, layer in enumerate(self.features):
            out = layer(out)
            if i in _VGG19_TAPS:
                taps.append(out)
        return taps


class Transform:
    """Random affine + thin-plate-spline warp for the equivariance constraint (paper Sec. 3.5).

    T(z) = A z + b + sum_k w_k r_k^2 log(r_k + 1e-6), with r_k = |z - c_k|_1 over a grid of control points c_k.
    """

    def __init__(self, bs: int, sigma_affine: float, sigma_tps: float, points_tps: int, *,
                 generator: torch.Generator | None = None, device=None) -> None:
        noise = torch.randn(bs, 2, 3, generator=generator) * sigma_affine
        self.theta = (noise + torch.eye(2, 3).view(1, 2, 3)).to(device)
        self.bs = bs
        self.tps = sigma_tps != 0 and points_tps != 0
        if self.tps:
            self.control_points = make_coordinate_grid(points_tps, points_tps).view(1, -1, 2).to(device)
            self.control_params = (torch.randn(bs, 1, points_tps**2, generator=generator) * sigma_tps).to(device)

    def warp_coordinates(self, coordinates: torch.Tensor) -> torch.Tensor:
        """coordinates (B, N, 2) -> transformed (B, N, 2)."""
        theta = self.theta.to(coordinates.dtype).unsqueeze(1)  # (B, 1, 2, 3)
        out = (theta[..., :2] @ coordinates.unsqueeze(-1)).squeeze(-1) + theta[..., 2]
        if self.tps:
            cp = self.control_points.to(coordinates.dtype)
            params = self.control_params.to(coordinates.dtype)
            r = (coordinates.unsqueeze(2) - cp.unsqueeze(1)).abs().sum(-1)  # (B, N, P), L1 distance
            basis = r**2 * torch.log(r + 1e-6)
            out = out + (basis * params).sum(dim=2, keepdim=True)
        return out

    def transform_frame(self, frame: torch.Tensor, align_corners: bool) -> torch.Tensor:
        b, _, h, w = frame.shape
        grid = make_coordinate_grid(h, w, frame.dtype, frame.device).view(1, h * w, 2).expand(b, -1, -1)
        grid = self.warp_coordinates(grid).view(b, h, w, 2)
        return F.grid_sample(frame, grid, mode="bilinear", padding_mode="reflection", align_corners=align_corners)

    def jacobian(self, coordinates: torch.Tensor) -> torch.Tensor:
        """d T / d z at the coordinates (B, N, 2) -> (B, N, 2, 2), by autograd (differentiable)."""
        if not coordinates.requires_grad:
            coordinates = coordinates.detach().requires_grad_(True)
        new = self.warp_coordinates(coordinates)
        gx = torch.autograd.grad(new[..., 0].sum(), coordinates, create_graph=True)[0]
        gy = torch.autograd.grad(new[..., 1].sum(), coordinates, create_graph=True)[0]
        return torch.stack([gx, gy], dim=-2)


def detach_kp(kp: dict) -> dict:
    return {k: v.detach() for k, v in kp.items()}


class GeneratorFullModel(nn.Module):
    """Keypoints + generator + every generator-side loss, in one module (so DDP wraps one forward)."""

    def __init__(self, kp_extractor: nn.Module, generator: nn.Module, discriminator: nn.Module | None,
                 cfg: FommConfig, vgg: Vgg19 | None) -> None:
        super().__init__()
        tp = training_config(cfg).train_params
        self.kp_extractor, self.generator, self.discriminator = kp_extractor, generator, discriminator
        self.scales = tuple(tp.scales)
        self.disc_scales = tuple(cfg.model_params.discriminator_params.scales)
        self.pyramid = ImagePyramide(self.scales, cfg.num_channels)
        self.weights = tp.loss_weights
        self.transform_params = tp.transform_params
        self.backbone = tp.perceptual_backbone
        self.align_corners = cfg.align_corners
        if uses_vgg19(cfg) and vgg is None:
            raise InputError(VGG19_WEIGHTS_HELP)
        self.vgg = vgg

    def forward(self, x: dict[str, torch.Tensor], generator: torch.Generator | None = None):
        kp_source = self.kp_extractor(x["source"])
        kp_driving = self.kp_extractor(x["driving"])
        generated = self.generator(x["source"], kp_source=kp_source, kp_driving=kp_driving, with_deformed=False)
        generated.update({"kp_source": kp_source, "kp_driving": kp_driving})
        losses: dict[str, torch.Tensor] = {}
        pyramid_real = self.pyramid(x["driving"])
        pyramid_fake = self.pyramid(generated["prediction"])
        w = self.weights
        if sum(w.perceptual) != 0:
            total = 0
            for scale in self.scales:
                key = f"prediction_{scale}"
                if self.backbone == "vgg19":
                    fake, real = self.vgg(pyramid_fake[key]), self.vgg(pyramid_real[key])
                    for i, weight in enumerate(w.perceptual):
                        total = total + weight * (fake[i] - real[i].detach()).abs().mean()
                else:
                    total = total + w.perceptual[0] * (pyramid_fake[key] - pyramid_real[key].detach()).abs().mean()
            losses["perceptual"] = total
        if w.generator_gan != 0 and self.discriminator is not None:
            disc_fake = self.discriminator(pyramid_fake, kp=detach_kp(kp_driving))
            disc_real = self.discriminator(pyramid_real, kp=detach_kp(kp_driving))
            gan = 0
            for scale in self.disc_scales:
                gan = gan + w.generator_gan * ((1 - disc_fake[f"prediction_map_{scale}"]) ** 2).mean()
            losses["gen_gan"] = gan
            if sum(w.feature_matching) != 0:
                fm = 0
                for scale in self.disc_scales:
                    for i, (a, b) in enumerate(zip(disc_real[f"feature_maps_{scale}"], disc_fake[f"feature_maps_{scale}"])):
                        if w.feature_matching[i] != 0:
                            fm = fm + w.feature_matching[i] * (a - b).abs().mean()
                losses["feature_matching"] = fm
        if w.equivariance_value + w.equivariance_jacobian != 0:
            tp = self.transform_params
            t = Transform(x["driving"].shape[0], tp.sigma_affine, tp.sigma_tps, tp.points_tps, generator=generator,
                          device=x["driving"].device)
            transformed_frame = t.transform_frame(x["driving"], self.align_corners)
            kp_t = self.kp_extractor(transformed_frame)
            generated["transformed_frame"], generated["transformed_kp"] = transformed_frame, kp_t
            if w.equivariance_value != 0:
                losses["equivariance_value"] = w.equivariance_value * (
                    kp_driving["value"] - t.warp_coordinates(kp_t["value"])).abs().mean()
            if w.equivariance_jacobian != 0 and "jacobian" in kp_t:
                jac_t = t.jacobian(kp_t["value"]) @ kp_t["jacobian"]
                value = inverse_2x2(kp_driving["jacobian"]) @ jac_t
                eye = torch.eye(2, device=value.device, dtype=value.dtype).view(1, 1, 2, 2)
                losses["equivariance_jacobian"] = w.equivariance_jacobian * (eye - value).abs().mean()
        return losses, generated


class DiscriminatorFullModel(nn.Module):
    """The discriminator's LSGAN loss on real driving frames and detached predictions."""

    def __init__(self, discriminator: nn.Module, cfg: FommConfig) -> None:
        super().__init__()
        self.discriminator = discriminator
        tp = training_config(cfg).train_params
        self.scales = tuple(cfg.model_params.discriminator_params.scales)
        self.pyramid = ImagePyramide(self.scales, cfg.num_channels)
        self.weight = tp.loss_weights.discriminator_gan

    def forward(self, x: dict[str, torch.Tensor], generated: dict) -> dict[str, torch.Tensor]:
        real = self.pyramid(x["driving"])
        fake = self.pyramid(generated["prediction"].detach())
        kp = detach_kp(generated["kp_driving"])
        d_fake, d_real = self.discriminator(fake, kp=kp), self.discriminator(real, kp=kp)
        loss = 0
        for scale in self.scales:
            key = f"prediction_map_{scale}"
            loss = loss + self.weight * ((1 - d_real[key]) ** 2 + d_fake[key] ** 2).mean()
        return {"disc_gan": loss}
