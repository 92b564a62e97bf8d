"""The catalogue options every result script here takes, and the splits they give.

The defaults are the default config's (seed 1234) read through the main work folder's cached catalogue,
from the repository root.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from export.config import ExportConfig
from export.pipeline import Splits, prepare


def catalogue_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser described by the first line of `doc`, with --config, --data and --work."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("export/configs/product-classifier.toml"))
    parser.add_argument("--data", type=Path, default=Path("../shared/data/products"))
    parser.add_argument("--work", type=Path, default=Path("runs/product-classifier"))
    return parser


def catalogue_splits(args: argparse.Namespace) -> tuple[ExportConfig, Splits]:
    """The config the options name, and its train/validation/test splits."""
    config = ExportConfig.load(args.config)
    return config, prepare(args.data, config, args.work)
