"""Peer servers on the same model and load: a naive FastAPI server and a BentoML service."""
