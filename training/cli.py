"""``fomm-train``: upstream-compatible training, evaluation and animation of test pairs."""

from __future__ import annotations

import datetime as _dt
import math
import os
import re
import shlex
import shutil
import time
from pathlib import Path

import click

from fomm_deploy.runtime.core.cli_common import CONTEXT, user_errors, version_option
from fomm_deploy.runtime.core.config import resolve_config
from fomm_deploy.runtime.core.errors import FommError, InputError, Interrupted
from fomm_deploy.runtime.core.names import parse_device
from fomm_deploy.runtime.core.options import ckpt_option, config_option, device_option
from fomm_deploy.runtime.core.signals import exit_status

from .config import training_config


def default_log_dir(config_name: str, now: _dt.datetime) -> Path:
    """``log/<config>-<YYYYmmdd-HHMMSS>``: one word for a shell (upstream's ``log/<config> <date>`` has a
    space, so a path printed from it breaks when pasted); a config file's stem is reduced to the same
    characters."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", config_name).strip("-.") or "config"
    return Path("log") / f"{name}-{now.strftime('%Y%m%d-%H%M%S')}"


def _remove_if_unused(log_dir: Path) -> None:
    """Remove a log folder this run created if it holds nothing but its config and an empty train-vis/."""
    entries = {p.name for p in log_dir.iterdir()} if log_dir.is_dir() else set()
    vis = log_dir / "train-vis"
    if entries <= {"config.yaml", "train-vis"} and (not vis.exists() or not any(vis.iterdir())):
        shutil.rmtree(log_dir, ignore_errors=True)


# What a training run writes into its log folder (train.py): a folder holding any of these holds a run.
RUN_FILES = ("config.yaml", "log.txt", "train-vis", "*checkpoint.pth.tar")


def check_log_dir(log_dir: Path, ckpt: Path | None, force: bool) -> None:
    """Refuse a ``--log-dir`` that holds another run (its checkpoints, ``config.yaml``, ``log.txt`` or
    ``train-vis/``, which this run would overwrite), unless the run resumes from a checkpoint in it or the
    user says ``--force``; before anything is written.

    Raises:
        InputError: a file, or a folder holding another run.
    """
    if not log_dir.exists():
        return
    if not log_dir.is_dir():
        raise InputError(f"--log-dir {log_dir} is a file; give a folder (a new one, or the one of the run you resume)")
    found = sorted(p.name for p in log_dir.iterdir() if any(p.match(pattern) for pattern in RUN_FILES))
    if not found or force:
        return
    if ckpt is not None and ckpt.resolve().parent == log_dir.resolve():
        return  # resuming that run, in its own folder
    what = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
    raise InputError(f"--log-dir {log_dir} holds another run ({what}), whose files this one would overwrite: "
                     f"choose a new --log-dir, resume that run with --ckpt {shlex.quote(str(log_dir))}/<checkpoint>, "
                     "or pass --force to write into it anyway")


def check_device(device: str) -> str:
    """``--device`` as :func:`parse_device` reads it, and only when this torch can use it; otherwise a one-line
    error."""
    device = parse_device(device)
    if device == "cpu":
        return device
    import torch

    if not torch.cuda.is_available():
        raise InputError(f"--device {device}: this torch ({torch.__version__}) sees no CUDA GPU; use --device cpu, "
                         "or install a CUDA build of torch on a machine with an NVIDIA GPU")
    if ":" in device and int(device.split(":")[1]) >= torch.cuda.device_count():
        raise InputError(f"--device {device}: there are {torch.cuda.device_count()} CUDA device(s)")
    return device


def parse_metrics(text: str) -> tuple[str, ...]:
    """``--metrics l1,akd,aed`` -> ("l1", "akd", "aed"), each once, in the given order; an unknown name is a
    one-line error."""
    from .train import METRICS

    names = tuple(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    bad = [n for n in names if n not in METRICS]
    if bad or not names:
        raise InputError(f"--metrics {text!r}: {'unknown ' + ', '.join(bad) if bad else 'empty'}; "
                         f"choose among {', '.join(METRICS)}, comma-separated")
    return names


def summary_line(result: dict, split: str) -> str:
    """The one line fomm-train --mode reconstruction prints: each metric's mean over the videos."""
    n = int(result["videos"])
    parts = []
    if "l1" in result:
        parts.append(f"reconstruction L1 {result['l1']:.4f} (copy-the-source-frame baseline "
                     f"{result['copy_source_l1']:.4f})")
    faces = [m for m in ("akd", "aed") if m in result]
    for m in faces:
        value = result[m]
        parts.append(f"{m.upper()} " + ("- (no frame had a face in both)" if math.isnan(value)
                                        else f"{value:.3f} px" if m == "akd" else f"{value:.4f}"))
    if faces:
        parts.append(f"no face in {100 * result['no_face_driving']:.1f} % of the driving and "
                     f"{100 * result['no_face_generated']:.1f} % of the generated frames (dlib; "
                     f"{'/'.join(m.upper() for m in faces)} over the frames with a face in both, in "
                     f"{result['akd_videos']} of {n} videos)")
    return "; ".join(parts) + f" over {n} {'test ' if split == 'test' else ''}videos"


@click.command(context_settings=CONTEXT)
@config_option(required=True)
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Dataset folder (default: the config's dataset_params.root_dir).")
@click.option("--mode", type=click.Choice(["train", "reconstruction", "animate"]), default="train", show_default=True,
              help="train; reconstruction: the paper's reconstruction L1 on the test videos (needs --ckpt); "
                   "animate: animate test pairs (dataset_params.pairs_list, else random pairs).")
@click.option("--metrics", default="l1", show_default=True, metavar="LIST",
              help="--mode reconstruction: comma-separated, among l1 (mean absolute difference of each frame and its "
                   "reconstruction, colours in [0, 1]), akd (average distance in pixels of the model's frames "
                   "between dlib's 68 landmarks of the driving frame and of its reconstruction) and aed (average "
                   "distance of dlib's 128-d face embeddings of the two); akd and aed need "
                   "pip install 'fomm-deploy[eval]' and also report the share of frames where dlib found no face. "
                   "Written per video to <log-dir>/reconstruction/metrics.csv. The paper's VoxCeleb AKD 1.294 / "
                   "AED 0.140 used another landmark detector and OpenFace embeddings: compare models with these "
                   "numbers, not these numbers with the paper's.")
@click.option("--split", type=click.Choice(["test", "all"]), default="test", show_default=True,
              help="Which videos --mode reconstruction / animate use: test (test/, or the seeded 20 % of a folder "
                   "without train/) or all (every video in --data, or in its train/ and test/): any folder of "
                   "videos.")
@click.option("--log-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where checkpoints, log.txt and train-vis/ go (default: log/<config>-<YYYYmmdd-HHMMSS>, or "
                   "the checkpoint's folder when resuming).")
@ckpt_option(" to resume training from, or the model to evaluate. Training continues with the epoch after the "
             "checkpoint's 'epoch' (the last one it completed); a checkpoint written on Ctrl-C continues at the "
             "batch it stopped at. An upstream checkpoint resumes at the learning rate its config's milestones "
             "give for that epoch.", alias="--checkpoint")
@click.option("--vgg19", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="torchvision-format VGG19 weights for the perceptual loss (vgg19-dcbb9e9d.pth).")
@click.option("--epochs", type=click.IntRange(1), default=None, help="Override train_params.num_epochs.")
@click.option("--workers", type=click.IntRange(0), default=None,
              help="Data loader worker processes (default: the cores there are minus one, at most 6 as upstream). "
                   "Results do not depend on it: every sample is seeded on its own.")
@click.option("--seed", default=0, show_default=True,
              help="Seed of the initial weights, the sample order and the augmentations (resume uses the same).")
@device_option("cpu", help_suffix="to train on (under torchrun each process takes cuda:LOCAL_RANK).")
@click.option("--force", is_flag=True,
              help="Train into a --log-dir that holds another run (its checkpoints, config.yaml, log.txt and "
                   "train-vis/ images of the same names are overwritten). Not needed to resume a run in its own "
                   "folder (--ckpt in it).")
@version_option()
@user_errors
def main(config: str, data: Path | None, mode: str, metrics: str, split: str, log_dir: Path | None, ckpt: Path | None,
         vgg19: Path | None, epochs: int | None, workers: int | None, seed: int, device: str, force: bool) -> None:
    """Train FOMM on a video dataset and write upstream-format checkpoints, or evaluate a checkpoint.

    \b
    Examples:
      fomm-train --config vox-256 --data data/vox --vgg19 vgg19-dcbb9e9d.pth
      torchrun --nproc_per_node 4 -m fomm_deploy.training.cli --config vox-256 --data data/vox --vgg19 vgg19.pth --device cuda
      fomm-train --config vox-256 --data data/vox --mode reconstruction --ckpt log/vox/00000099-checkpoint.pth.tar
      fomm-train --config vox-256 --data clips/ --split all --mode reconstruction --metrics l1,akd,aed --ckpt vox-cpk.pth.tar
    """
    from .train import TrainOptions, animate_pairs, elapsed, reconstruction, train

    chosen = parse_metrics(metrics)
    if mode != "reconstruction" and metrics != "l1":
        raise InputError(f"--metrics is for --mode reconstruction (this is --mode {mode})")
    if split != "test" and mode == "train":
        raise InputError("--split is for --mode reconstruction and animate; training uses train/ (or the seeded 80 %)")
    cfg = resolve_config(config)
    device = check_device(device)
    data = data or Path(training_config(cfg).dataset_params.root_dir)
    if mode != "train" and ckpt is None:
        raise InputError(f"--mode {mode} needs --ckpt PATH (the checkpoint to evaluate)")
    if log_dir is None:
        if ckpt is not None:
            log_dir = ckpt.parent
        else:
            log_dir = default_log_dir(cfg.name, _dt.datetime.now())
    start = time.perf_counter()
    if mode == "train":
        created = not log_dir.exists()
        if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 writes
            import yaml

            check_log_dir(log_dir, ckpt, force)
            log_dir.mkdir(parents=True, exist_ok=True)
            (log_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        try:
            last = train(cfg, TrainOptions(data=data, log_dir=log_dir, checkpoint=ckpt, vgg19=vgg19,
                                           workers=workers, epochs=epochs, seed=seed, device=device),
                         log=lambda m: click.echo(m, err=True))
        except Interrupted as stopped:
            click.echo(f"{stopped} ({elapsed(start)})", err=True)
            raise SystemExit(exit_status(stopped.signal_name)) from None
        except FommError:
            if created:
                _remove_if_unused(log_dir)  # a run that failed before training leaves no folder behind
            raise
        except KeyboardInterrupt as exc:
            click.echo(f"stopped at once by {exc or 'SIGINT'}; nothing more was saved", err=True)
            raise SystemExit(exit_status(str(exc) or "SIGINT")) from None
        if last is not None:
            click.echo(f"training done in {elapsed(start)}; last checkpoint {shlex.quote(str(last))}")
    elif mode == "reconstruction":
        out = log_dir / "reconstruction"
        result = reconstruction(cfg, ckpt, data, out, log=lambda m: click.echo(m, err=True), metrics=chosen,
                                every_video=split == "all")
        click.echo(summary_line(result, split) + f"; strips and metrics.csv in {out}")
    else:
        out = log_dir / "animation"
        paths = animate_pairs(cfg, ckpt, data, out, log=lambda m: click.echo(m, err=True), every_video=split == "all")
        click.echo(f"wrote {len(paths)} animations to {out}")


if __name__ == "__main__":
    main()
