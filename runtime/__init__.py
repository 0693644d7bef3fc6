"""Deployment runtime: numpy, OpenCV, ONNX Runtime and TensorRT. Never imports torch."""
