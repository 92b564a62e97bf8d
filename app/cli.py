"""The `vitrine` command: `serve` the model, or run the `export` pipeline (which needs the export extra)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import signal
import sys
from collections.abc import Iterator

import uvicorn

from app.errors import ModelLoadError


def serve(argv: list[str]) -> int:
    """Start one uvicorn worker with the app; every setting also comes from VITRINE_* variables."""
    from app.main import create_app
    from app.settings import Settings

    parser = argparse.ArgumentParser(prog="vitrine serve", description="Serve the product-image model over HTTP.")
    parser.add_argument("--host", help="address to listen on (VITRINE_HOST, default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port to listen on (VITRINE_PORT, default 8000)")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = Settings(**overrides)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        # Open the model before the server starts, so that a missing or corrupt model, or labels that do
        # not match its outputs, end the process with one line and a non-zero exit; the app serves it.
        from app.core import open_runtime

        runtime = open_runtime(settings)
    except ModelLoadError as exc:
        print(f"vitrine: cannot load model: {exc.message}", file=sys.stderr)
        return 2
    # One worker: the batcher, the session and the metrics registry live in this process.
    config = uvicorn.Config(
        create_app(settings, runtime),
        host=settings.host,
        port=settings.port,
        workers=1,
        log_level=settings.log_level,
        loop="auto",
        http="auto",
        access_log=False,
        # uvicorn's own lines ("Started server process", "Shutting down", ...) go through the root logger set
        # up above, in the service's format with a timestamp, instead of uvicorn's un-timestamped handler.
        log_config=None,
        # uvicorn takes whole seconds: round up, so that a fractional grace is never cut short.
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s),
    )
    server = GracefulServer(config)
    server.run()
    return 0 if server.started else 1


class GracefulServer(uvicorn.Server):
    """uvicorn's server, except that a SIGTERM/SIGINT ending in a finished drain exits 0.

    uvicorn re-raises the captured signal after its graceful shutdown, so the process would end with
    status -15 even though every accepted request was answered.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `vitrine` console script."""
    argv = sys.argv[1:] if argv is None else argv
    commands = "serve | export | bench"
    if not argv or argv[0] in ("-h", "--help"):
        print(
            f"usage: vitrine {{{commands}}} [options]\n\n  serve   run the HTTP service\n"
            "  export  train, evaluate, convert and quantize a model (needs the 'export' extra)\n"
            "  bench   load-test the service against its in-process ceiling and peers"
        )
        return 0
    command, rest = argv[0], argv[1:]
    if command == "serve":
        return serve(rest)
    if command in ("export", "bench"):
        # The service never imports the training or benchmark code: each runs as its own program.
        os.execv(sys.executable, [sys.executable, "-m", command, *rest])
    print(f"vitrine: unknown command {command!r} (expected {commands})", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
