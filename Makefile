# Vitrine: `make serve` runs the service on the committed default model, `make test` runs the test suite.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
HOST   ?= 0.0.0.0
PORT   ?= 8000
DATA   ?= ../shared/data/products

.PHONY: serve test docs lint audit bench soak model fashion-mnist clean

include deploy/Makefile.include

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.serve: pyproject.toml | $(PY)
	$(PIP) install -e .
	touch $@

$(VENV)/.test: pyproject.toml | $(PY)
	$(PIP) install -e ".[dev,export,docs]"
	touch $@ $(VENV)/.serve

serve: $(VENV)/.serve
	$(VENV)/bin/vitrine serve --host $(HOST) --port $(PORT)

test: docs fashion-mnist
	$(PY) -m pytest

# The documentation site (mkdocs.yml), strict: any warning fails the build. Settings table from app/settings.py.
# No --quiet: it hides the warnings that strict mode counts, and the build then passes.
docs: $(VENV)/.test
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# Fashion-MNIST from Debian (docs/own-model.md and its test); the package puts it in /usr/share/datasets.
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
fashion-mnist: $(FASHION_MNIST)
$(FASHION_MNIST):
	apt-get install -y -q --no-install-recommends dataset-fashion-mnist || \
	    { apt-get update -q && apt-get install -y -q --no-install-recommends dataset-fashion-mnist; }

lint: $(VENV)/.test
	$(VENV)/bin/ruff check app export tests bench
	$(VENV)/bin/ruff format --check app export tests bench
	$(VENV)/bin/mypy app export tests bench

# Known vulnerabilities in the installed dependencies (needs the package index).
audit: $(VENV)/.test
	$(VENV)/bin/pip-audit --skip-editable

BENTO ?= .venv-bento

$(BENTO)/bin/bentoml:
	$(PYTHON) -m venv $(BENTO)
	$(BENTO)/bin/pip --disable-pip-version-check -q install bentoml==1.4.40 onnxruntime==1.32.0 numpy==2.4.6 pillow==13.0.0

MLSERVER ?= .venv-mlserver

# uvloop 0.23 (what mlserver 1.7.1 would pull) stops MLServer's inference worker processes at start
# ("There is no current event loop"); with 0.21 they start (0.22 not tried).
$(MLSERVER)/bin/mlserver:
	$(PYTHON) -m venv $(MLSERVER)
	$(MLSERVER)/bin/pip --disable-pip-version-check -q install mlserver==1.7.1 uvloop==0.21.0 onnxruntime==1.32.0 numpy==2.4.6 pillow==13.0.0

$(VENV)/.bench: pyproject.toml | $(PY)
	$(PIP) install -e ".[bench]"
	touch $@

# Load benchmark against the in-process ceiling and peer servers (about 6 minutes on 2 cores; docs/performance.md).
# Writes out/bench/bench.{txt,json,png} (git-ignored).
bench: $(VENV)/.serve $(VENV)/.bench $(BENTO)/bin/bentoml $(MLSERVER)/bin/mlserver
	@command -v wrk >/dev/null && command -v hey >/dev/null || { echo "apt-get install -y hey wrk"; exit 1; }
	$(VENV)/bin/vitrine bench

# 10-minute soak at 80% of capacity: resident memory growth and errors (not part of CI); writes out/soak.json.
soak: $(VENV)/.test
	$(PY) tools/soak.py --minutes 10

# Rebuild the default model (version 4) from the catalogue export: the stages of its config file, in order
# (docs/model-pipeline-recipe.md). A stage finished by an earlier run is skipped, so a stopped build resumes.
model: $(VENV)/.test
	$(VENV)/bin/vitrine export build export/configs/product-classifier.toml --data $(DATA)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build/site out
