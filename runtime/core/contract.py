"""The graph contract: named inputs and outputs of every exported graph, with dtype, shape and range.

Export writes graphs that honour it (and records it in ``manifest.json``); every backend checks its
inputs against it; comparisons (``compare.py``) use its tolerance table and reduced-precision budgets. ``B`` is the dynamic batch axis; H, W and K are
fixed by the config.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .config import FommConfig
from .errors import InputMismatchError

__all__ = ["OPSET", "TOLERANCES", "BUDGETS", "FP16_BUDGET", "INT8_BUDGET", "Budget", "GraphSpec", "TensorSpec",
           "budget", "check_feed", "graph_specs", "tolerance"]

OPSET = 16  # GridSample exists since 16; opset 20 renames its mode to 'linear', which TensorRT misreads.

Dim = int | str


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output of a graph.

    Attributes:
        name: the ONNX tensor name (also the feed / result dict key).
        shape: dims; ``"B"`` is the dynamic batch axis, every other dim is a fixed int from the config.
        dtype: numpy dtype name: ``float32`` for every graph's I/O (fp16 and int8 graphs included), except
            the frames that ``frame_step`` takes and gives, which are ``uint8``.
        range: the documented value range, e.g. ``"[0, 1]"`` for images, ``"[-1, 1]"`` for keypoints;
            empty when unbounded (features, jacobians). Informative: not checked at run time.
        doc: one line saying what the tensor is.
    """

    name: str
    shape: tuple[Dim, ...]
    dtype: str = "float32"
    range: str = ""
    doc: str = ""

    def concrete_shape(self, batch: int) -> tuple[int, ...]:
        return tuple(batch if d == "B" else int(d) for d in self.shape)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


@dataclass(frozen=True)
class GraphSpec:
    """The contract of one graph: its name and its ordered inputs and outputs (ONNX order).

    Written into ``manifest.json`` by export (``to_dict``) and compared with :func:`graph_specs` on load.
    """

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs]}

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any]) -> "GraphSpec":
        def tensors(items):
            return tuple(TensorSpec(t["name"], tuple(t["shape"]), t.get("dtype", "float32"), t.get("range", ""),
                                    t.get("doc", "")) for t in items)

        return cls(name, tensors(data["inputs"]), tensors(data["outputs"]))


def graph_specs(cfg: FommConfig) -> dict[str, GraphSpec]:
    """The contract of every graph for a config.

    ``kp_detector`` and ``generator`` are the reference pair. ``source_encoder`` + ``generator_frame`` split
    the generator so that the work that depends only on the source runs once per source. ``frame_step`` is a
    whole frame in one graph (keypoints, normalisation, ``generator_frame``): uint8 in, uint8 out.
    """
    h, w = cfg.frame_size
    c, k = cfg.num_channels, cfg.num_kp
    image = dict(shape=("B", c, h, w), range="[0, 1]")
    kp_outputs = [TensorSpec("kp_value", ("B", k, 2), range="[-1, 1]", doc="keypoints (x, y)")]
    if cfg.estimate_jacobian:
        kp_outputs.append(TensorSpec("kp_jacobian", ("B", k, 2, 2), doc="local 2x2 jacobians, row-major"))
    kp = GraphSpec("kp_detector", (TensorSpec("image", doc="RGB frame", **image),), tuple(kp_outputs))

    gen_inputs = [TensorSpec("source", doc="RGB source image", **image)]
    for who in ("source", "driving"):
        gen_inputs.append(TensorSpec(f"kp_{who}_value", ("B", k, 2), range="[-1, 1]",
                                     doc=f"{who} keypoints" + (" (normalised)" if who == "driving" else "")))
        if cfg.estimate_jacobian:
            gen_inputs.append(TensorSpec(f"kp_{who}_jacobian", ("B", k, 2, 2), doc=f"{who} jacobians"))
    prediction = TensorSpec("prediction", doc="animated RGB frame", **image)
    gen = GraphSpec("generator", tuple(gen_inputs), (prediction,))
    specs = {"kp_detector": kp, "generator": gen}

    # The per-source split: what depends only on the source, and the per-frame rest of the generator.
    g = cfg.model_params.generator_params
    if g.dense_motion_params is not None:
        n = g.num_down_blocks
        feat = (min(g.max_features, g.block_expansion * 2**n), h // 2**n, w // 2**n)
        step = int(1 / g.dense_motion_params.scale_factor)
        down = (c, -(-h // step), -(-w // step))
        features = TensorSpec("source_features", ("B", *feat), doc="generator encoding of the source")
        source_down = TensorSpec("source_down", ("B", *down), range="[0, 1]",
                                 doc="source at the dense-motion resolution")
        specs["source_encoder"] = GraphSpec("source_encoder", (gen_inputs[0],), (features, source_down))
        specs["generator_frame"] = GraphSpec("generator_frame", (features, source_down, *gen_inputs[1:]),
                                             (prediction,))
        specs["frame_step"] = _frame_step_spec(cfg, features, source_down, gen_inputs)
    return specs


def _frame_step_spec(cfg: FommConfig, features: TensorSpec, source_down: TensorSpec,
                     gen_inputs: list[TensorSpec]) -> GraphSpec:
    """One whole frame of an animation session: the driving frame's keypoints, their relative normalisation
    (``keypoints.relative_motion``) and the per-frame generator, from a uint8 frame to a uint8 frame.

    The session's constants are inputs: the source encoding, the source keypoints, the reference ("initial")
    driving keypoints, the movement scale and whether motion is relative (per row, so sessions with different
    options share a batch). Absolute motion passes the driving keypoints through unchanged (the initial
    keypoints are then placeholders: zeros and identity jacobians, see ``feeds.step_inputs``).
    """
    h, w = cfg.frame_size
    c, k = cfg.num_channels, cfg.num_kp
    frame = dict(shape=("B", h, w, c), dtype="uint8", range="[0, 255]")
    kp = [t for t in gen_inputs[1:] if t.name.startswith("kp_source")]
    initial = [TensorSpec("kp_initial_value", ("B", k, 2), range="[-1, 1]",
                          doc="keypoints of the reference driving frame (absolute motion: zeros)")]
    if cfg.estimate_jacobian:
        initial.append(TensorSpec("kp_initial_jacobian", ("B", k, 2, 2),
                                  doc="jacobians of the reference driving frame (absolute motion: identity)"))
    scale = TensorSpec("movement_scale", ("B", 1), doc="motion scale: 1, or the adapt-scale ratio of hull sizes")
    relative = TensorSpec("relative", ("B", 1), range="{0, 1}",
                          doc="1: relative motion; 0: absolute (the driving keypoints as detected)")
    inputs = (TensorSpec("driving", doc="driving RGB frame, HWC", **frame), features, source_down, *kp, *initial,
              scale, relative)
    return GraphSpec("frame_step", inputs, (TensorSpec("frame", doc="animated RGB frame, HWC", **frame),))


def check_feed(spec: GraphSpec, feed: dict[str, np.ndarray]) -> int:
    """Check a feed against the contract; returns the batch size.

    Raises:
        InputMismatchError: missing or unexpected name, wrong dtype or shape, inconsistent batch.
    """
    names = set(feed)
    expected = set(spec.input_names)
    if names != expected:
        missing, extra = sorted(expected - names), sorted(names - expected)
        parts = ([f"missing {missing}"] if missing else []) + ([f"unexpected {extra}"] if extra else [])
        raise InputMismatchError(f"{spec.name} | inputs: {', '.join(parts)}. Expected {spec.input_names}")
    batch = None
    for t in spec.inputs:
        arr = feed[t.name]
        if not isinstance(arr, np.ndarray):
            raise InputMismatchError(f"{spec.name} | input '{t.name}': got {type(arr).__name__}, expected a numpy array")
        if arr.dtype != np.dtype(t.dtype):
            raise InputMismatchError(f"{spec.name} | input '{t.name}': got dtype {arr.dtype}. Expected {t.dtype}")
        ok = arr.ndim == len(t.shape) and all(d == "B" or d == s for d, s in zip(t.shape, arr.shape))
        if not ok:
            shown = "(" + ", ".join(str(d) for d in t.shape) + ")"
            raise InputMismatchError(f"{spec.name} | input '{t.name}': got shape {arr.shape}. Expected {shown}. "
                                     "Was it exported with another config?")
        if batch is None:
            batch = arr.shape[0]
        elif arr.shape[0] != batch:
            raise InputMismatchError(f"{spec.name} | input '{t.name}': batch {arr.shape[0]} differs from {batch}")
    return int(batch or 0)
