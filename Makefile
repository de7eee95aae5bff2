# Two commands from a fresh clone:
#   make lab    the venv, then the bundled CIFAR-10 lab trained on this computer (no cloud, no Docker needed)
#   make test   everything the tests need (as root on Debian/Ubuntu), lint, types, then the whole test suite
# DATA picks the lab's data: cifar10 (downloaded), synthetic, or a folder/.tar/.tar.gz of train/<class>/*.jpg.

PYTHON ?= python3
VENV ?= .venv
DATA ?= cifar10
MODEL ?= tutorial
EPOCHS ?= 2

.PHONY: lab test check clean

$(VENV)/.labctl-installed: pyproject.toml
	bash scripts/setup-venv "$(PYTHON)" "$(VENV)"
	touch $@

lab: $(VENV)/.labctl-installed
	$(VENV)/bin/labctl run-lab --here --data "$(DATA)" --model "$(MODEL)" --epochs "$(EPOCHS)"

test:
	bash scripts/test-all

check: $(VENV)/.labctl-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# The live suite against a real subscription (about 10 US cents and an hour: tests/live/README.md).
.PHONY: live
live: $(VENV)/.labctl-installed
	@test -n "$$LABCTL_LIVE_SUBSCRIPTION" || { echo "Set LABCTL_LIVE_SUBSCRIPTION to the id of the subscription to spend on (tests/live/README.md)." >&2; exit 2; }
	$(VENV)/bin/python -m pytest -v -p no:cacheprovider tests/live
