"""Backends that run exported graphs behind one interface (``base.Backend``): ONNX Runtime (``onnxrt``),
TensorRT engines (``tensorrt``, with the small CUDA layer in ``cuda``) and the PyTorch reference
(``torch_ref``, which imports torch only when activated). ``runtime.graphs.make_backend`` picks one by name."""
