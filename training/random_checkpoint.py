"""``python -m fomm_deploy.training.random_checkpoint``: a checkpoint of a config's networks with random weights.

Latency, memory and export time do not depend on the weights, so a random checkpoint measures them at the real
size (vox-256: 60 M parameters) without a download. fomm-bench makes the same one (seed 0) when no --ckpt is given.
"""

from __future__ import annotations

from pathlib import Path

import click

from fomm_deploy.runtime.core.cli_common import CONTEXT, user_errors, version_option
from fomm_deploy.runtime.core.config import FommConfig, resolve_config
from fomm_deploy.runtime.core.fileio import check_output_file
from fomm_deploy.runtime.core.options import config_option


def write_random_checkpoint(cfg: FommConfig, path: str | Path, seed: int = 0) -> Path:
    """Build ``cfg``'s generator and keypoint detector with torch's default initialisation after
    ``torch.manual_seed(seed)``, and save them in upstream's layout (atomically). Returns the path."""
    import torch

    from .checkpoint import save_checkpoint
    from .model import build_models

    torch.manual_seed(seed)
    models = build_models(cfg)
    return save_checkpoint(path, generator=models.generator, kp_detector=models.kp_detector)


@click.command(context_settings=CONTEXT)
@config_option(" whose networks to build.", default="vox-256")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The checkpoint to write (e.g. vox-random.pth.tar).")
@click.option("--seed", default=0, show_default=True, help="Seed of the random weights (the same seed, the same file "
              "contents).")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
@version_option()
@user_errors
def main(config: str, out: Path, seed: int, force: bool) -> None:
    """Write a checkpoint of CONFIG's networks with random weights, in upstream's layout: for measuring export
    time, memory and latency at the real size without downloading anything. What it animates is noise.

    \b
    Example:
      python -m fomm_deploy.training.random_checkpoint --config vox-256 --out vox-random.pth.tar
      fomm-export --ckpt vox-random.pth.tar --config vox-256 --precision fp16 --out exported/vox-random
    """
    cfg = resolve_config(config)
    check_output_file(out, force=force)
    write_random_checkpoint(cfg, out, seed)
    click.echo(f"wrote {out}: {cfg.name or cfg.source} networks (generator, keypoint detector) with random weights "
               f"(seed {seed}), {out.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
