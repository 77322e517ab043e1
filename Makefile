# Two entry points, both self-contained on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# DATA_ROOT: an imagefolder copy (train/<class>, test/<class>) for offline demos. Defaults to the
# CIFAR-10 JPEG copy beside the checkout when there is one; empty means the official CIFAR-10
# (downloaded once into the cache, or a clear message on how to supply it without internet).
DATA_ROOT ?= $(wildcard ../shared/data/cifar10-jpeg)
DEMO_SET := $(if $(DATA_ROOT),--set data.name=imagefolder --set data.root=$(DATA_ROOT),)

.PHONY: demo test lint bench clean

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/vislab train quick $(DEMO_SET) $(ARGS)

# One pytest-xdist worker per core (each computing on one thread: tests/conftest.py); TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= auto
test: lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) $(ARGS)

# ruff's settings are in pyproject.toml (line length 120, src/ tests/ benchmarks/ tools/).
lint: $(BIN)/.installed
	$(BIN)/ruff check
	$(BIN)/ruff format --check

bench: $(BIN)/.installed
	$(BIN)/vislab bench --quick $(ARGS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
