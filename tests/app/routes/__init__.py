"""Tests of app.routes."""
