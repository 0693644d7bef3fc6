"""Video datasets in upstream's layouts, augmentations written without torchvision.

A dataset root holds ``train/`` and ``test/`` (else a seeded 80/20 split). A video is a folder of frames,
an ``.mp4``/``.gif``/``.mov``/``.avi``, or a horizontally stacked ``.png``/``.jpg`` strip of frames.
Videos that cannot be read or have fewer than two frames are skipped once, with one warning each, when
the dataset is built, so an epoch never crashes halfway.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from fomm_deploy.runtime.core.errors import DatasetError, InputError
from fomm_deploy.runtime.media.preprocess import IMAGE_SUFFIXES, load_image, to_uint8
from fomm_deploy.runtime.media.video import VIDEO_SUFFIXES, read_frames

from .config import AugmentationParams, NearPairs


def _resize(frames: np.ndarray, h: int, w: int) -> np.ndarray:
    if frames.shape[1:3] == (h, w):
        return frames
    return np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames])


@contextmanager
def _in_dataset_terms():
    """What the media layer refuses (an ``InputError``: a truncated file, an unreadable frame, ...) becomes a
    ``DatasetError`` with the media layer's message."""
    try:
        yield
    except DatasetError:
        raise
    except InputError as exc:
        raise DatasetError(str(exc)) from exc


def read_video(path: Path, frame_shape: tuple[int, int, int]) -> np.ndarray:
    """All frames of a video in any supported layout: (T, H, W, 3) uint8 RGB at ``frame_shape``.

    Video files and frame folders are read by the media layer (``media.video.read_frames``), a strip's
    image by ``media.preprocess.load_image``.

    Raises:
        DatasetError: unreadable video or no frames.
    """
    h, w = frame_shape[:2]
    path = Path(path)
    suffix = path.suffix.lower()
    if not (path.is_dir() or suffix in VIDEO_SUFFIXES | IMAGE_SUFFIXES):
        raise DatasetError(f"{path}: unsupported video layout")
    with _in_dataset_terms():
        if path.is_dir() or suffix in VIDEO_SUFFIXES:
            return _resize(read_frames(path), h, w)
        img = to_uint8(load_image(path, min_side=1))  # a strip of frames side by side
    if img.shape[0] != h or img.shape[1] % w:
        raise DatasetError(f"{path}: a strip must be {h} px high and a multiple of {w} px wide, got "
                           f"{img.shape[1]}x{img.shape[0]} (check dataset_params.frame_shape)")
    return img.reshape(h, -1, w, 3).transpose(1, 0, 2, 3).copy()


def _is_video_entry(p: Path) -> bool:
    return p.is_dir() or p.suffix.lower() in VIDEO_SUFFIXES | IMAGE_SUFFIXES


def _video_id(name: str) -> str:
    return name.split("#")[0]


# -- augmentation ------------------------------------------------------------------------------------------


def _adjust_hsv(frames: np.ndarray, hue: float, saturation: float) -> np.ndarray:
    out = np.empty_like(frames)
    for i, f in enumerate(frames):
        hsv = cv2.cvtColor(f, cv2.COLOR_RGB2HSV)  # float input: H in [0, 360)
        hsv[..., 0] = (hsv[..., 0] + hue * 360.0) % 360.0
        hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0, 1)
        out[i] = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return out


class Augmenter:
    """Upstream's training augmentations on a clip (T, H, W, 3) float32 in [0, 1]; one draw per clip."""

    def __init__(self, params: AugmentationParams | None, rng: np.random.Generator) -> None:
        self.p = params
        self.rng = rng

    def __call__(self, clip: np.ndarray) -> np.ndarray:
        p, rng = self.p, self.rng
        if p is None:
            return clip
        if p.flip_param is not None:  # time flip with p .5, otherwise horizontal flip with p .5: never both
            if p.flip_param.time_flip and rng.random() < 0.5:
                clip = clip[::-1]
            elif p.flip_param.horizontal_flip and rng.random() < 0.5:
                clip = clip[:, :, ::-1]
        h, w = clip.shape[1:3]
        if p.resize_param is not None and p.resize_param.ratio:
            lo, hi = p.resize_param.ratio
            r = rng.uniform(lo, hi)
            nh, nw = max(1, int(round(h * r))), max(1, int(round(w * r)))
            clip = np.stack([cv2.resize(f, (nw, nh), interpolation=cv2.INTER_LINEAR) for f in clip])
        if p.rotation_param is not None and p.rotation_param.degrees:
            angle = rng.uniform(-p.rotation_param.degrees, p.rotation_param.degrees)
            m = cv2.getRotationMatrix2D((clip.shape[2] / 2, clip.shape[1] / 2), angle, 1.0)
            clip = np.stack([cv2.warpAffine(f, m, (f.shape[1], f.shape[0])) for f in clip])
        if clip.shape[1:3] != (h, w):  # crop (or pad) back to the frame size at a random position
            ch, cw = clip.shape[1:3]
            if ch < h or cw < w:
                clip = np.pad(clip, ((0, 0), (0, max(0, h - ch)), (0, max(0, w - cw)), (0, 0)))
                ch, cw = clip.shape[1:3]
            y, x = rng.integers(0, ch - h + 1), rng.integers(0, cw - w + 1)
            clip = clip[:, y:y + h, x:x + w]
        j = p.jitter_param
        if j is not None:  # colour jitter in a random order of its four operations
            ops = []
            if j.brightness:
                b = rng.uniform(max(0, 1 - j.brightness), 1 + j.brightness)
                ops.append(lambda c, b=b: c * b)
            if j.contrast:
                k = rng.uniform(max(0, 1 - j.contrast), 1 + j.contrast)
                ops.append(lambda c, k=k: (c - c.mean(axis=(1, 2, 3), keepdims=True)) * k
                           + c.mean(axis=(1, 2, 3), keepdims=True))
            if j.saturation:
                s = rng.uniform(max(0, 1 - j.saturation), 1 + j.saturation)
                ops.append(lambda c, s=s: _adjust_hsv(c, 0.0, s))
            if j.hue:
                hue = rng.uniform(-j.hue, j.hue)
                ops.append(lambda c, hue=hue: _adjust_hsv(c, hue, 1.0))
            for i in rng.permutation(len(ops)):
                clip = np.clip(ops[i](np.ascontiguousarray(clip, dtype=np.float32)), 0, 1)
        return np.ascontiguousarray(clip, dtype=np.float32)


# -- datasets ----------------------------------------------------------------------------------------------


class FramesDataset(Dataset):
    """Upstream's FramesDataset.

    Train items: ``{"source", "driving"}`` (C, H, W) float32, two frames of one video (sorted random indices;
    with ``near_pairs``, a share of them close together: :func:`pair_indices`).
    Test items: ``{"video"}`` (C, T, H, W) float32 and ``{"name"}``.

    The split: ``root/train`` or ``root/test``; without ``train/``, a seeded 80/20 split of the videos in
    ``root``. ``every_video`` takes every video instead (those of ``train/`` and ``test/``, or of ``root``):
    fomm-train's ``--split all`` for evaluating any folder of videos.
    """

    def __init__(self, root: str | Path, frame_shape: tuple[int, ...], *, id_sampling: bool = False,
                 is_train: bool = True, random_seed: int = 0, augmentation: AugmentationParams | None = None,
                 log=None, every_video: bool = False, near_pairs: NearPairs | None = None) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"dataset folder not found: {root} (set --data or dataset_params.root_dir)")
        self.frame_shape = tuple(frame_shape)
        self.is_train = is_train
        self.id_sampling = id_sampling
        self.augmentation = augmentation if is_train else None
        self.near_pairs = near_pairs
        if every_video:  # evaluation of any folder: its videos, or those of its train/ and test/
            splits = [root / "train", root / "test"] if (root / "train").is_dir() else [root]
            entries = sorted(p for d in splits if d.is_dir() for p in d.iterdir() if _is_video_entry(p))
        elif (root / "train").is_dir():
            split_dir = root / ("train" if is_train else "test")
            entries = sorted(p for p in split_dir.iterdir() if _is_video_entry(p)) if split_dir.is_dir() else []
        else:
            all_entries = sorted(p for p in root.iterdir() if _is_video_entry(p))
            order = np.random.default_rng(random_seed).permutation(len(all_entries))
            n_train = int(round(0.8 * len(all_entries)))
            chosen = order[:n_train] if is_train else order[n_train:]
            entries = [all_entries[i] for i in sorted(chosen)]
        self.videos, self.skipped = [], []
        warn = log or (lambda m: warnings.warn(m, stacklevel=2))
        for p in entries:
            try:
                n = self._count_frames(p)
            except DatasetError as exc:
                self.skipped.append(p)
                warn(f"skipping {p.name}: {exc}")
                continue
            if n < 2:
                self.skipped.append(p)
                warn(f"skipping {p.name}: it has {n} frame(s), at least 2 are needed")
                continue
            self.videos.append(p)
        if not self.videos:
            split = "every video" if every_video else "train split" if is_train else "test split"
            raise DatasetError(f"no usable videos in {root} ({split}; "
                               f"{len(self.skipped)} skipped). Expected upstream's layout: {root}/train/ and "
                               f"{root}/test/ (or videos directly in {root}), each video an .mp4/.mov/.gif, a "
                               "folder of frames, or a horizontal strip of frames as .png/.jpg, at least 2 frames")
        self.ids = sorted({_video_id(p.name) for p in self.videos}) if id_sampling else None
        self._by_id: dict[str, list[Path]] = {}
        for p in self.videos:
            self._by_id.setdefault(_video_id(p.name), []).append(p)

    def _count_frames(self, p: Path) -> int:
        """Frames of ``p``, counted up to 2 for a video file (cheap); a frame folder or strip is read whole, so
        that frames of another size are found now, not in the middle of an epoch."""
        if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES:
            with _in_dataset_terms():
                return len(read_frames(p, limit=2))
        return len(read_video(p, self.frame_shape))

    def __len__(self) -> int:
        return len(self.ids) if self.id_sampling else len(self.videos)

    def _rng(self, idx: int) -> np.random.Generator:
        # Seeded from torch's per-worker / per-epoch state (direct indexing, outside fomm-train's plan).
        return np.random.default_rng([torch.initial_seed() % (1 << 63), idx, torch.randint(1 << 30, (1,)).item()])

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        """``item`` is an index, or (index, sample seed) as fomm-train's epoch plan gives: then the frames
        and augmentation depend on that seed alone (not on loader workers or what ran before)."""
        if isinstance(item, (tuple, list)):
            idx, seed = int(item[0]), int(item[1])
            rng = np.random.default_rng(seed)
        else:
            idx = int(item)
            rng = self._rng(idx)
        if self.id_sampling:
            options = self._by_id[self.ids[idx]]
            path = options[int(rng.integers(len(options)))]
        else:
            path = self.videos[idx]
        frames = read_video(path, self.frame_shape)
        if self.is_train:
            pick = pair_indices(len(frames), rng, self.near_pairs)
            clip = frames[pick].astype(np.float32) / 255.0
            clip = Augmenter(self.augmentation, rng)(clip)
            return {"source": torch.from_numpy(clip[0].transpose(2, 0, 1).copy()),
                    "driving": torch.from_numpy(clip[1].transpose(2, 0, 1).copy())}
        video = frames.astype(np.float32).transpose(3, 0, 1, 2) / 255.0
        return {"video": torch.from_numpy(video), "name": path.name}


def pair_indices(n: int, rng: np.random.Generator, near: NearPairs | None = None) -> np.ndarray:
    """Two sorted frame indices of an ``n``-frame video: anywhere (upstream's sampling, the same draws from
    ``rng`` as before ``near_pairs`` existed), or with probability ``near.share`` at most ``near.max_gap`` apart."""
    if near is not None and near.share > 0 and rng.random() < near.share:
        first = int(rng.integers(n))
        second = min(n - 1, max(0, first + int(rng.integers(-near.max_gap, near.max_gap + 1))))
        return np.sort(np.array([first, second]))
    return np.sort(rng.choice(n, size=2, replace=True))


class DatasetRepeater(Dataset):
    """Repeats a dataset ``num_repeats`` times per epoch (cheaper epochs on small datasets)."""

    def __init__(self, dataset: Dataset, num_repeats: int = 1) -> None:
        self.dataset, self.num_repeats = dataset, max(1, int(num_repeats))

    def __len__(self) -> int:
        return self.num_repeats * len(self.dataset)

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        if isinstance(item, (tuple, list)):
            return self.dataset[(int(item[0]) % len(self.dataset), int(item[1]))]
        return self.dataset[item % len(self.dataset)]
