"""The training loop (upstream ``train.py``), resumable and distributable with torchrun.

* Adam(betas 0.5, 0.999) per module and MultiStepLR(gamma 0.1) at ``epoch_milestones``, stepped per epoch.
* Checkpoints in upstream's layout every ``checkpoint_freq`` epochs and at the end, written atomically;
  they also carry the scheduler states, so ``--ckpt`` resumes exactly.
* Every epoch reseeds from (seed, epoch): a resumed run draws the same batches and transforms.
* ``torchrun --nproc_per_node N -m fomm_deploy.training.cli ...``: DistributedDataParallel, SyncBatchNorm on GPUs,
  a distributed sampler, and only rank 0 writes.
"""

from __future__ import annotations

import csv
import os
import re
import shlex
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from fomm_deploy.runtime.core import signals
from fomm_deploy.runtime.core.config import FommConfig
from fomm_deploy.runtime.core.errors import DatasetError, InputError, Interrupted
from fomm_deploy.runtime.core.fileio import atomic_path, write_image
from fomm_deploy.runtime.core.keypoints import normalize_kp
from fomm_deploy.runtime.media.preprocess import to_uint8
from fomm_deploy.runtime.media.video import VideoWriter

from .checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from .config import training_config
from .data import DatasetRepeater, FramesDataset
from .losses import VGG19_WEIGHTS_HELP, DiscriminatorFullModel, GeneratorFullModel, Vgg19, uses_vgg19
from .model import Models, build_discriminator, build_models
from .model.wrappers import kp_to_numpy, kp_to_torch
from .visualize import draw_visualisation


@dataclass
class TrainOptions:
    data: Path
    log_dir: Path
    checkpoint: Path | None = None
    vgg19: Path | None = None
    workers: int | None = None  # data loader workers; None: default_workers()
    epochs: int | None = None  # override train_params.num_epochs
    seed: int = 0
    device: str = "cpu"
    progress: bool = True


def default_workers() -> int:
    """Data loader workers when not given: the cores there are, at most upstream's 6, one left for training."""
    return max(0, min(6, (os.cpu_count() or 1) - 1))


def _dist_info() -> tuple[int, int, int]:
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


def _plain_scheduler_state(scheduler) -> dict:
    # MultiStepLR keeps its milestones in a Counter, which weights_only loading refuses: store a dict.
    state = dict(scheduler.state_dict())
    state["milestones"] = {int(k): int(v) for k, v in state.get("milestones", {}).items()}
    return state


def scheduled_lr(base_lr: float, milestones, epoch: int, gamma: float = 0.1) -> float:
    """The learning rate upstream's MultiStepLR gives while training ``epoch`` (0-based): the base rate decayed
    once for every milestone at or before it. Closed form, so resuming never depends on replaying steps."""
    return base_lr * gamma ** sum(1 for m in milestones if int(m) <= epoch)


def per_process_batch(batch_size: int, world: int) -> int:
    """Upstream's ``batch_size`` is the global batch (DataParallel splits it across GPUs): each of ``world``
    processes takes an equal share."""
    if batch_size % world:
        raise InputError(f"train_params.batch_size {batch_size} is the global batch and must divide evenly "
                         f"across {world} processes; use a multiple of {world} or another process count")
    return batch_size // world


def epoch_plan(n: int, epoch: int, seed: int, rank: int, world: int, batch: int) -> list[tuple[int, int]]:
    """This process's samples for one epoch, in order, as (dataset index, sample seed) pairs.

    A seeded permutation of all ``n`` samples, cut to whole global batches (``batch * world``) and dealt to
    the processes round-robin. Each sample carries its own seed (from seed, epoch and its place in the
    epoch), so its frames and augmentation do not depend on the number of loader workers, and a run that
    resumes in the middle of an epoch draws exactly what the uninterrupted run drew.
    """
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch)).tolist()
    usable = (n // (batch * world)) * batch * world
    base = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
    return [(order[pos], base * 1_000_003 + pos) for pos in range(rank, usable, world)]


def _batch_generator(seed: int, epoch: int, step: int, rank: int) -> torch.Generator:
    """The equivariance transforms' random source for one batch (independent of everything before it)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch, step, rank]).generate_state(1)[0]))


class _PlanSampler(torch.utils.data.Sampler):
    def __init__(self, items: list[tuple[int, int]]) -> None:
        self.items = items

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def train(cfg: FommConfig, opts: TrainOptions, log=print) -> Path | None:
    """Train and return the path of the last checkpoint written (rank 0).

    Resuming (``opts.checkpoint``): a checkpoint's ``epoch`` is the last epoch it completed, for ours and
    for upstream's, so training continues with the next one; a checkpoint written on an interruption
    records the batch it stopped at and continues there, drawing the same samples as an uninterrupted run.
    SIGINT / SIGTERM stop after the current batch, write ``<epoch>-interrupted-checkpoint.pth.tar`` and
    raise :class:`Interrupted` (with the checkpoint); an error inside the training loop also saves one
    before it is raised again. A second signal stops at once (``signals.Stopped``, a KeyboardInterrupt),
    writing nothing.
    """
    return _Training(cfg, opts, log).run()


class _Training:
    """One run of :func:`train`: set up in upstream's order (processes, data, perceptual loss, models,
    optimizers, DDP wrappers), then its epochs, their checkpoints, and the stop on a signal."""

    def __init__(self, cfg: FommConfig, opts: TrainOptions, log) -> None:
        self.cfg, self.opts, self.log = cfg, opts, log
        self.rank, self.world, local_rank = _dist_info()
        self.distributed = self.world > 1
        self.device = torch.device(opts.device if not self.distributed or opts.device == "cpu"
                                   else f"cuda:{local_rank}")
        self.tcfg = training_config(cfg)
        self.tp = tp = self.tcfg.train_params
        self.batch = per_process_batch(tp.batch_size, self.world)
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.epochs = opts.epochs if opts.epochs is not None else tp.num_epochs
        self.use_gan = tp.loss_weights.generator_gan != 0
        self.say = log if self.rank == 0 else (lambda m: None)
        if not cfg.estimate_jacobian and tp.loss_weights.equivariance_jacobian != 0:
            self.say("note: train_params.loss_weights.equivariance_jacobian is "
                     f"{tp.loss_weights.equivariance_jacobian} but the config estimates no jacobians, so that loss "
                     "term is skipped")
        self.dataset = self._dataset()
        vgg = self._vgg()
        models, raw, self.start = self._starting_point()
        self.models = Models(*(m.to(self.device).train() for m in models))
        self.optimizers, self.schedulers = self._optimizers(raw)
        self.generator_full, self.discriminator_full = self._loss_models(vgg)
        self.log_dir = opts.log_dir
        if self.rank == 0:
            (self.log_dir / "train-vis").mkdir(parents=True, exist_ok=True)
        self.workers = default_workers() if opts.workers is None else opts.workers

    # -- set-up ------------------------------------------------------------------------------------------

    def _dataset(self) -> DatasetRepeater:
        params = self.tcfg.dataset_params
        dataset = FramesDataset(self.opts.data, self.cfg.frame_shape, id_sampling=params.id_sampling, is_train=True,
                                random_seed=self.opts.seed, augmentation=params.augmentation_params, log=self.say,
                                near_pairs=params.near_pairs)
        if dataset.skipped:
            self.say(f"{len(dataset.skipped)} video(s) skipped, {len(dataset.videos)} used")
        repeated = DatasetRepeater(dataset, self.tp.num_repeats)
        if len(repeated) < self.tp.batch_size:
            raise DatasetError(f"the dataset gives {len(repeated)} samples per epoch, fewer than one batch "
                               f"(train_params.batch_size {self.tp.batch_size}); add videos or raise num_repeats")
        return repeated

    def _vgg(self) -> Vgg19 | None:
        if not uses_vgg19(self.cfg):
            return None
        if self.opts.vgg19 is None:
            raise InputError("training with the vgg19 perceptual loss: " + VGG19_WEIGHTS_HELP)
        return Vgg19.from_file(self.opts.vgg19).to(self.device)

    def _starting_point(self) -> tuple[Models, dict, _Start]:
        """The models, the checkpoint's contents and where to start: resumed from ``opts.checkpoint``, or new."""
        cfg, opts = self.cfg, self.opts
        if opts.checkpoint is None:
            torch.manual_seed(opts.seed)
            return build_models(cfg, discriminator=True), {}, _Start()
        has_disc = "discriminator" in read_checkpoint(opts.checkpoint)
        loaded = load_checkpoint(opts.checkpoint, cfg, discriminator=has_disc, device="cpu")
        models, raw = loaded.models, loaded.raw
        if not has_disc:  # some published checkpoints carry no discriminator: start a fresh one
            torch.manual_seed(opts.seed)
            models = models._replace(discriminator=build_discriminator(cfg))
            self.say("the checkpoint has no discriminator; a new one is initialised")
        start = _Start(epoch=(loaded.epoch if loaded.epoch is not None else -1) + 1)
        progress = raw.get("fomm_progress")
        if isinstance(progress, dict) and int(progress.get("epoch", -1)) == start.epoch:
            start.skip_batches = int(progress.get("batches_done", 0))
            start.sums = dict(progress.get("loss_sums", {}))
        if start.epoch >= self.epochs:
            raise InputError(f"{opts.checkpoint} has already trained {start.epoch} of {self.epochs} epochs; "
                             "pass --epochs N with a larger N to train further")
        return models, raw, start

    def _optimizers(self, raw: dict) -> tuple[dict, dict]:
        """Adam per module and MultiStepLR, from the checkpoint's states when it has them."""
        tp, models = self.tp, self.models
        optimizers = {
            "optimizer_generator": torch.optim.Adam(models.generator.parameters(), lr=tp.lr_generator,
                                                    betas=(0.5, 0.999)),
            "optimizer_discriminator": torch.optim.Adam(models.discriminator.parameters(), lr=tp.lr_discriminator,
                                                        betas=(0.5, 0.999)),
            "optimizer_kp_detector": torch.optim.Adam(models.kp_detector.parameters(), lr=tp.lr_kp_detector,
                                                      betas=(0.5, 0.999)),
        }
        for name, opt in optimizers.items():
            if name in raw and raw[name].get("state"):
                opt.load_state_dict(raw[name])
        schedulers = {name.replace("optimizer", "scheduler"): torch.optim.lr_scheduler.MultiStepLR(
            opt, list(tp.epoch_milestones), gamma=0.1, last_epoch=-1) for name, opt in optimizers.items()}
        if self.start.epoch:
            _restore_learning_rates(optimizers, schedulers, raw, tp, self.start.epoch, self.say)
        return optimizers, schedulers

    def _loss_models(self, vgg: Vgg19 | None) -> tuple[torch.nn.Module, torch.nn.Module]:
        """The generator's and the discriminator's full models (their losses), under DDP when distributed."""
        models, device = self.models, self.device
        generator_full = GeneratorFullModel(models.kp_detector, models.generator,
                                            models.discriminator if self.use_gan else None, self.cfg, vgg).to(device)
        discriminator_full = DiscriminatorFullModel(models.discriminator, self.cfg).to(device)
        if not self.distributed:
            return generator_full, discriminator_full
        from torch.nn.parallel import DistributedDataParallel as DDP

        if device.type == "cuda":  # synchronised batch norm across GPUs, as upstream's DataParallel + sync BN
            generator_full = torch.nn.SyncBatchNorm.convert_sync_batchnorm(generator_full)
        self.say(f"{self.world} processes: global batch {self.tp.batch_size} = {self.world} x {self.batch}; batch norm "
                 + ("synchronised across GPUs" if device.type == "cuda" else
                    "not synchronised on CPU (gloo): each process normalises its own share of the batch"))
        ids = [device.index] if device.type == "cuda" else None
        generator_full = DDP(generator_full, device_ids=ids, find_unused_parameters=True)
        if self.use_gan:
            discriminator_full = DDP(discriminator_full, device_ids=ids)
        return generator_full, discriminator_full

    # -- the epochs --------------------------------------------------------------------------------------

    def run(self) -> Path | None:
        last_path = None
        # SIGINT / SIGTERM: the first stops after the current batch (a checkpoint is written), the second at once.
        asked = signals.StopRequest(
            lambda name: self.say(f"{name}: stopping after this batch and saving a checkpoint (again to quit at once)"),
            again_stops_at_once=True)
        with asked as stop:
            for epoch in range(self.start.epoch, self.epochs):
                done = self._epoch(epoch, stop)
                if stop.requested and done.count < done.total:
                    if self.rank == 0:
                        last_path = self._save_interrupted(done)
                    break
                last_path = self._end_epoch(done, stop) or last_path
                if stop.requested:
                    break
        return self._finish(stop, last_path)

    def _epoch(self, epoch: int, stop: signals.StopRequest) -> _Epoch:
        """One epoch's batches, from where a resumed run stopped, to its end or to a stop all processes agree
        on. An error saves a checkpoint (one process only) and goes on up; a second signal writes nothing."""
        plan = epoch_plan(len(self.dataset), epoch, self.opts.seed, self.rank, self.world, self.batch)
        skip = self.start.skip_batches if epoch == self.start.epoch else 0
        loader = DataLoader(self.dataset, batch_size=self.batch, sampler=_PlanSampler(plan[skip * self.batch:]),
                            num_workers=self.workers, drop_last=True, worker_init_fn=_quiet_worker)
        done = _Epoch(epoch, total=len(plan) // self.batch, count=skip, sums=dict(self.start.sums) if skip else {})
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{self.epochs}", unit="batch", initial=skip, total=done.total,
                   disable=(self.rank != 0) or not self.opts.progress or None)
        try:
            for x in bar:
                self._step(done, {k: v.to(self.device) for k, v in x.items()})
                if self.rank == 0:
                    bar.set_postfix({k: f"{v / done.count:.3f}" for k, v in done.sums.items()})
                if _stop_agreed(stop, self.distributed, self.device):
                    break
        except KeyboardInterrupt:
            raise  # a second signal: quit at once, write nothing
        except Exception as exc:
            if stop.requested is not None and not self.distributed:
                # The signal reached the loader's workers too (a whole process group), and one died of it before
                # it could ignore signals: the loader's failure is the stop, which run() finishes as one.
                self.log(f"{stop.requested}: the data loader stopped too ({type(exc).__name__})")
                return done
            if self.rank == 0 and not self.distributed:
                path = self._save(epoch, done.count, done.sums)
                self.log(f"error during epoch {epoch + 1}: saved {path.name} (after {done.count} batches); "
                         f"resume with --ckpt {shlex.quote(str(path))}")
            raise
        finally:
            bar.close()
        return done

    def _step(self, done: _Epoch, x: dict) -> None:
        """One batch: the generator and the keypoint detector step, then the discriminator (with a GAN loss)."""
        optimizers = self.optimizers
        losses, generated = self.generator_full(x, generator=_batch_generator(self.opts.seed, done.epoch,
                                                                              done.count, self.rank))
        loss = sum(v.mean() for v in losses.values())
        loss.backward()
        optimizers["optimizer_generator"].step()
        optimizers["optimizer_generator"].zero_grad()
        optimizers["optimizer_kp_detector"].step()
        optimizers["optimizer_kp_detector"].zero_grad()
        if self.use_gan:
            optimizers["optimizer_discriminator"].zero_grad()
            d_losses = self.discriminator_full(x, generated)
            sum(v.mean() for v in d_losses.values()).backward()
            optimizers["optimizer_discriminator"].step()
            optimizers["optimizer_discriminator"].zero_grad()
            losses.update(d_losses)
        for k, v in losses.items():
            done.sums[k] = done.sums.get(k, 0.0) + float(v.mean().detach())
        done.count += 1
        done.x, done.generated = x, generated

    def _end_epoch(self, done: _Epoch, stop: signals.StopRequest) -> Path | None:
        """The schedulers step; rank 0 logs the mean losses, draws the last batch, and writes the epoch's
        checkpoint when one is due (every ``checkpoint_freq`` epochs, the last epoch, a stop): its path."""
        with warnings.catch_warnings():  # the discriminator's optimizer never steps without a GAN loss
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()` before"))
            for sched in self.schedulers.values():
                sched.step()
        if self.rank != 0:
            return None
        epoch = done.epoch
        means = {k: v / max(done.count, 1) for k, v in done.sums.items()}
        line = f"{epoch:08d}) " + "; ".join(f"{k} - {v:.5f}" for k, v in means.items())
        with open(self.log_dir / "log.txt", "a") as f:
            f.write(line + "\n")
        if done.x is not None and done.generated is not None:
            self._visualise(done)
        if (epoch + 1) % self.tp.checkpoint_freq == 0 or epoch + 1 == self.epochs or stop.requested:
            path = self._save(epoch, None, done.sums)
            self.log(f"epoch {epoch + 1}: {'; '.join(f'{k} {v:.4f}' for k, v in means.items())}; saved {path.name}")
            return path
        return None

    def _visualise(self, done: _Epoch) -> None:
        """The epoch's last batch, drawn to ``train-vis/<epoch>-rec.png``."""
        x, generated = done.x, done.generated
        if "deformation" in generated and "deformed" not in generated:  # skipped while training
            with torch.no_grad():
                generated["deformed"] = self.models.generator.deform_input(x["source"], generated["deformation"])
        draw_visualisation(x, generated, self.log_dir / "train-vis" / f"{done.epoch:08d}-rec.png",
                           kp_size=self.tcfg.visualizer_params.kp_size,
                           draw_border=self.tcfg.visualizer_params.draw_border)

    # -- checkpoints and the end -------------------------------------------------------------------------

    def _save(self, epoch: int, batches_done: int | None, sums: dict[str, float]) -> Path:
        """``epoch`` complete (``batches_done`` None), or interrupted after ``batches_done`` of its batches."""
        extra: dict = {name: _plain_scheduler_state(s) for name, s in self.schedulers.items()}
        if batches_done is not None:
            extra["fomm_progress"] = {"epoch": epoch, "batches_done": batches_done, "loss_sums": dict(sums)}
        done = epoch if batches_done is None else epoch - 1
        # An interrupted epoch gets its own name: it never replaces the checkpoint of a completed epoch.
        name = f"{epoch:08d}-{'' if batches_done is None else 'interrupted-'}checkpoint.pth.tar"
        return save_checkpoint(self.log_dir / name, generator=self.models.generator,
                               kp_detector=self.models.kp_detector, discriminator=self.models.discriminator,
                               optimizers=self.optimizers, epoch=done, extra=extra)

    def _save_interrupted(self, done: _Epoch) -> Path:
        path = self._save(done.epoch, done.count, done.sums)
        self.log(f"stopped in epoch {done.epoch + 1} after {done.count} of {done.total} batches; saved "
                 f"{path.name}; resume with --ckpt {shlex.quote(str(path))}")
        return path

    def _finish(self, stop: signals.StopRequest, last_path: Path | None) -> Path | None:
        """Leave the process group; the last checkpoint (the newest there if this run wrote none); on a stop,
        :class:`Interrupted` with it."""
        if self.distributed:
            dist.barrier()
            dist.destroy_process_group()
        if last_path is None and self.rank == 0:
            existing = sorted(self.log_dir.glob("*-checkpoint.pth.tar"))
            last_path = existing[-1] if existing else None
        if stop.requested:
            raise Interrupted(stop.requested, last_path, f"training stopped by {stop.requested}"
                              + (f"; resume with --ckpt {shlex.quote(str(last_path))}" if last_path else ""))
        return last_path


@dataclass
class _Start:
    """Where a run starts: its first epoch and, resuming inside that epoch, the batches done and their loss sums."""

    epoch: int = 0
    skip_batches: int = 0
    sums: dict[str, float] = field(default_factory=dict)


@dataclass
class _Epoch:
    """An epoch under way: ``count`` of its ``total`` batches done, their loss sums, the last batch and output."""

    epoch: int
    total: int
    count: int
    sums: dict[str, float]
    x: dict | None = None
    generated: dict | None = None


def _restore_learning_rates(optimizers: dict, schedulers: dict, raw: dict, tp, start_epoch: int, log) -> None:
    """Put each optimizer at the rate of ``start_epoch``. A checkpoint of ours carries its scheduler states
    (exact); one of upstream's does not, and its optimizer state holds whatever rate upstream's scheduler
    had reached, so the rate is computed from the config's base rate and milestones instead of replaying
    steps (which decayed it twice)."""
    bases = {"optimizer_generator": tp.lr_generator, "optimizer_discriminator": tp.lr_discriminator,
             "optimizer_kp_detector": tp.lr_kp_detector}
    for name, opt in optimizers.items():
        sched_name = name.replace("optimizer", "scheduler")
        sched = schedulers[sched_name]
        if sched_name in raw:
            state = dict(raw[sched_name])
            state["milestones"] = Counter({int(k): int(v) for k, v in state.get("milestones", {}).items()})
            sched.load_state_dict(state)
            continue
        lr = scheduled_lr(bases[name], tp.epoch_milestones, start_epoch)
        for group in opt.param_groups:
            group["initial_lr"] = bases[name]
            group["lr"] = lr
        sched.base_lrs = [bases[name]] * len(opt.param_groups)
        sched.last_epoch = start_epoch
        sched._last_lr = [lr] * len(opt.param_groups)
    if start_epoch and not any(n.replace("optimizer", "scheduler") in raw for n in optimizers):
        rates = ", ".join(f"{n.split('_', 1)[1]} {o.param_groups[0]['lr']:.3g}" for n, o in optimizers.items())
        log(f"upstream checkpoint without scheduler states: learning rates for epoch {start_epoch + 1} "
            f"computed from the config ({rates})")


def _quiet_worker(worker_id: int) -> None:
    """Loader workers leave SIGINT / SIGTERM to the training process, which stops them in order."""
    signals.ignore()


def _stop_agreed(stop: signals.StopRequest, distributed: bool, device: torch.device) -> bool:
    """Whether to stop after this batch; under DDP every process must stop at the same batch."""
    if not distributed:
        return stop.requested is not None
    flag = torch.tensor([1.0 if stop.requested else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item() and stop.requested is None:
        stop.requested = "peer"
    return bool(flag.item())


# -- evaluation --------------------------------------------------------------------------------------------


# What --metrics takes: the reconstruction L1 and, with the eval extra (dlib), upstream's AKD and AED.
METRICS = ("l1", "akd", "aed")
TABLE_COLUMNS = ("video", "frames", "l1", "copy_source_l1", "akd", "aed", "no_face_driving", "no_face_generated",
                 "both_faces")


@torch.no_grad()
def reconstruction(cfg: FommConfig, checkpoint: Path, data: Path, out_dir: Path | None = None, *, progress: bool = True,
                   log=print, metrics: tuple[str, ...] = ("l1",), every_video: bool = False) -> dict:
    """The paper's reconstruction: each test video driven by itself from its first frame (absolute keypoints).

    ``metrics``: ``l1`` (mean absolute difference of prediction and frame, colours in [0, 1]; also the
    copy-the-source-frame baseline, every frame predicted as frame 0, for scale), ``akd`` and ``aed``
    (training/face_metrics.py: dlib's landmarks and embeddings of driving frame t and prediction t, AKD in
    the pixels of the model's frames, ``dataset_params.frame_shape``). ``every_video``: every video of
    ``data`` rather than its test split. With ``out_dir``, each video's strip (frames above, predictions below)
    and ``metrics.csv`` (one row per video, ``TABLE_COLUMNS``; empty where not measured) go there.

    Returns:
        ``{"videos": n, "rows": [per-video dicts], <metric>: mean over the videos where it is a number, ...}``
        with ``l1`` and ``copy_source_l1``, or ``akd`` / ``aed`` with ``no_face_driving``,
        ``no_face_generated`` (means of the per-video shares) and ``akd_videos`` (videos with a face pair).

    Raises:
        InputError: an unknown metric; BackendUnavailableError: akd / aed without dlib (before any work).
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise InputError(f"--metrics {','.join(metrics)}: choose among {', '.join(METRICS)} (comma-separated)")
    faces = "akd" in metrics or "aed" in metrics
    analyzer = None
    if faces:
        from .face_metrics import FaceAnalyzer

        analyzer = FaceAnalyzer(embeddings="aed" in metrics)  # fails here, before any work, without dlib
    models = load_checkpoint(checkpoint, cfg).models
    dataset = FramesDataset(data, cfg.frame_shape, is_train=False, log=log, every_video=every_video)
    rows = []
    bar = tqdm(range(len(dataset)), desc="reconstruction", unit="video", disable=not progress or None)
    for i in bar:
        item = dataset[i]  # decodes the video: once
        frames = item["video"].permute(1, 0, 2, 3)  # (C, T, H, W) -> (T, C, H, W)
        source = frames[:1]
        kp_source = models.kp_detector(source)
        preds = []
        for t in range(frames.shape[0]):
            kp_driving = models.kp_detector(frames[t:t + 1])
            preds.append(models.generator(source, kp_driving, kp_source, with_deformed=False)["prediction"])
        pred = torch.cat(preds)
        row: dict = {"video": item["name"], "frames": int(frames.shape[0])}
        if "l1" in metrics:
            row["l1"] = float((pred - frames).abs().mean())
            row["copy_source_l1"] = float((source.expand_as(frames) - frames).abs().mean())
        if analyzer is not None:
            from .face_metrics import video_face_metrics

            with tqdm(total=2 * len(frames), desc=f"faces in {item['name']}", unit="frame", leave=False,
                      disable=not progress or None) as frames_bar:
                fm = video_face_metrics(analyzer, _counted_rgb(frames, frames_bar), _counted_rgb(pred, frames_bar),
                                        embeddings="aed" in metrics)
            row.update({"no_face_driving": fm.no_face_driving, "no_face_generated": fm.no_face_generated,
                        "both_faces": fm.both})
            if "akd" in metrics:
                row["akd"] = fm.akd
            if "aed" in metrics:
                row["aed"] = fm.aed
        rows.append(row)
        bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k in METRICS})
        if out_dir is not None:
            _write_strip(out_dir / f"{item['name']}.png", frames, pred)
    if out_dir is not None:
        write_metrics_table(out_dir / "metrics.csv", rows)
    summary: dict = {"videos": len(rows), "rows": rows}
    for key in ("l1", "copy_source_l1", "akd", "aed", "no_face_driving", "no_face_generated"):
        values = [r[key] for r in rows if key in r and np.isfinite(r[key])]
        if any(key in r for r in rows):
            summary[key] = float(np.mean(values)) if values else float("nan")
    if analyzer is not None:
        summary["akd_videos"] = sum(1 for r in rows if r["both_faces"] > 0)
    return summary


def _counted_rgb(frames: torch.Tensor, bar):
    """(T, 3, H, W) float frames in [0, 1] as (H, W, 3) uint8 RGB, one at a time, each counted on ``bar``."""
    for f in frames.numpy().transpose(0, 2, 3, 1):
        bar.update()
        yield to_uint8(f)


def write_metrics_table(path: Path, rows: list[dict]) -> Path:
    """One CSV row per video, ``TABLE_COLUMNS`` in order; numbers with 6 significant digits, empty where a
    metric was not measured, ``nan`` where it could not be (no frame with a face in both)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:  # never a half-written table
        writer = csv.DictWriter(f, fieldnames=TABLE_COLUMNS, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
    return path


def _write_strip(path: Path, real: torch.Tensor, pred: torch.Tensor) -> None:
    top = np.concatenate(list(real.numpy().transpose(0, 2, 3, 1)), axis=1)
    bottom = np.concatenate(list(pred.numpy().transpose(0, 2, 3, 1)), axis=1)
    img = np.clip(np.concatenate([top, bottom], axis=0) * 255, 0, 255).astype(np.uint8)
    write_image(path, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


@torch.no_grad()
def animate_pairs(cfg: FommConfig, checkpoint: Path, data: Path, out_dir: Path, *, num_pairs: int | None = None,
                  seed: int = 0, log=print, every_video: bool = False) -> list[Path]:
    """Animate test videos' first frames with other test videos (relative motion); writes MP4s.
    ``every_video``: pairs of every video of ``data``, not only its test split."""
    models = load_checkpoint(checkpoint, cfg).models
    dataset = FramesDataset(data, cfg.frame_shape, is_train=False, log=log, every_video=every_video)
    n = len(dataset)
    tcfg = training_config(cfg)
    count = min(num_pairs or tcfg.animate_params.num_pairs, n * max(1, n - 1))
    pairs = _pairs(dataset, tcfg.dataset_params.pairs_list, count, seed, log)
    norm = tcfg.animate_params.normalization_params
    written = []
    for i, j in pairs:
        source_item, driving_item = dataset[i], dataset[j]  # each decodes a video
        source = source_item["video"][:, 0].unsqueeze(0)
        driving = driving_item["video"].permute(1, 0, 2, 3)
        kp_s = models.kp_detector(source)
        kp_s_np = kp_to_numpy(kp_s)
        kp_init = kp_to_numpy(models.kp_detector(driving[:1]))
        h, w = source.shape[2:]
        path = out_dir / f"{source_item['name']}-by-{driving_item['name']}.mp4"
        with VideoWriter(path, 25, (3 * w, h)) as writer:
            for t in range(driving.shape[0]):
                kp_d = kp_to_numpy(models.kp_detector(driving[t:t + 1]))
                kd = kp_to_torch(normalize_kp(kp_s_np, kp_d, kp_init, adapt_movement_scale=norm.adapt_movement_scale,
                                              use_relative_movement=norm.use_relative_movement,
                                              use_relative_jacobian=norm.use_relative_jacobian))
                pred = models.generator(source, kd, kp_s, with_deformed=False)["prediction"]
                row = torch.cat([source[0], driving[t], pred[0]], dim=2)
                writer.write(to_uint8(row.numpy().transpose(1, 2, 0)))
        written.append(path)
    return written


def _pairs(dataset: FramesDataset, pairs_list: str | None, count: int, seed: int, log) -> list[tuple[int, int]]:
    """(source, driving) indices: from upstream's pairs CSV (distance,source,driving,frame) when it exists,
    otherwise ``count`` seeded random pairs."""
    index = {p.name: i for i, p in enumerate(dataset.videos)}
    if pairs_list and Path(pairs_list).is_file():
        with open(pairs_list, newline="") as f:
            rows = [(r["source"], r["driving"]) for r in csv.DictReader(f)]
        pairs = [(index[a], index[b]) for a, b in rows if a in index and b in index]
        if len(pairs) < len(rows):
            log(f"{len(rows) - len(pairs)} pair(s) of {pairs_list} name videos that are not in the test set")
        return pairs[:count]
    if pairs_list:
        log(f"pairs list {pairs_list} not found: using {count} random pairs")
    rng = np.random.default_rng(seed)
    n = len(dataset.videos)
    return [tuple(int(x) for x in rng.choice(n, size=2, replace=n < 2)) for _ in range(count)]


def elapsed(start: float) -> str:
    s = time.perf_counter() - start
    return f"{int(s // 60)} min {int(s % 60)} s" if s >= 60 else f"{s:.0f} s"

