"""Vitrine model lifecycle: catalogue export to a versioned, validated ONNX model folder."""
