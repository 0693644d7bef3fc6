"""``python -m fomm_deploy.training.inspect_checkpoint``: load a checkpoint strictly, summarise it, and run one animation step.

The quickest way to check that a downloaded checkpoint and a config belong together.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np
import torch

from fomm_deploy.runtime.core.cli_common import CONTEXT, user_errors, version_option
from fomm_deploy.runtime.core.config import resolve_config
from fomm_deploy.runtime.core.keypoints import normalize_kp
from fomm_deploy.runtime.core.options import ckpt_option, config_option

from .checkpoint import load_checkpoint, sha256_file
from .model.wrappers import kp_to_numpy, kp_to_torch


def _count(module: torch.nn.Module) -> tuple[int, int]:
    params = sum(p.numel() for p in module.parameters())
    return params, len(module.state_dict())


@click.command(context_settings=CONTEXT)
@ckpt_option(" to load and run one test step with.", required=True)
@config_option(" whose networks the checkpoint holds.", default="vox-256")
@click.option("--align-corners/--no-align-corners", default=None,
              help="Override the config's grid-sampling convention (default: the config's, false unless set).")
@click.option("--seed", default=0, show_default=True, help="Seed of the synthetic test frames.")
@version_option()
@user_errors
def main(ckpt: Path, config: str, align_corners: bool | None, seed: int) -> None:
    """Load CKPT into the networks of CONFIG (strictly), print a summary and time one animation step."""
    cfg = resolve_config(config)
    if align_corners is not None:
        cfg = cfg.replace_model(align_corners=align_corners)
    loaded = load_checkpoint(ckpt, cfg)
    kp_det, gen = loaded.models.kp_detector, loaded.models.generator
    click.echo(f"checkpoint  {ckpt}  (sha256 {sha256_file(ckpt)[:16]}..., epoch {loaded.epoch})")
    click.echo(f"config      {cfg.name or cfg.source}  ({cfg.num_kp} keypoints, frames {cfg.frame_size[0]}x"
               f"{cfg.frame_size[1]}, jacobians {'on' if cfg.estimate_jacobian else 'off'}, "
               f"align_corners {str(cfg.align_corners).lower()})")
    click.echo(f"entries     {', '.join(map(str, loaded.raw))}")
    click.echo(f"{'module':<22}{'parameters':>14}{'state entries':>16}")
    for name, module in (("kp_detector", kp_det), ("generator", gen),
                         ("  dense_motion", gen.dense_motion_network)):
        if module is None:
            continue
        params, entries = _count(module)
        click.echo(f"{name:<22}{params:>14,}{entries:>16}")

    # One relative-motion animation step on smooth synthetic frames (the driving frame is the source shifted).
    h, w = cfg.frame_size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    source = np.stack([0.5 + 0.4 * np.sin(2 * np.pi * (f * xx + g * yy)) for f, g in rng.uniform(1, 3, (3, 2))])
    source = torch.from_numpy(source[None].astype(np.float32))
    driving = torch.roll(source, shifts=(h // 16, w // 16), dims=(2, 3))
    with torch.no_grad():
        t0 = time.perf_counter()
        kp_s = kp_det(source)
        kp_d = kp_det(driving)
        kp_norm = kp_to_torch(normalize_kp(kp_to_numpy(kp_s), kp_to_numpy(kp_d), kp_to_numpy(kp_s),
                                           use_relative_movement=True, use_relative_jacobian=True))
        out = gen(source, kp_norm, kp_s, with_deformed=False)
        dt = time.perf_counter() - t0
    pred = out["prediction"]
    value = kp_d["value"]
    click.echo(f"one step    {dt * 1000:.1f} ms on CPU ({torch.get_num_threads()} threads): keypoints "
               f"{tuple(value.shape)} in [{value.min():.3f}, {value.max():.3f}], prediction {tuple(pred.shape)} "
               f"in [{pred.min():.3f}, {pred.max():.3f}]")


if __name__ == "__main__":
    main()
