"""Vitrine: product-image recognition served over HTTP."""

__version__ = "0.1.0"
