"""``manifest.json`` of an export folder, and the names of every artefact in it.

The manifest is written and read only through :class:`Manifest`; :func:`graph_file_name` and
:func:`engine_file_name` are the only places that turn a graph and a precision into a file name.
Torch-free: it reads and writes JSON and names files.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import platform
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .contract import GraphSpec
from .errors import ExportFolderError
from .fileio import atomic_path, sha256_file
from .precision import PRECISION_SUFFIX, stored_precision

__all__ = ["MANIFEST_FORMAT", "MANIFEST_NAME", "CheckpointInfo", "GraphEntry",
           "Manifest", "engine_file_name", "graph_file_name", "graph_key", "listed_files", "tool_versions"]

# Version 2: typed parity results (``parity.results`` per graph, ``parity.pipelines`` for the deployed pairs).
MANIFEST_FORMAT = "fomm-deploy-manifest/2"
MANIFEST_NAME = "manifest.json"


def graph_key(graph: str, precision: str) -> str:
    """The manifest key of a graph file: ``generator``, ``generator.fp16``, ``generator_frame.int8``."""
    return graph + PRECISION_SUFFIX[stored_precision(graph, precision)]


def graph_file_name(graph: str, precision: str) -> str:
    """The ONNX file of ``graph`` in a ``precision`` deployment: ``<graph>.onnx``, ``<graph>.fp16.onnx``,
    ``<graph>.int8.onnx``; at int8 the graphs in ``precision.FP32_AT_INT8`` name their fp32 file."""
    return graph_key(graph, precision) + ".onnx"


def engine_file_name(graph: str, precision: str, digest: str) -> str:
    """A TensorRT engine's file name; ``digest`` is its cache key's (so a stale engine is never picked up)."""
    return f"{graph}.{precision}.{digest}.engine"


def tool_versions() -> dict[str, str]:
    """Python and the versions of the installed packages that shape an export or a measurement.

    Read from package metadata, so nothing heavy (torch) is imported.
    """
    out = {"python": platform.python_version()}
    for dist in ("fomm-deploy", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt", "numpy",
                 "opencv-python"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


@dataclass(frozen=True)
class CheckpointInfo:
    path: str
    sha256: str
    epoch: int | None


@dataclass(frozen=True)
class GraphEntry:
    """One graph file: its name in the folder, its precision, its sha256 and its contract."""

    file: str
    precision: str
    sha256: str
    spec: GraphSpec

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "precision": self.precision, "sha256": self.sha256, **self.spec.to_dict()}

    @classmethod
    def from_dict(cls, key: str, data: dict[str, Any]) -> "GraphEntry":
        name = key.split(".")[0]
        return cls(data["file"], data["precision"], data["sha256"], GraphSpec.from_dict(name, data))


@dataclass
class Manifest:
    """What ``manifest.json`` holds. ``graphs`` is keyed by :func:`graph_key`; ``parity`` is the export's
    measurements (see ``export/exporter.py``); ``config`` is ``FommConfig.to_dict()``."""

    checkpoint: CheckpointInfo
    config_name: str
    config: dict[str, Any]
    opset: int
    align_corners: bool
    frame_size: tuple[int, int]
    num_kp: int
    estimate_jacobian: bool
    graphs: dict[str, GraphEntry] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=tool_versions)
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    format: str = MANIFEST_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format, "created": self.created,
            "checkpoint": {"path": self.checkpoint.path, "sha256": self.checkpoint.sha256,
                           "epoch": self.checkpoint.epoch},
            "config_name": self.config_name, "config": self.config, "opset": self.opset,
            "align_corners": self.align_corners, "frame_size": list(self.frame_size), "num_kp": self.num_kp,
            "estimate_jacobian": self.estimate_jacobian,
            "graphs": {k: g.to_dict() for k, g in self.graphs.items()},
            "parity": self.parity, "tools": self.tools,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Manifest":
        ck = data["checkpoint"]
        return cls(
            checkpoint=CheckpointInfo(str(ck["path"]), str(ck["sha256"]), ck.get("epoch")),
            config_name=str(data.get("config_name", "")), config=dict(data["config"]), opset=int(data["opset"]),
            align_corners=bool(data["align_corners"]), frame_size=tuple(data["frame_size"]),
            num_kp=int(data["num_kp"]), estimate_jacobian=bool(data["estimate_jacobian"]),
            graphs={k: GraphEntry.from_dict(k, g) for k, g in data["graphs"].items()},
            parity=dict(data.get("parity", {})), tools=dict(data.get("tools", {})),
            created=str(data.get("created", "")), format=str(data["format"]),
        )

    def verified_graph(self, folder: str | Path, graph: str, precision: str) -> Path:
        """The path of ``graph`` at ``precision`` in ``folder``, once its bytes are the ones this manifest
        recorded (their sha256). Hashed once per process for each file's path, size and mtime.

        Raises:
            ExportFolderError: the manifest records no such graph, the file is missing, or its sha256 differs
                (a graph copied in from another export, or damaged): the message names the file.
        """
        key = graph_key(graph, precision)
        entry = self.graphs.get(key)
        if entry is None:
            raise ExportFolderError(f"{Path(folder) / MANIFEST_NAME} records no {key} graph; export it with "
                                    f"fomm-export --precision {precision}")
        path = Path(folder) / entry.file
        try:
            found = _graph_sha256(path)
        except OSError as exc:
            raise ExportFolderError(f"cannot read {path} ({exc.strerror or exc}); export again") from None
        if found != entry.sha256:
            raise ExportFolderError(f"{path} is not the graph this export wrote: its sha256 is {found[:12]}..., "
                                    f"{MANIFEST_NAME} records {entry.sha256[:12]}... (a file copied in from another "
                                    "export, or damaged); export again, or copy the whole export folder")
        return path

    def has_file(self, folder: Path, graph: str, precision: str) -> bool:
        """Whether the folder has ``graph`` at ``precision``, recorded here and present on disk."""
        key = graph_key(graph, precision)
        return key in self.graphs and (Path(folder) / self.graphs[key].file).is_file()

    def write(self, folder: str | Path) -> Path:
        """Write ``folder/manifest.json`` atomically."""
        path = Path(folder) / MANIFEST_NAME
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, folder: str | Path) -> "Manifest":
        """Read and check ``folder/manifest.json``.

        Raises:
            ExportFolderError: no folder, no manifest, damaged JSON, or a format this version does not read;
                the message says to export again.
        """
        folder = Path(folder)
        path = folder / MANIFEST_NAME
        if not folder.is_dir():
            raise ExportFolderError(f"no export folder at {folder}: run fomm-export first, or pass --onnx DIR"
                                    + _exports_hint(folder))
        if not path.is_file():
            inside = _exports_hint(folder)
            if inside:
                raise ExportFolderError(f"{folder} is not an export folder itself (no {MANIFEST_NAME})" + inside)
            raise ExportFolderError(f"{folder} has no {MANIFEST_NAME}: it was not written by fomm-export; "
                                    "export again")
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ExportFolderError(f"{path} is damaged ({exc}); export again") from None
        found = data.get("format") if isinstance(data, dict) else None
        if found != MANIFEST_FORMAT:
            what = "has no format field" if found is None else f"has format {found!r}"
            raise ExportFolderError(f"{path} {what}; this version reads {MANIFEST_FORMAT!r}: export again with "
                                    "this version of fomm-export")
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ExportFolderError(f"{path} is damaged ({type(exc).__name__}: {exc}); export again") from None


# (path, size, mtime in ns) -> sha256 of the graph files verified in this process: a server opening the same
# graphs for each replica or session hashes each file once; a file rewritten since (size or mtime) is hashed again.
_GRAPH_SHA256: dict[tuple[str, int, int], str] = {}


def _graph_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    digest = _GRAPH_SHA256.get(key)
    if digest is None:
        digest = _GRAPH_SHA256[key] = sha256_file(path)
    return digest


def listed_files(folder: str | Path) -> set[str] | None:
    """The names of the files an export wrote into ``folder``, as its manifest lists them: ``manifest.json``
    and each graph's file (with its ``.data`` file of external weights, if any). Read leniently, any format
    version: this answers what an earlier fomm-export may replace, not whether the folder can be loaded.
    None when the folder has no manifest that can be read as one."""
    path = Path(folder) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text())
        graphs = data["graphs"]
        files = {str(g["file"]) for g in graphs.values()}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        return None
    return {MANIFEST_NAME} | files | {f + ".data" for f in files}


def _exports_hint(folder: Path) -> str:
    """``"; exports found: a, b: pass --onnx a"`` for export folders inside ``folder`` (or beside it), else ``""``."""
    # An existing folder: the exports inside it (``exported`` after ``make demo`` holds ``exported/demo``);
    # a missing one: its siblings.
    places = [folder] if folder.is_dir() else ([folder.parent] if folder.parent.is_dir() else [])
    found: list[str] = []
    for place in places:
        try:
            found += sorted(str(p.parent) for p in place.glob(f"*/{MANIFEST_NAME}"))
        except OSError:
            continue
    found = list(dict.fromkeys(found))[:5]
    if not found:
        return ""
    return f"; exports found: {', '.join(found)}: pass --onnx {shlex.quote(found[0])}"

