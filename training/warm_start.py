"""``python -m fomm_deploy.training.warm_start``: a config's networks, started from another checkpoint where they match.

When a new config changes one part of the model (the generator's down blocks, say), the parts it keeps can
start trained instead of from scratch: every tensor whose name and shape are the same in the checkpoint and in
the new config's networks is copied, every other one keeps the new config's initialisation (seeded). The file
written is in upstream's layout with no optimizer state and no epoch, so ``fomm-train --ckpt`` trains it from
epoch 0 with new optimizers.
"""

from __future__ import annotations

from pathlib import Path

import click

from fomm_deploy.runtime.core.cli_common import CONTEXT, user_errors, version_option
from fomm_deploy.runtime.core.config import FommConfig, resolve_config
from fomm_deploy.runtime.core.errors import InputError
from fomm_deploy.runtime.core.fileio import check_output_file
from fomm_deploy.runtime.core.options import ckpt_option, config_option

PARTS = ("kp_detector", "generator", "discriminator")


def warm_start(ckpt: str | Path, cfg: FommConfig, out: str | Path, seed: int = 0,
               only: tuple[str, ...] = ()) -> dict[str, tuple[int, int]]:
    """Write ``cfg``'s networks to ``out`` (atomically), each tensor copied from ``ckpt`` where the name and
    shape agree, the rest initialised after ``torch.manual_seed(seed)``.

    Args:
        only: copy only tensors under these dotted prefixes (``kp_detector``,
            ``generator.dense_motion_network``, ...); empty: every tensor that matches.

    Returns:
        ``{part: (tensors copied, tensors in the part)}`` for the keypoint detector, the generator and the
        discriminator (batch-norm counters not counted; a checkpoint without a discriminator copies none).
    Raises:
        InputError: not one tensor matches (a checkpoint of another model altogether).
    """
    import torch

    from .checkpoint import _strip_module_prefix, read_checkpoint, save_checkpoint
    from .model import build_models

    raw = read_checkpoint(ckpt)
    torch.manual_seed(seed)
    models = build_models(cfg, discriminator=True)
    counts = {}
    for part in PARTS:
        module = getattr(models, part)
        state = module.state_dict()
        given = _strip_module_prefix(raw.get(part) or {})
        same = {k: v for k, v in given.items()
                if k in state and isinstance(v, torch.Tensor) and v.shape == state[k].shape
                and (not only or any(f"{part}.{k}".startswith(p + ".") for p in only))}
        state.update(same)
        module.load_state_dict(state)
        weights = [k for k in state if not k.endswith("num_batches_tracked")]  # counters, not weights
        counts[part] = (sum(k in same for k in weights), len(weights))
    if not any(copied for copied, _ in counts.values()):
        if only:
            raise InputError(f"no tensor of {ckpt} under {', '.join(only)} has the name and shape of one in "
                             f"{cfg.name or cfg.source}'s networks: check the --only prefixes")
        raise InputError(f"no tensor of {ckpt} has the name and shape of one in {cfg.name or cfg.source}'s "
                         "networks: it is a checkpoint of another model; train from scratch (fomm-train without "
                         "--ckpt)")
    save_checkpoint(out, generator=models.generator, kp_detector=models.kp_detector,
                    discriminator=models.discriminator)
    return counts


@click.command(context_settings=CONTEXT)
@ckpt_option(" to start from: its tensors whose name and shape match the new config's.", required=True)
@config_option(" whose networks to build.", required=True)
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The checkpoint to write (then: fomm-train --config CONFIG --ckpt OUT).")
@click.option("--only", "only", multiple=True, metavar="PREFIX",
              help="Copy only the tensors under this dotted prefix (repeat for several): kp_detector, generator, "
                   "discriminator or a module inside one, e.g. generator.dense_motion_network. Default: every "
                   "tensor that matches.")
@click.option("--seed", default=0, show_default=True, help="Seed of the weights that are not copied.")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
@version_option()
@user_errors
def main(ckpt: Path, config: str, out: Path, only: tuple[str, ...], seed: int, force: bool) -> None:
    """Build CONFIG's networks and copy into them every tensor of --ckpt with the same name and shape; the rest
    start new. For a config that changes one part of a trained model: the parts it keeps start trained.

    \b
    Example (the generator without down blocks, keypoints and dense motion from the second attempt):
      python -m fomm_deploy.training.warm_start --ckpt log/portrait-64-d1-gan/00000029-checkpoint.pth.tar \\
          --config configs/portrait-64-d0-gan.yaml --out log/d0-warm.pth.tar \\
          --only kp_detector --only generator.dense_motion_network --only discriminator
      fomm-train --config configs/portrait-64-d0-gan.yaml --ckpt log/d0-warm.pth.tar --log-dir log/portrait-64-d0-gan
    """
    cfg = resolve_config(config)
    check_output_file(out, inputs={"--ckpt": ckpt}, force=force)
    bad = [p for p in only if p.split(".")[0] not in PARTS]
    if bad:
        raise InputError(f"--only {bad[0]}: a prefix starts with one of {', '.join(PARTS)}")
    counts = warm_start(ckpt, cfg, out, seed, only)
    parts = ", ".join(f"{part} {copied} of {total}" for part, (copied, total) in counts.items())
    click.echo(f"wrote {out}: tensors copied from {ckpt}: {parts}; the rest new (seed {seed})")


if __name__ == "__main__":
    main()
