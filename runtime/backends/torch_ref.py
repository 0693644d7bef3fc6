"""The PyTorch model as a backend: the reference for parity, the upstream-style baseline, and a GPU backend
that needs no TensorRT.

On the CPU it is the fp32 reference. On a CUDA device it can also run the fp16 graphs' precision policy in
half precision (no autocast: the blocks that the precision policy (``runtime/core/precision.py``) puts in fp16, ``FP16_SCOPES``, are converted to
half and get their inputs cast at their borders; keypoint heads, heatmaps, motions, the 2x2 inverse and grid
sampling stay fp32; the keypoint detector stays fully fp32, ``FP32_AT_FP16``), with channels-last memory. On CUDA
the graph's module is also ``torch.compile``d by default, in ``reduce-overhead`` mode, which captures and replays
CUDA graphs itself, so the backend's own CUDA-graph replay is then off (and refused if asked for). With compile
off, or in a mode without CUDA graphs, the backend replays its own: one CUDA graph per batch size, with static
input and output tensors.

The only runtime module that touches torch, and only inside ``activate()``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..core.config import FommConfig
from ..core.contract import GraphSpec
from ..core.errors import BackendUnavailableError, CheckpointError, InputError
from ..core.fileio import user_cache_dir
from ..core.precision import runs_fp16, runs_in_fp16
from .base import Backend


# torch.compile's modes (torch.compile documentation): Inductor alone, with CUDA graphs, or autotuned too.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def module_scope_path(name: str) -> str:
    """A torch module path in the ONNX node-name form the fp16 scopes use: ``generator.up_blocks.0.conv`` ->
    ``/generator/up_blocks.0/conv/`` (list indices stay attached with a dot, as the TorchScript exporter writes)."""
    parts: list[str] = []
    for part in name.split(".") if name else []:
        if part.isdigit() and parts:
            parts[-1] += "." + part
        else:
            parts.append(part)
    return "/" + "/".join(parts) + "/" if parts else "/"


def fp16_blocks(module: Any, graph: str) -> list[str]:
    """Names of the outermost submodules of ``module`` (a ``flat_module`` of ``graph``) that the fp16 policy
    runs in half precision: those whose scope path is in the precision policy's ``FP16_SCOPES`` (in a composite
    graph, of its parts that run fp16: ``precision.runs_in_fp16``); none for the graphs in ``FP32_AT_FP16``."""
    if not runs_fp16(graph):
        return []
    chosen: list[str] = []
    for name, _ in module.named_modules():
        if not name or any(name.startswith(c + ".") for c in chosen):
            continue
        if runs_in_fp16(graph, module_scope_path(name)):
            chosen.append(name)
    return chosen


def apply_fp16_policy(module: Any, graph: str) -> list[str]:
    """Convert the :func:`fp16_blocks` of ``module`` to half, in place; each converted block casts its float
    inputs to half on entry and its outputs back to float32 on exit. Returns the converted block names."""
    import torch

    def to_half(_mod, args):
        return tuple(a.half() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)

    def to_float(_mod, _args, out):
        if isinstance(out, torch.Tensor):
            return out.float()
        if isinstance(out, (tuple, list)):
            return type(out)(o.float() if isinstance(o, torch.Tensor) and o.is_floating_point() else o for o in out)
        return out

    names = fp16_blocks(module, graph)
    for name in names:
        block = module.get_submodule(name)
        if getattr(block, "_fomm_fp16", False):  # the graph wrappers share one generator: convert once
            continue
        block._fomm_fp16 = True
        block.half()
        block.register_forward_pre_hook(to_half)
        block.register_forward_hook(to_float)
    return names


class _CudaGraphStep:
    """One captured CUDA graph per input shape: copy the feed into static inputs, replay, read static outputs."""

    def __init__(self, module: Any, device: Any, memory_format: Any) -> None:
        self.module, self.device, self.memory_format = module, device, memory_format
        self.graphs: dict[tuple, tuple[Any, list[Any], tuple[Any, ...]]] = {}

    def _capture(self, args: list[Any]):
        import torch

        static = [a.clone() for a in args]
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream), torch.no_grad():
            for _ in range(2):  # warm-up outside the graph (cuDNN picks its algorithms here)
                self.module(*static)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.no_grad():
            out = self.module(*static)
        return graph, static, out if isinstance(out, tuple) else (out,)

    def __call__(self, args: list[Any]) -> tuple[Any, ...]:
        key = tuple((tuple(a.shape), a.dtype) for a in args)
        if key not in self.graphs:
            self.graphs[key] = self._capture(args)
        graph, static, out = self.graphs[key]
        for s, a in zip(static, args):
            s.copy_(a, non_blocking=True)
        graph.replay()
        return out


class TorchBackend(Backend):
    """Runs one graph of a checkpoint in PyTorch (no_grad), eager or ``torch.compile``d: fp32 on the CPU or
    CUDA, or the fp16 policy on CUDA, with channels-last and CUDA graphs on CUDA.

    Args:
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``fp32``, or ``fp16`` (CUDA only).
        channels_last: default on for CUDA devices, off on the CPU.
        cuda_graph: the backend's own CUDA-graph replay, one graph per batch size (CUDA only). Default on for
            CUDA devices unless ``compile`` runs in ``reduce-overhead`` mode (the CUDA default), which captures
            CUDA graphs itself; True with that mode is refused.
        tf32: allow TF32 convolutions and matrix products in fp32 on CUDA (default off: fp32 means fp32).
        compile: ``torch.compile`` the graph's module (default on for CUDA devices, off on the CPU), in
            ``compile_mode``, ``fullgraph=True`` and ``dynamic=False``: each batch size compiles anew, and a
            graph's 9th shape fails (torch's ``recompile_limit``). Inductor's kernels go to
            ``$TORCHINDUCTOR_CACHE_DIR`` when it is set, else to the user's cache folder
            (``fomm-deploy/torch-compile``), so a second start reuses the first one's kernels. Torch sets that
            variable itself the first time Inductor runs in a process: after other compiled code, torch's own
            folder is kept. :attr:`kernel_cache` names the folder.
        compile_mode: ``torch.compile``'s mode (default: ``reduce-overhead`` on CUDA, ``default`` on the CPU).
        on_compile: called with a one-line message before and after compiling (the first call of each batch
            size compiles), for a progress line.
    """

    kind = "torch"

    def __init__(self, spec: GraphSpec, checkpoint: str | Path, config: FommConfig, *, device: str = "cpu",
                 precision: str = "fp32", channels_last: bool | None = None, cuda_graph: bool | None = None,
                 tf32: bool = False, compile: bool | None = None, compile_mode: str | None = None,
                 on_compile=None, name: str | None = None) -> None:
        super().__init__(spec, name=name)
        if precision not in ("fp32", "fp16"):
            raise InputError(f"the torch backend runs fp32 or fp16, not {precision}")
        on_cuda = device.startswith("cuda")
        if precision == "fp16" and not on_cuda:
            raise InputError("the torch backend runs fp16 on a CUDA GPU only; pass --device cuda, or use fp32")
        if cuda_graph and not on_cuda:
            raise InputError("CUDA-graph replay needs a CUDA device")
        self.checkpoint = Path(checkpoint)
        self.config = config
        self.device = device
        self.precision = precision
        self.channels_last = on_cuda if channels_last is None else channels_last
        self.compile = on_cuda if compile is None else compile
        self.compile_mode = compile_mode or ("reduce-overhead" if on_cuda else "default")
        if self.compile and self.compile_mode not in COMPILE_MODES:
            raise InputError(f"unknown torch.compile mode '{self.compile_mode}'; choose from {', '.join(COMPILE_MODES)}")
        own_graphs = not (self.compile and self.compile_mode == "reduce-overhead")
        if cuda_graph and not own_graphs:
            raise InputError("the torch backend's CUDA-graph replay and torch.compile's reduce-overhead mode both "
                             "capture CUDA graphs; pass cuda_graph=False, compile=False, or another compile_mode "
                             "(max-autotune-no-cudagraphs)")
        self.cuda_graph = (on_cuda and own_graphs) if cuda_graph is None else cuda_graph
        self.tf32 = tf32
        self.on_compile = on_compile or (lambda _message: None)
        self.compile_seconds: dict[tuple, float] = {}  # per input shapes: the first call's time (compile + run)
        self.kernel_cache: str | None = None  # where Inductor writes its kernels (set by activate with compile)
        self.module = None
        self.half_blocks: list[str] = []
        self._step = None

    def _activate(self) -> None:
        import torch

        from fomm_deploy.training.checkpoint import load_checkpoint
        from fomm_deploy.training.model.wrappers import flat_module

        if self.device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise BackendUnavailableError(f"the torch backend was asked for {self.device}, but this torch "
                                              f"({torch.__version__}) sees no CUDA GPU; use --device cpu")
            torch.backends.cudnn.allow_tf32 = self.tf32
            torch.backends.cuda.matmul.allow_tf32 = self.tf32
            torch.backends.cudnn.benchmark = True
        try:
            models = load_checkpoint(self.checkpoint, self.config, device=self.device).models
        except CheckpointError as exc:
            if "does not fit config" not in str(exc):
                raise
            # The config here is the export's: say so, in terms of the command the user is running.
            raise CheckpointError(f"--ckpt {self.checkpoint} does not fit this export's config "
                                  f"'{self.config.name}' ({str(exc).split(': ', 1)[-1][:300]}); pass the checkpoint "
                                  "the export was made from, or export this one") from None
        module = flat_module(self.spec.name, models, self.config.estimate_jacobian).eval()
        if self.precision == "fp16":
            self.half_blocks = apply_fp16_policy(module, self.spec.name)
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        if self.compile:
            # Read by Inductor when it compiles (the first call), so this takes effect unless the variable is
            # already set: by the user, or by torch itself once Inductor ran in this process.
            self.kernel_cache = os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(user_cache_dir("torch-compile")))
            module = torch.compile(module, mode=self.compile_mode, fullgraph=True, dynamic=False)
        self.module = module
        self._step = _CudaGraphStep(module, torch.device(self.device), torch.channels_last) if self.cuda_graph else None

    def device_inputs(self, feed: dict[str, np.ndarray]) -> list[Any]:
        """The feed as the tensors the graph's module takes: in input order, on the backend's device, images
        channels-last when the backend runs so. With :meth:`run_device`, one step without the host copies,
        which is what a GPU timing of the model alone measures."""
        import torch

        args = []
        for n in self.spec.input_names:
            t = torch.from_numpy(np.ascontiguousarray(feed[n]))
            if self.device.startswith("cuda"):
                t = t.to(self.device)
            if self.channels_last and t.dim() == 4 and n in ("image", "source", "source_features", "source_down"):
                t = t.contiguous(memory_format=torch.channels_last)
            args.append(t)
        return args

    def run_device(self, args: list[Any]) -> tuple[Any, ...]:
        """One step on tensors from :meth:`device_inputs`: the CUDA-graph replay, or the module without
        gradients. The outputs (in output order) stay on the device; a CUDA graph's are its static buffers,
        which the next step overwrites.

        Raises:
            RuntimeError: the backend is not active.
        """
        import torch

        if self.module is None:
            raise RuntimeError(f"{self.name}: call activate() (or use 'with') before run_device()")
        key = tuple(tuple(a.shape) for a in args)
        first = self.compile and key not in self.compile_seconds
        if first:
            self.on_compile(f"{self.name}: compiling for batch {key[0][0]} (torch.compile, {self.compile_mode}; "
                            f"kernels cached in {self.kernel_cache})")
            start = time.perf_counter()
        if self._step is not None:
            out = self._step(args)
        else:
            with torch.no_grad():
                out = self.module(*args)
        if first:
            if self.device.startswith("cuda"):
                torch.cuda.synchronize(self.device)
            self.compile_seconds[key] = time.perf_counter() - start
            self.on_compile(f"{self.name}: compiled in {self.compile_seconds[key]:.1f} s")
        return out if isinstance(out, tuple) else (out,)

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.run_device(self.device_inputs(feed))
        return {t.name: (o.float() if t.dtype == "float32" else o).contiguous().cpu().numpy()
                for t, o in zip(self.spec.outputs, out)}

    def _deactivate(self) -> None:
        self.module = None
        self._step = None
