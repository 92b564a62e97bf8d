"""Vitrine's load benchmark: the service against its in-process ceiling and against peers (`python -m bench`)."""

import app  # noqa: F401  (first: turns off onnxruntime's telemetry before a submodule imports it)
