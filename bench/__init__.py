"""Vitrine's load benchmark: the service against its in-process ceiling and against peers (`python -m bench`)."""
