"""Backends that run exported graphs (ONNX Runtime now; TensorRT and the torch reference with issue #4)."""
