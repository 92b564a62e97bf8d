"""Vitrine model lifecycle: catalogue export to a versioned, validated ONNX model folder."""

import app  # noqa: F401  (first: turns off onnxruntime's telemetry before a submodule imports it)
