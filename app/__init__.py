"""Vitrine: product-image recognition served over HTTP."""

import os

__version__ = "0.1.0"

# onnxruntime (1.29 and later; 1.32 here) sends usage telemetry to Microsoft from Linux by default: it keeps a
# device id and an event cache under ~/.cache/Microsoft and, with no route out, held the container's exit after a
# SIGTERM for seconds while it tried to upload (docs/performance.md). A shop's service should not
# phone home unasked, so Vitrine turns it off unless the operator set ORT_DISABLE_TELEMETRY (only "1" turns it
# off). It must be set before onnxruntime initialises, hence here: `export` and `bench` import this package first.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
