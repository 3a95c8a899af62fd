# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Both create .venv (if missing) and install what they need into it.

PYTHON ?= python3
VENV ?= .venv
# torch/torchvision pinned to the builds these machines install offline; override
# TORCH_SPEC for another platform (e.g. TORCH_SPEC="torch torchvision").
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PIP = $(VENV)/bin/pip
STAMP = $(VENV)/.installed

.PHONY: demo test install clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP): $(VENV)/bin/python pyproject.toml
	$(PIP) install --quiet $(TORCH_SPEC)
	$(PIP) install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/featstore demo

test: $(STAMP)
	-$(VENV)/bin/featstore datasets fetch rotten-tomatoes vader-tweets  # optional real-data tests
	$(VENV)/bin/pytest

clean:
	rm -rf $(VENV) featstore-demo .pytest_cache
