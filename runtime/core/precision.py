"""The precision policy, in one place: which precisions exist, which graph and which block runs in fp32, fp16
or int8, what the files of each precision are called, and how far a reduced precision may be from fp32.

The exporter builds its fp16 and int8 graphs from it, the manifest names files by it, the torch backend runs
the same blocks in half precision on CUDA, and the benchmarks and comparisons judge by its budgets and
tolerances. Change the policy here and every one of them follows. The measurements behind the numbers are in
``benchmarks/RESULTS.md`` and ``docs/export.md``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .errors import InputError

# The precisions a graph file can have, and the suffix its file name carries.
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
PRECISION_SUFFIX: dict[str, str] = {"fp32": "", "fp16": ".fp16", "int8": ".int8"}
# What fomm-export --precision writes: each choice's precisions (fp32 always: the others are judged against it).
EXPORT_PRECISIONS: dict[str, tuple[str, ...]] = {
    "fp32": ("fp32",), "fp16": ("fp32", "fp16"), "int8": ("fp32", "int8"), "all": ("fp32", "fp16", "int8")}

# ---- which graphs and blocks run in reduced precision ------------------------------------------------------

# Graphs that stay fully fp32 in an fp16 deployment (their *.fp16.onnx holds the fp32 graph): the keypoint
# detector's temperature-0.1 softmax turns fp16 feature errors into keypoint jumps (the emulation's worst case
# on the golden fixture is over the keypoint budget), and it is a small share of a step.
FP32_AT_FP16: tuple[str, ...] = ("kp_detector",)
# Graphs that int8 keeps in fp32 (an int8 deployment uses their fp32 files): the keypoint detector, for the
# same reason as at fp16; the source encoder, which runs once per source, so int8 saves no per-frame time,
# and whose quantisation cost most of the int8 quality on the bundled model.
FP32_AT_INT8: tuple[str, ...] = ("kp_detector", "source_encoder")

# Module scopes (as they appear in node names of the TorchScript exporter, e.g.
# "/generator/bottleneck/r0/conv1/Conv" or, for the split graphs, "/bottleneck/r0/conv1/Conv"; and as module
# paths in the PyTorch model) whose work is convolutional feature extraction and tolerates fp16. Anything else
# stays fp32: the keypoint heads ("/kp/", "/jacobian/"), the anti-alias downsampling ("/down/"), heatmaps,
# motions and grid sampling. int8 quantises the convolutions of the same scopes.
FP16_SCOPES: tuple[str, ...] = (
    "/predictor/",  # keypoint-detector hourglass
    "/first/",
    "/down_blocks.",
    "/bottleneck/",
    "/up_blocks.",
    "/final/",
    "/hourglass/",  # dense-motion hourglass
    "/mask/",
    "/occlusion/",
)
# The operators that compute in fp16 inside those scopes.
FP16_OPS: frozenset[str] = frozenset({"Conv", "BatchNormalization", "Relu", "AveragePool", "Resize", "Concat",
                                      "Add", "Mul"})


def check_precision(precision: str) -> str:
    """``precision`` when it is one of :data:`PRECISIONS`; otherwise an :class:`InputError` listing them."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision '{precision}'; choose from {', '.join(PRECISIONS)}")
    return precision


def stored_precision(graph: str, precision: str) -> str:
    """The precision of the file that runs ``graph`` in a ``precision`` deployment (int8 keeps some fp32)."""
    check_precision(precision)
    return "fp32" if precision == "int8" and graph in FP32_AT_INT8 else precision


def runs_fp16(graph: str) -> bool:
    """Whether an fp16 deployment runs any of ``graph`` in half precision."""
    return graph not in FP32_AT_FP16


def in_fp16_scope(name: str) -> bool:
    """Whether a node name or module path lies in one of the blocks that run in fp16 (:data:`FP16_SCOPES`)."""
    return any(scope in name for scope in FP16_SCOPES)


# Graphs made of other graphs: per part, the scope its node names (and module paths) start with, and the graph
# whose policy that part follows; the first scope that matches decides. ``frame_step`` is the keypoint
# detector, the relative normalisation and the per-frame generator in one graph; its parts keep the precisions
# they have as graphs of their own. Its generator part has no scope of its own (the TorchScript exporter names
# scopes by module calls, and generator_frame calls the generator's sub-modules directly, as in the
# generator_frame graph), so it is the rest; the glue (normalisation, uint8 conversions) lies in no fp16 block.
COMPOSITE_PARTS: dict[str, dict[str, str]] = {
    "frame_step": {"/kp_detector/": "kp_detector", "/": "generator_frame"},
}


def part_of(graph: str, name: str) -> str:
    """The graph whose precision policy a node (or module path) of ``graph`` follows: ``graph`` itself, or for
    a composite graph (:data:`COMPOSITE_PARTS`) the part its name lies in (``""``: none)."""
    parts = COMPOSITE_PARTS.get(graph)
    if parts is None:
        return graph
    return next((part for scope, part in parts.items() if name.startswith(scope)), "")


def runs_in_fp16(graph: str, name: str) -> bool:
    """Whether the node (or module path) ``name`` of ``graph`` computes in half precision in an fp16
    deployment: it lies in an fp16 block of a part that runs fp16."""
    part = part_of(graph, name)
    return bool(part) and runs_fp16(part) and in_fp16_scope(name)


def quantised_at_int8(graph: str, name: str) -> bool:
    """Whether the node ``name`` of ``graph`` may be quantised in an int8 deployment: its part is not one that
    int8 keeps in fp32 (:data:`FP32_AT_INT8`). Which of those nodes are quantised is ``export/quantize.py``'s."""
    part = part_of(graph, name)
    return bool(part) and part not in FP32_AT_INT8


# ---- how far from fp32 -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Budget:
    """How far a reduced-precision graph, or deployed pair of graphs, may be from the fp32 graphs.

    kp_max_px: largest keypoint error, in pixels of the model's input frame (``kp_value``).
    prediction_min_psnr_db: lowest PSNR of ``prediction`` (peak 1.0) against fp32.
    Intermediate outputs (``source_features``, ``source_down``) are judged through the graph that consumes them.
    """

    kp_max_px: float
    prediction_min_psnr_db: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


# fp16 against fp32, judged at export on the emulation's worst case (export/fp16_emulation.py).
FP16_BUDGET = Budget(kp_max_px=2.0, prediction_min_psnr_db=40.0)
# int8 (QDQ, ONNX Runtime CPU) against fp32, on held-out real frames. The keypoint budget only guards the rule
# that the keypoint detector stays fp32. A quantised source encoder falls under this PSNR on the bundled model,
# which is why it stays fp32. How close int8 comes depends on the CPU's int8 kernels (AVX2, VNNI, AMX), so a
# random-weight model may fail it on one CPU and pass on another: no test relies on either.
INT8_BUDGET = Budget(kp_max_px=2.0, prediction_min_psnr_db=35.0)
BUDGETS: dict[str, Budget] = {"fp16": FP16_BUDGET, "int8": INT8_BUDGET}


def budget(precision: str) -> Budget:
    try:
        return BUDGETS[precision]
    except KeyError:
        raise KeyError(f"no reduced-precision budget for {precision}") from None


# Max abs error allowed between two backends, by (precision, output). The fp32 rows follow the golden fixture's
# suggested tolerances; fp16 and int8 graphs are judged against fp32 by the budgets above at export, and these
# rows serve fomm-compare between two backends of the same precision.
TOLERANCES: dict[tuple[str, str], float] = {
    ("fp32", "kp_value"): 5e-5,
    ("fp32", "kp_jacobian"): 5e-5,
    ("fp32", "prediction"): 2e-4,
    ("fp32", "source_features"): 2e-4,
    ("fp32", "source_down"): 2e-5,
    ("fp32", "frame"): 1.0,  # frame_step's uint8 frame, in 8-bit levels: a value on a rounding boundary may flip
    ("fp16", "kp_value"): 2e-2,
    ("fp16", "kp_jacobian"): 5e-2,
    ("fp16", "prediction"): 1e-1,
    ("fp16", "source_features"): 1e-1,
    ("fp16", "source_down"): 1e-3,
    ("fp16", "frame"): 26.0,  # prediction's 1e-1, in 8-bit levels
    ("int8", "kp_value"): 5e-2,
    ("int8", "kp_jacobian"): 1e-1,
    ("int8", "prediction"): 3e-1,
    ("int8", "source_features"): 5e-1,
    ("int8", "source_down"): 5e-3,
    ("int8", "frame"): 77.0,  # prediction's 3e-1, in 8-bit levels
}


def tolerance(precision: str, output: str) -> float:
    try:
        return TOLERANCES[(precision, output)]
    except KeyError:
        raise KeyError(f"no tolerance for output '{output}' at {precision}") from None
