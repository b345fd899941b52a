# FedSuite: `make train` (FedAvg on the embedded digits data) and `make test`.
# Both create .venv with the pinned lock on first use (pip --no-deps: see README).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
PYTEST_ARGS ?= -n 2

.PHONY: train test check-python clean-venv

check-python:
	@$(PY) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 9) <= v <= (3, 11) else "error: FedSuite needs Python 3.9-3.11 (tensorflow-federated 0.87 supports no other); found %d.%d. Run with PY=/path/to/python3.11" % v)'

$(STAMP): requirements.txt | check-python
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-deps -r requirements.txt
	@touch $(STAMP)

train: $(STAMP)
	$(BIN)/python -m tff_programs.train $(ARGS)

test: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/python -m pytest $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
