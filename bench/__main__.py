"""`python -m bench`: run the load benchmark (what `vitrine bench` executes)."""

from bench.cli import main

raise SystemExit(main())
