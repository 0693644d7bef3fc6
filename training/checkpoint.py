"""Upstream-format checkpoints: loading (safely, with actionable errors) and atomic saving.

Layout (upstream ``Logger.save_cpk``): a dict with ``generator``, ``kp_detector`` (required),
``discriminator``, ``optimizer_generator``, ``optimizer_discriminator``, ``optimizer_kp_detector``
(optional) and ``epoch``. Files written by torch 1.0 use the legacy non-zip format and GPU-tagged
storages; both load here on a CPU-only machine. Loading always uses ``weights_only=True``: a file that
carries Python code is refused, never executed.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fomm_deploy.runtime.core.config import FommConfig, bundled_config_names, resolve_config
from fomm_deploy.runtime.core.errors import CheckpointError
from fomm_deploy.runtime.core.fileio import atomic_path, sha256_file

from .model import Models, build_models

__all__ = ["CheckpointError", "LoadedCheckpoint", "load_checkpoint", "read_checkpoint", "save_checkpoint",
           "sha256_file", "suggest_configs"]

# kp_detector first: its mismatches (e.g. the number of keypoints) are the most telling.
MODEL_KEYS = ("kp_detector", "generator")


@dataclass
class LoadedCheckpoint:
    models: Models
    config: FommConfig
    epoch: int | None
    raw: dict[str, Any]
    path: Path


def _sniff(path: Path) -> None:
    """Cheap checks on the first bytes, for the common wrong files (HTML pages, archives, empty files)."""
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); download it again")
    with open(path, "rb") as f:
        head = f.read(512)
    stripped = head.lstrip().lower()
    if stripped.startswith((b"<!doctype html", b"<html", b"<?xml", b"<")):
        raise CheckpointError(
            f"checkpoint {path} is an HTML/XML page, not a PyTorch checkpoint: the download probably saved a "
            "web page (e.g. a Google Drive warning). Download the file itself again")
    if len(head) > 262 and head[257:262] == b"ustar":
        raise CheckpointError(
            f"checkpoint {path} is a tar archive; pass the .pth.tar file that upstream publishes (it is a "
            "PyTorch file despite its name), or extract this archive and pass the checkpoint inside it")
    if head[:2] not in (b"\x80\x02", b"PK") and not head.startswith(b"\x80"):
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (unrecognised file header {head[:8]!r})")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file as plain data (``weights_only=True``, tensors on CPU) and check its layout.

    Raises:
        CheckpointError: missing, truncated, non-checkpoint, code-carrying or wrongly laid-out file.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"checkpoint path {path} is a directory; pass the .pth.tar file inside it")
    _sniff(path)
    _check_zip_crcs(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        if "weights_only" in msg or "Unsupported global" in msg or "Unsupported operand" in msg:
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", msg)
            what = f" (it references {found.group(1)})" if found else ""
            raise CheckpointError(
                f"refusing to load {path}: it contains Python objects other than tensors and plain data{what}, "
                "which could run code when loaded. fomm-deploy only loads weights; re-save the state dicts "
                "from a trusted environment, or use an upstream checkpoint") from None
        raise CheckpointError(f"{path} is corrupt or not a PyTorch checkpoint ({_first_line(msg)})") from None
    except (EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path} is truncated or corrupt ({type(exc).__name__}); download it again") from None
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path} is truncated or corrupt, or not a PyTorch checkpoint ({_first_line(str(exc))}); "
            "download it again") from None
    except (ValueError, TypeError, OSError, MemoryError, AttributeError, KeyError, IndexError) as exc:
        raise CheckpointError(f"{path} cannot be read as a checkpoint ({type(exc).__name__}: "
                              f"{_first_line(str(exc))})") from None
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not an FOMM checkpoint dict with "
                              "'generator' and 'kp_detector' entries")
    missing = [k for k in MODEL_KEYS if k not in data]
    if missing:
        found = ", ".join(map(str, list(data)[:8])) or "nothing"
        raise CheckpointError(
            f"{path} is not an FOMM checkpoint: it lacks {' and '.join(repr(k) for k in missing)} "
            f"(found: {found}). Use a checkpoint saved by upstream's run.py or by fomm-train")
    for key in MODEL_KEYS + ("discriminator",):
        if key in data and not isinstance(data[key], Mapping):
            raise CheckpointError(f"{path}: entry '{key}' is a {type(data[key]).__name__}, not a state dict")
    _check_finite(path, data)
    return dict(data)


def _check_zip_crcs(path: Path) -> None:
    """A zip-format checkpoint (torch >= 1.6) stores a CRC of every tensor's bytes, which ``torch.load`` does not
    check: a bad download, copy or disk that changes bytes inside a tensor loads without a word. Check them
    all (the whole file is read once).

    Raises:
        CheckpointError: a member whose bytes do not match its CRC (the message names it).
    """
    if not zipfile.is_zipfile(path):
        return  # the legacy format (torch < 1.6, upstream's checkpoints) has no checksums
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path} is truncated or corrupt ({type(exc).__name__}); download it again") from None
    if bad is not None:
        member = bad.split("/", 1)[1] if "/" in bad else bad
        raise CheckpointError(f"{path} is damaged: the bytes of its part {member} do not match their checksum "
                              "(the file changed after it was written: a bad download, copy or disk); download or "
                              "copy it again")


def _check_finite(path: Path, data: Mapping[str, Any]) -> None:
    """The networks' weights must be numbers: NaN or infinity in one (a training run that diverged, or damaged
    bytes in a file without checksums) gives a model whose every output is NaN.

    Raises:
        CheckpointError: naming the first tensor with non-finite values and how many it has.
    """
    for part in MODEL_KEYS + ("discriminator",):
        for name, value in (data.get(part) or {}).items():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                # numpy: torch's first elementwise call on CPU starts its thread pool, a second on a busy machine
                array = (value if value.dtype in (torch.float16, torch.float32, torch.float64) else value.float())
                array = array.detach().cpu().numpy()
                bad = int(array.size - np.count_nonzero(np.isfinite(array)))
                if bad:
                    raise CheckpointError(
                        f"{path} has {bad} weights that are not finite (NaN or infinity) in {part} {name}: the "
                        "training that wrote it diverged, or the file is damaged; use an earlier checkpoint")


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:200]


def _strip_module_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    """Remove the ``module.`` prefixes that DataParallel/DDP wrappers add to keys."""
    out = {}
    for key, value in state.items():
        while key.startswith("module."):
            key = key[len("module."):]
        out[key] = value
    return out


def _fill_num_batches_tracked(state: dict[str, Any], reference: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    # Very old files may lack BatchNorm's counter; its value is unused at inference.
    for key, ref in reference.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros((), dtype=ref.dtype)
    return state


def _mismatches(part: str, state: Mapping[str, Any], module: nn.Module) -> list[str]:
    """Every difference between a state dict and a module, as short human-readable lines."""
    ref = module.state_dict()
    lines = []
    for key, tensor in state.items():
        if key not in ref:
            lines.append(f"{part}.{key}: in the checkpoint but not in the model built from the config")
        elif not isinstance(tensor, torch.Tensor):
            lines.append(f"{part}.{key}: expected a tensor, got {type(tensor).__name__}")
        elif tuple(tensor.shape) != tuple(ref[key].shape):
            lines.append(f"{part}.{key}: checkpoint {tuple(tensor.shape)} vs config {tuple(ref[key].shape)}")
    for key in ref:
        if key not in state:
            lines.append(f"{part}.{key}: required by the config but missing from the checkpoint")
    return lines


def _prepare_states(raw: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {part: _strip_module_prefix(raw[part]) for part in MODEL_KEYS + ("discriminator",) if part in raw}


def _fits(states: Mapping[str, Mapping[str, Any]], cfg: FommConfig) -> bool:
    meta = build_models(cfg, device="meta")
    for part in MODEL_KEYS:
        module = getattr(meta, part)
        state = _fill_num_batches_tracked(dict(states[part]), module.state_dict())
        if _mismatches(part, state, module):
            return False
    return True


def suggest_configs(raw: Mapping[str, Any], exclude: str | None = None) -> list[str]:
    """Bundled config names whose keypoint detector and generator fit this checkpoint exactly."""
    states = _prepare_states(raw)
    names = []
    for name in bundled_config_names():
        if name == exclude:
            continue
        try:
            if _fits(states, resolve_config(name)):
                names.append(name)
        except Exception:  # a broken bundled config must not hide the user's real problem
            continue
    return names


def _describe_checkpoint(states: Mapping[str, Mapping[str, Any]]) -> str:
    kp = states["kp_detector"].get("kp.weight")
    jac = states["kp_detector"].get("jacobian.weight")
    parts = []
    if isinstance(kp, torch.Tensor) and kp.dim() == 4:
        parts.append(f"{kp.shape[0]} keypoints")
    if isinstance(jac, torch.Tensor) and isinstance(kp, torch.Tensor) and jac.dim() == 4:
        parts.append("one jacobian map per keypoint" if jac.shape[0] == 4 * kp.shape[0] else
                     f"{jac.shape[0] // 4} shared jacobian map(s)")
    elif isinstance(kp, torch.Tensor):
        parts.append("no jacobians")
    return ", ".join(parts)


def _config_label(cfg: FommConfig) -> str:
    return f"'{cfg.name}'" if cfg.name else "the given config"


def load_checkpoint(path: str | Path, config: FommConfig, *, discriminator: bool = False,
                    device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Build the networks of ``config`` and load an upstream-format checkpoint into them strictly.

    Args:
        path: checkpoint file (legacy or zip format; GPU-tagged storages are mapped to CPU).
        config: the config the checkpoint was trained with.
        discriminator: also build and load the discriminator (training only).
    Returns:
        LoadedCheckpoint with the modules in eval mode.
    Raises:
        CheckpointError: unreadable file, or a config that does not fit the checkpoint. In the latter case
            the message names the first mismatching parameters and the bundled configs that would fit.
    """
    path = Path(path)
    raw = read_checkpoint(path)
    states = _prepare_states(raw)
    models = build_models(config, discriminator=discriminator, device=device)
    parts = list(MODEL_KEYS) + (["discriminator"] if discriminator else [])
    if discriminator and "discriminator" not in states:
        raise CheckpointError(f"{path} has no 'discriminator' entry; it cannot resume adversarial training")
    problems: list[str] = []
    for part in parts:
        module = getattr(models, part)
        states[part] = _fill_num_batches_tracked(states[part], module.state_dict())
        problems += _mismatches(part, states[part], module)
    if problems:
        shown = "; ".join(problems[:3])
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        fits = suggest_configs(raw, exclude=config.name or None)
        desc = _describe_checkpoint(states)
        if fits:
            advice = f"Use --config {fits[0]}" + (f" (also fits: {', '.join(fits[1:])})" if len(fits) > 1 else "")
        else:
            advice = ("No bundled config fits it: use the config it was trained with, or copy a bundled one "
                      "and change the sizes to match")
            kp_weight = states["kp_detector"].get("kp.weight")
            if isinstance(kp_weight, torch.Tensor) and kp_weight.dim() == 4 and kp_weight.shape[0] != config.num_kp:
                advice += f" (at least model_params.common_params.num_kp: {kp_weight.shape[0]}, not {config.num_kp})"
        raise CheckpointError(
            f"checkpoint {path.name} ({desc}) does not fit config {_config_label(config)}: {shown}{more}. {advice}.")
    for part in parts:
        getattr(models, part).load_state_dict(states[part], strict=True)
    epoch = raw.get("epoch")
    return LoadedCheckpoint(models=models, config=config, epoch=epoch if isinstance(epoch, int) else None,
                            raw=raw, path=path)


def save_checkpoint(path: str | Path, *, generator: nn.Module, kp_detector: nn.Module,
                    discriminator: nn.Module | None = None, optimizers: Mapping[str, Any] | None = None,
                    epoch: int | None = None, extra: Mapping[str, Any] | None = None) -> Path:
    """Write a checkpoint in upstream's layout, atomically (temporary file in the same folder, then rename).

    Args:
        optimizers: ``{"optimizer_generator": opt, ...}``; objects with ``state_dict()`` or plain dicts.
        extra: further plain-data entries (e.g. scheduler states); must load under ``weights_only``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def plain(module: nn.Module) -> dict[str, torch.Tensor]:
        state = module.state_dict()
        return {k[len("module."):] if k.startswith("module.") else k: v.detach().cpu() for k, v in state.items()}

    data: dict[str, Any] = {"generator": plain(generator)}
    if discriminator is not None:
        data["discriminator"] = plain(discriminator)
    data["kp_detector"] = plain(kp_detector)
    for name, opt in (optimizers or {}).items():
        data[name] = opt.state_dict() if hasattr(opt, "state_dict") else opt
    if epoch is not None:
        data["epoch"] = int(epoch)
    data.update(extra or {})
    with atomic_path(path) as tmp:
        torch.save(data, tmp)
    return path
