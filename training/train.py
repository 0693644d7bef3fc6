"""The training loop (upstream ``train.py``), resumable and distributable with torchrun.

* Adam(betas 0.5, 0.999) per module and MultiStepLR(gamma 0.1) at ``epoch_milestones``, stepped per epoch.
* Checkpoints in upstream's layout every ``checkpoint_freq`` epochs and at the end, written atomically;
  they also carry the scheduler states, so ``--checkpoint`` resumes exactly.
* Every epoch reseeds from (seed, epoch): a resumed run draws the same batches and transforms.
* ``torchrun --nproc_per_node N -m fomm_deploy.training.cli ...``: DistributedDataParallel, SyncBatchNorm on GPUs,
  a distributed sampler, and only rank 0 writes.
"""

from __future__ import annotations

import os
import re
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from fomm_deploy.runtime.config import FommConfig
from fomm_deploy.runtime.errors import DatasetError, InputError
from fomm_deploy.runtime.fileio import write_image

from .config import training_config
from .checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from .data import DatasetRepeater, FramesDataset
from .losses import VGG19_WEIGHTS_HELP, DiscriminatorFullModel, GeneratorFullModel, Vgg19, uses_vgg19
from .model import build_discriminator, build_models
from .model.wrappers import kp_to_numpy, kp_to_torch


@dataclass
class TrainOptions:
    data: Path
    log_dir: Path
    checkpoint: Path | None = None
    vgg19: Path | None = None
    workers: int = 0
    epochs: int | None = None  # override train_params.num_epochs
    seed: int = 0
    device: str = "cpu"
    progress: bool = True


def _dist_info() -> tuple[int, int, int]:
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


def _plain_scheduler_state(scheduler) -> dict:
    # MultiStepLR keeps its milestones in a Counter, which weights_only loading refuses: store a dict.
    state = dict(scheduler.state_dict())
    state["milestones"] = {int(k): int(v) for k, v in state.get("milestones", {}).items()}
    return state


def draw_visualisation(batch: dict, generated: dict, path: Path, kp_size: int = 3, max_rows: int = 4) -> Path:
    """Rows: source + kp | driving + kp | prediction + kp | occlusion map (upstream's train-vis, condensed)."""
    import cv2

    def rgb(t: torch.Tensor) -> np.ndarray:
        return np.clip(t.detach().cpu().numpy().transpose(1, 2, 0) * 255, 0, 255).astype(np.uint8).copy()

    def with_kp(img: np.ndarray, kp: torch.Tensor) -> np.ndarray:
        h, w = img.shape[:2]
        pts = kp.detach().cpu().numpy()
        colours = cv2.applyColorMap(np.linspace(0, 255, len(pts)).astype(np.uint8)[:, None], cv2.COLORMAP_HSV)[:, 0]
        for (x, y), c in zip(pts, colours):
            cv2.circle(img, (int((x + 1) / 2 * (w - 1)), int((y + 1) / 2 * (h - 1))), kp_size,
                       tuple(int(v) for v in c[::-1]), -1)
        return img

    rows = []
    n = min(max_rows, batch["source"].shape[0])
    for i in range(n):
        h, w = batch["source"].shape[2:]
        panels = [with_kp(rgb(batch["source"][i]), generated["kp_source"]["value"][i]),
                  with_kp(rgb(batch["driving"][i]), generated["kp_driving"]["value"][i]),
                  with_kp(rgb(generated["prediction"][i]), generated["kp_driving"]["value"][i])]
        if "occlusion_map" in generated:
            occ = generated["occlusion_map"][i, 0].detach().cpu().numpy()
            occ = cv2.resize((occ * 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)
            panels.append(np.repeat(occ[..., None], 3, axis=2))
        rows.append(np.concatenate(panels, axis=1))
    grid = np.concatenate(rows, axis=0)
    return write_image(path, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))


def train(cfg: FommConfig, opts: TrainOptions, log=print) -> Path:
    """Train and return the path of the last checkpoint written (rank 0)."""
    from tqdm import tqdm

    rank, world, local_rank = _dist_info()
    distributed = world > 1
    device = torch.device(opts.device if not distributed or opts.device == "cpu" else f"cuda:{local_rank}")
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    tcfg = training_config(cfg)
    tp = tcfg.train_params
    epochs = opts.epochs if opts.epochs is not None else tp.num_epochs
    use_gan = tp.loss_weights.generator_gan != 0
    vgg = None
    if uses_vgg19(cfg):
        if opts.vgg19 is None:
            raise InputError("training with the vgg19 perceptual loss: " + VGG19_WEIGHTS_HELP)
        vgg = Vgg19.from_file(opts.vgg19).to(device)

    dataset = FramesDataset(opts.data, cfg.frame_shape, id_sampling=tcfg.dataset_params.id_sampling,
                            is_train=True, random_seed=opts.seed, augmentation=tcfg.dataset_params.augmentation_params,
                            log=(log if rank == 0 else (lambda m: None)))
    if dataset.skipped and rank == 0:
        log(f"{len(dataset.skipped)} video(s) skipped, {len(dataset.videos)} used")
    repeated = DatasetRepeater(dataset, tp.num_repeats)
    if len(repeated) < tp.batch_size * world:
        raise DatasetError(f"the dataset gives {len(repeated)} samples per epoch, fewer than one batch "
                        f"({tp.batch_size} x {world} processes); add videos or raise num_repeats")

    start_epoch = 0
    if opts.checkpoint is not None:
        has_disc = "discriminator" in read_checkpoint(opts.checkpoint)
        loaded = load_checkpoint(opts.checkpoint, cfg, discriminator=has_disc, device="cpu")
        models, raw = loaded.models, loaded.raw
        if not has_disc:  # some published checkpoints carry no discriminator: start a fresh one
            torch.manual_seed(opts.seed)
            models = models._replace(discriminator=build_discriminator(cfg))
            log("the checkpoint has no discriminator; a new one is initialised")
        start_epoch = (loaded.epoch or 0) + 1
    else:
        torch.manual_seed(opts.seed)
        models = build_models(cfg, discriminator=True)
        raw = {}
    kp_detector, generator, discriminator = (m.to(device).train() for m in models)
    optimizers = {
        "optimizer_generator": torch.optim.Adam(generator.parameters(), lr=tp.lr_generator, betas=(0.5, 0.999)),
        "optimizer_discriminator": torch.optim.Adam(discriminator.parameters(), lr=tp.lr_discriminator,
                                                    betas=(0.5, 0.999)),
        "optimizer_kp_detector": torch.optim.Adam(kp_detector.parameters(), lr=tp.lr_kp_detector, betas=(0.5, 0.999)),
    }
    for name, opt in optimizers.items():
        if name in raw and raw[name].get("state"):
            opt.load_state_dict(raw[name])
    schedulers = {name.replace("optimizer", "scheduler"): torch.optim.lr_scheduler.MultiStepLR(
        opt, list(tp.epoch_milestones), gamma=0.1, last_epoch=-1) for name, opt in optimizers.items()}
    for name, sched in schedulers.items():
        if name in raw:
            state = dict(raw[name])
            state["milestones"] = Counter({int(k): int(v) for k, v in state.get("milestones", {}).items()})
            sched.load_state_dict(state)
        elif start_epoch:  # an upstream checkpoint: rebuild the schedule from the epoch
            for _ in range(start_epoch):
                sched.step()

    generator_full = GeneratorFullModel(kp_detector, generator, discriminator if use_gan else None, cfg, vgg).to(device)
    discriminator_full = DiscriminatorFullModel(discriminator, cfg).to(device)
    if distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        if device.type == "cuda":  # SyncBatchNorm needs CUDA
            generator_full = torch.nn.SyncBatchNorm.convert_sync_batchnorm(generator_full)
        ids = [device.index] if device.type == "cuda" else None
        generator_full = DDP(generator_full, device_ids=ids, find_unused_parameters=True)
        if use_gan:
            discriminator_full = DDP(discriminator_full, device_ids=ids)

    log_dir = opts.log_dir
    if rank == 0:
        (log_dir / "train-vis").mkdir(parents=True, exist_ok=True)
    last_path = None
    for epoch in range(start_epoch, epochs):
        torch.manual_seed(opts.seed * 100_003 + epoch)  # same batches and transforms when resumed
        sampler = DistributedSampler(repeated, num_replicas=world, rank=rank, shuffle=True, seed=opts.seed,
                                     drop_last=True) if distributed else None
        if sampler is not None:
            sampler.set_epoch(epoch)
        loader = DataLoader(repeated, batch_size=tp.batch_size, shuffle=sampler is None, sampler=sampler,
                            num_workers=opts.workers, drop_last=True,
                            generator=torch.Generator().manual_seed(opts.seed * 7919 + epoch))
        sums: dict[str, float] = {}
        count = 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", disable=(rank != 0) or not opts.progress or None)
        batch = generated = None
        transform_rng = torch.Generator().manual_seed(opts.seed * 31 + epoch)
        for batch in bar:
            batch = {k: v.to(device) for k, v in batch.items()}
            losses, generated = generator_full(batch, generator=transform_rng)
            loss = sum(v.mean() for v in losses.values())
            loss.backward()
            optimizers["optimizer_generator"].step()
            optimizers["optimizer_generator"].zero_grad()
            optimizers["optimizer_kp_detector"].step()
            optimizers["optimizer_kp_detector"].zero_grad()
            if use_gan:
                optimizers["optimizer_discriminator"].zero_grad()
                d_losses = discriminator_full(batch, generated)
                sum(v.mean() for v in d_losses.values()).backward()
                optimizers["optimizer_discriminator"].step()
                optimizers["optimizer_discriminator"].zero_grad()
                losses.update(d_losses)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.mean().detach())
            count += 1
            if rank == 0:
                bar.set_postfix({k: f"{v / count:.3f}" for k, v in sums.items()})
        with warnings.catch_warnings():  # the discriminator's optimizer never steps without a GAN loss
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()` before"))
            for sched in schedulers.values():
                sched.step()
        if rank != 0:
            continue
        means = {k: v / max(count, 1) for k, v in sums.items()}
        line = f"{epoch:08d}) " + "; ".join(f"{k} - {v:.5f}" for k, v in means.items())
        with open(log_dir / "log.txt", "a") as f:
            f.write(line + "\n")
        if batch is not None and generated is not None:
            draw_visualisation(batch, generated, log_dir / "train-vis" / f"{epoch:08d}-rec.png",
                               kp_size=max(1, tcfg.visualizer_params.kp_size // 2))
        if (epoch + 1) % tp.checkpoint_freq == 0 or epoch + 1 == epochs:
            last_path = save_checkpoint(
                log_dir / f"{epoch:08d}-checkpoint.pth.tar", generator=generator, kp_detector=kp_detector,
                discriminator=discriminator, optimizers=optimizers, epoch=epoch,
                extra={name: _plain_scheduler_state(s) for name, s in schedulers.items()})
            log(f"epoch {epoch + 1}: {'; '.join(f'{k} {v:.4f}' for k, v in means.items())}; saved {last_path.name}")
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    if last_path is None and rank == 0:
        existing = sorted(log_dir.glob("*-checkpoint.pth.tar"))
        last_path = existing[-1] if existing else None
    return last_path


# -- evaluation --------------------------------------------------------------------------------------------


@torch.no_grad()
def reconstruction(cfg: FommConfig, checkpoint: Path, data: Path, out_dir: Path | None = None, *, progress: bool = True,
                   log=print) -> dict[str, float]:
    """The paper's reconstruction L1: each test video driven by itself from its first frame (absolute keypoints).

    Also reports the copy-the-source-frame baseline (every frame predicted as frame 0) for scale.
    """
    from tqdm import tqdm

    models = load_checkpoint(checkpoint, cfg).models
    dataset = FramesDataset(data, cfg.frame_shape, is_train=False, log=log)
    l1, copy_l1, n = 0.0, 0.0, 0
    for i in tqdm(range(len(dataset)), desc="reconstruction", unit="video", disable=not progress or None):
        item = dataset[i]  # decodes the video: once
        frames = item["video"].permute(1, 0, 2, 3)  # (C, T, H, W) -> (T, C, H, W)
        source = frames[:1]
        kp_source = models.kp_detector(source)
        preds = []
        for t in range(frames.shape[0]):
            kp_driving = models.kp_detector(frames[t:t + 1])
            preds.append(models.generator(source, kp_driving, kp_source, with_deformed=False)["prediction"])
        pred = torch.cat(preds)
        l1 += float((pred - frames).abs().mean())
        copy_l1 += float((source.expand_as(frames) - frames).abs().mean())
        n += 1
        if out_dir is not None:
            _write_strip(out_dir / f"{item['name']}.png", frames, pred)
    return {"l1": l1 / n, "copy_source_l1": copy_l1 / n, "videos": float(n)}


def _write_strip(path: Path, real: torch.Tensor, pred: torch.Tensor) -> None:
    import cv2

    top = np.concatenate(list(real.numpy().transpose(0, 2, 3, 1)), axis=1)
    bottom = np.concatenate(list(pred.numpy().transpose(0, 2, 3, 1)), axis=1)
    img = np.clip(np.concatenate([top, bottom], axis=0) * 255, 0, 255).astype(np.uint8)
    write_image(path, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


@torch.no_grad()
def animate_pairs(cfg: FommConfig, checkpoint: Path, data: Path, out_dir: Path, *, num_pairs: int | None = None,
                  seed: int = 0, log=print) -> list[Path]:
    """Animate test videos' first frames with other test videos (relative motion); writes MP4s."""
    from fomm_deploy.runtime.keypoints import normalize_kp
    from fomm_deploy.runtime.preprocess import to_uint8
    from fomm_deploy.runtime.video import VideoWriter

    models = load_checkpoint(checkpoint, cfg).models
    dataset = FramesDataset(data, cfg.frame_shape, is_train=False, log=log)
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
    import csv

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

