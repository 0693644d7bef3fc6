"""An export folder (graphs + manifest.json) and the backends that run it.

``BACKEND_CLASSES`` is the only mapping from backend names (``names.BACKENDS``) to classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .animator import Animator
from .backends.base import Backend
from .backends.onnxrt import OrtBackend
from .backends.tensorrt import TrtBackend
from .backends.torch_ref import TorchBackend
from .core.config import ConfigError, FommConfig, config_from_dict, resolve_config
from .core.contract import GraphSpec, graph_specs
from .core.errors import CheckpointError, ExportFolderError
from .core.manifest import MANIFEST_NAME, Manifest, graph_file_name
from .core.names import BACKENDS, check_backend_device

BACKEND_CLASSES: dict[str, type[Backend]] = {"torch": TorchBackend, "onnxruntime": OrtBackend, "tensorrt": TrtBackend}
if set(BACKEND_CLASSES) != set(BACKENDS):  # the name table and the classes must not drift apart
    raise ImportError(f"backend classes {sorted(BACKEND_CLASSES)} do not match names.BACKENDS {sorted(BACKENDS)}")
GRAPHS = ("kp_detector", "generator")
SPLIT_GRAPHS = ("source_encoder", "generator_frame")
STEP_GRAPH = "frame_step"


@dataclass
class ExportedModel:
    dir: Path
    manifest: Manifest
    config: FommConfig
    specs: dict[str, GraphSpec]

    @property
    def frame_size(self) -> tuple[int, int]:
        return self.config.frame_size

    def has_precision(self, precision: str) -> bool:
        return all(self.manifest.has_file(self.dir, g, precision) for g in GRAPHS)

    def has_split(self, precision: str = "fp32") -> bool:
        """Whether the per-source split graphs were exported (at this precision)."""
        return all(self.manifest.has_file(self.dir, g, precision) for g in SPLIT_GRAPHS)

    def has_frame_step(self, precision: str = "fp32") -> bool:
        """Whether the ``frame_step`` graph was exported (at this precision), with the split it builds on."""
        return self.has_split(precision) and self.manifest.has_file(self.dir, STEP_GRAPH, precision)


def load_exported(onnx_dir: str | Path) -> ExportedModel:
    """Read ``manifest.json`` of an export folder (through ``Manifest.read``) and check it against this
    version's contract.

    Raises:
        ExportFolderError: no such folder, no or unreadable manifest, an unknown format, or a contract that
            does not match.
    """
    onnx_dir = Path(onnx_dir)
    manifest = Manifest.read(onnx_dir)
    manifest_path = onnx_dir / MANIFEST_NAME
    try:
        cfg = config_from_dict(manifest.config, name=manifest.config_name, source=str(manifest_path))
    except (KeyError, TypeError, ConfigError) as exc:
        raise ExportFolderError(f"{manifest_path} has a config this version cannot read ({exc}); export again") \
            from None
    specs = graph_specs(cfg)
    for g in GRAPHS:
        if g not in manifest.graphs:
            raise ExportFolderError(f"{manifest_path} records no '{g}' graph; export again")
    for key, entry in manifest.graphs.items():
        if entry.spec != specs.get(entry.spec.name):
            raise ExportFolderError(f"{manifest_path}: the '{entry.spec.name}' contract differs from this "
                                    "version's; export again")
    return ExportedModel(onnx_dir, manifest, cfg, specs)


def make_backend(kind: str, exported: ExportedModel, graph: str, precision: str = "fp32", *,
                 ckpt: str | Path | None = None, config: str | Path | None = None,
                 providers: Sequence[str] | None = None, device: str | None = None,
                 compile: bool | None = None, on_compile=None) -> Backend:
    """A backend of ``kind`` for one graph of an export folder (not yet activated).

    ``device``: the torch backend's (``cpu`` by default; its fp16 needs ``cuda``); see ``names.check_backend_device``.
    ``compile``, ``on_compile``: the torch backend's ``torch.compile`` (default: on CUDA) and its progress lines.
    """
    device = check_backend_device(kind, precision, device)
    spec = exported.specs[graph]
    if kind == "torch":
        path = Path(ckpt) if ckpt else Path(exported.manifest.checkpoint.path)
        if not path.is_file():
            raise CheckpointError(f"the torch backend needs the checkpoint, and {path} (from the manifest) is not there; "
                            "pass --ckpt PATH")
        cfg = resolve_config(config) if config else exported.config
        return TorchBackend(spec, path, cfg, device=device, precision=precision, compile=compile,
                            on_compile=on_compile)
    path = exported.dir / graph_file_name(graph, precision)
    if not path.is_file():
        hint = f"; export with --precision {precision}" if precision != "fp32" else ""
        raise ExportFolderError(f"{path} not found{hint}")
    exported.manifest.verified_graph(exported.dir, graph, precision)  # its bytes are the export's (sha256)
    if kind == "onnxruntime":
        return OrtBackend(spec, path, providers=tuple(providers or ("cpu",)))
    return TrtBackend.from_onnx(spec, exported.dir, precision)


def open_animator(exported: ExportedModel, kind: str = "onnxruntime", precision: str = "fp32", *,
                  split: bool | None = None, frame_step: bool | None = None, ckpt: str | Path | None = None,
                  config: str | Path | None = None, providers: Sequence[str] | None = None,
                  device: str | None = None, compile: bool | None = None, on_compile=None, **animator_options):
    """An ``Animator`` over activated backends of ``kind``.

    Args:
        split: use the per-source split graphs (the source encoding runs once per source). ``None``: when
            the export has them (for torch, the fp32 files decide: it builds the split from the checkpoint).
        frame_step: run each frame as the one ``frame_step`` graph (with the split). ``None``: when the export
            has it at this precision.
        device: the torch backend's device (``cuda`` for its fp16).
        compile, on_compile: the torch backend's ``torch.compile`` (default on CUDA) and its progress lines.
        animator_options: ``relative``, ``adapt_scale``, ``fit``.
    """
    files = "fp32" if kind == "torch" else precision  # torch runs the checkpoint; the files only name the graphs
    if split is None:
        split = exported.has_split(files)
    elif split and not exported.has_split(files):
        raise ExportFolderError(f"{exported.dir} has no per-source split graphs at {precision}; export again with this "
                        "version of fomm-export")
    if frame_step is None:
        frame_step = bool(split) and exported.has_frame_step(files)
    elif frame_step and not (split and exported.has_frame_step(files)):
        raise ExportFolderError(f"{exported.dir} has no frame_step graph at {precision}" +
                                ("" if split else " (it needs the split graphs: drop --no-split)") +
                                "; export again with this version of fomm-export, or pass --no-frame-step")

    def backend(graph: str, activate: bool = True) -> Backend:
        made = make_backend(kind, exported, graph, precision, ckpt=ckpt, config=config, providers=providers,
                            device=device, compile=compile, on_compile=on_compile)
        return made.activate() if activate else made

    kp = backend("kp_detector")
    if split:
        # With frame_step, generator_frame runs only when a float result is asked for: opened on first use.
        return Animator(kp, None, exported.frame_size, source_encoder=backend("source_encoder"),
                        generator_frame=backend("generator_frame", activate=not frame_step),
                        frame_step=backend(STEP_GRAPH) if frame_step else None, **animator_options)
    return Animator(kp, backend("generator"), exported.frame_size, **animator_options)
