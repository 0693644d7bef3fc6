"""Checkpoint -> ONNX graphs (and TensorRT engines) with a manifest and measured parity."""
