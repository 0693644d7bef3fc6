"""How far each path is from what this CPU can do: work counted from the exported graphs, and measured peaks.

*Work* is the multiply-adds of the graphs' convolutions (2 operations each; the convolutions are over 97%
of a FOMM step), counted from the ONNX files at batch 1 (shapes from one ONNX Runtime run on zeros). A ``Conv`` whose
weights come out of a ``DequantizeLinear`` (the QDQ form ``fomm-export --precision int8`` writes, which
ONNX Runtime fuses into ``QLinearConv``) counts as int8; every other one as float (fp16 graphs count as
float: ONNX Runtime's CPU provider runs them in fp32).

*Peaks* (``fomm-bench --peak``) are ONNX Runtime's own speed on the convolution FOMM has most of, a 3x3
256 -> 256 convolution at 64x64, batch 1, fp32 and int8 (``QLinearConv``, uint8 activations, per-channel
int8 weights), timed for about a second each (half a second per sample in fomm-bench) on the benchmark's
threads. Each is timed as a chain of
``PEAK_DEPTH`` such convolutions, so the layout changes ONNX Runtime puts around the first and the last
(NCHW <-> NHWC for uint8, the blocked layout for fp32) weigh as little as they do inside a FOMM graph.
``fomm-bench`` samples the peaks before the first path and after each, and each path's floor uses the two
samples around it: the speed of a shared machine drifts within minutes (``benchmarks/RESULTS.md`` has
both measurements).

The *floor* of a path is ``int8 work / int8 peak + float work / fp32 peak``; ``x floor`` is its measured
median over that. A path at 1.0x floor would run every convolution at the peak and spend nothing else.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

# The peak microbenchmark's convolution, and how many of them run back to back.
PEAK_CHANNELS, PEAK_SIZE, PEAK_KERNEL, PEAK_DEPTH = 256, 64, 3, 4


@dataclass
class Work:
    int8_gop: float = 0.0
    float_gflop: float = 0.0

    def __add__(self, other: "Work") -> "Work":
        return Work(self.int8_gop + other.int8_gop, self.float_gflop + other.float_gflop)


@dataclass
class Peaks:
    fp32_gflops: float
    int8_gops: float
    threads: int
    seconds: float
    # every measurement behind the two means (one per measure_peaks call)
    fp32_samples: list[float] = field(default_factory=list)
    int8_samples: list[float] = field(default_factory=list)

    @classmethod
    def mean(cls, *runs: "Peaks") -> "Peaks":
        """One set of peaks from several measurements of the same machine: the means, and every sample."""
        fp32 = [x for r in runs for x in (r.fp32_samples or [r.fp32_gflops])]
        int8 = [x for r in runs for x in (r.int8_samples or [r.int8_gops])]
        return cls(float(np.mean(fp32)), float(np.mean(int8)), runs[0].threads, sum(r.seconds for r in runs), fp32, int8)

    def floor_ms(self, work: Work) -> float:
        return 1000 * (work.int8_gop / self.int8_gops + work.float_gflop / self.fp32_gflops)

    def to_json(self) -> dict:
        return asdict(self)


def _conv_output_shapes(model) -> dict[str, tuple[int, ...]]:
    """The shape of every Conv output at batch 1, from one ONNX Runtime run of the graph on zeros.

    (ONNX's static shape inference loses the shapes behind the dense-motion network's computed reshapes.)
    """
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    convs = [n.output[0] for n in probe.graph.node if n.op_type == "Conv" and n.output[0] not in known]
    probe.graph.output.extend(onnx.ValueInfoProto(name=name) for name in convs)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every Conv output
    so.log_severity_level = 3
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    dtypes = {"tensor(uint8)": np.uint8}  # frame_step's frames; every other input is float32
    feeds = {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], dtypes.get(i.type, np.float32))
             for i in sess.get_inputs()}
    names = [o.name for o in sess.get_outputs()]
    return {n: tuple(v.shape) for n, v in zip(names, sess.run(None, feeds))}


def graph_work(path: str | Path) -> Work:
    """The convolution work of one ONNX graph at batch 1."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    shapes = _conv_output_shapes(model)
    weights = {i.name: list(i.dims) for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    for n in model.graph.node:  # a constant weight folded into a Constant node
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    weights[n.output[0]] = list(numpy_helper.to_array(a.t).shape)
    work = Work()
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        w_name, quantised = node.input[1], False
        src = producer.get(w_name)
        if src is not None and src.op_type == "DequantizeLinear":
            w_name, quantised = src.input[0], True
        macs = int(np.prod(shapes[node.output[0]])) * int(np.prod(weights[w_name][1:]))  # C_in/groups * kh * kw
        if quantised:
            work.int8_gop += 2 * macs / 1e9
        else:
            work.float_gflop += 2 * macs / 1e9
    return work


def _peak_models(c: int, hw: int, k: int, depth: int = PEAK_DEPTH):
    """fp32 and int8 graphs of ``depth`` chained k x k, c -> c convolutions at hw x hw, with an input each."""
    from onnx import TensorProto as T, helper as h, numpy_helper as nh

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((c, c, k, k)) * 0.05).astype(np.float32)
    pad = [k // 2] * 4
    names = ["x"] + [f"y{i}" for i in range(depth)]
    fp32 = h.make_model(h.make_graph(
        [h.make_node("Conv", [a, "w"], [b], pads=pad) for a, b in zip(names, names[1:])], "peak_fp32",
        [h.make_tensor_value_info("x", T.FLOAT, [1, c, hw, hw])], [h.make_tensor_value_info(names[-1], T.FLOAT, None)],
        [nh.from_array(w, "w")]), opset_imports=[h.make_opsetid("", 16)])
    w_scale = (np.abs(w).reshape(c, -1).max(axis=1) / 127).astype(np.float32)
    w_q = np.round(w / w_scale[:, None, None, None]).astype(np.int8)
    inits = [nh.from_array(w_q, "w"), nh.from_array(w_scale, "w_scale"), nh.from_array(np.zeros(c, np.int8), "w_zp"),
             nh.from_array(np.array(0.02, np.float32), "x_scale"), nh.from_array(np.array(128, np.uint8), "x_zp")]
    int8 = h.make_model(h.make_graph(
        [h.make_node("QLinearConv", [a, "x_scale", "x_zp", "w", "w_scale", "w_zp", "x_scale", "x_zp"], [b], pads=pad)
         for a, b in zip(names, names[1:])], "peak_int8",
        [h.make_tensor_value_info("x", T.UINT8, [1, c, hw, hw])], [h.make_tensor_value_info(names[-1], T.UINT8, None)],
        inits), opset_imports=[h.make_opsetid("", 16)])
    x32 = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
    x8 = rng.integers(0, 256, (1, c, hw, hw), dtype=np.uint8)
    return (fp32, x32), (int8, x8)


def measure_peaks(threads: int, seconds: float = 1.0, *, channels: int = PEAK_CHANNELS, size: int = PEAK_SIZE,
                  depth: int = PEAK_DEPTH) -> Peaks:
    """ONNX Runtime's fp32 and int8 speed on a 3x3 ``channels`` -> ``channels`` conv at ``size`` x ``size``
    (``depth`` of them chained)."""
    import onnxruntime as ort

    t_start = time.perf_counter()
    ops = depth * 2 * channels * channels * PEAK_KERNEL ** 2 * size * size / 1e9
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    speeds = []
    for model, x in _peak_models(channels, size, PEAK_KERNEL, depth):
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        feed = {"x": x}
        for _ in range(2):
            sess.run(None, feed)
        times, t_end = [], time.perf_counter() + seconds
        while time.perf_counter() < t_end or len(times) < 5:
            t0 = time.perf_counter()
            sess.run(None, feed)
            times.append(time.perf_counter() - t0)
        speeds.append(ops / float(np.median(times)))
    return Peaks(fp32_gflops=speeds[0], int8_gops=speeds[1], threads=threads, seconds=time.perf_counter() - t_start,
                 fp32_samples=[speeds[0]], int8_samples=[speeds[1]])
