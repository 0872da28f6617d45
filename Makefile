# Two entry points: `make run` (default scenario) and `make test`. Both build .venv once;
# a second call reinstalls nothing unless pyproject.toml or this Makefile changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PIP := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: setup run test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) fbgemm-gpu-cpu==1.8.0
	$(PIP) --no-deps torchrec==1.8.0
	$(PIP) tensordict torchmetrics==1.0.3 tqdm pyre-extensions
	$(PIP) -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/recsim run feedback-loop --seeds 3

test: $(STAMP)
	$(VENV)/bin/ruff check recsim towers scenarios tests
	$(VENV)/bin/pytest -q tests --doctest-modules recsim towers
	$(VENV)/bin/pytest -q --nbmake notebooks

bench: $(STAMP)
	$(VENV)/bin/recsim bench

clean:
	rm -rf $(VENV) runs mlflow.db mlartifacts
