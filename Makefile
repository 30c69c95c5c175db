# Two set-up commands: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision builds that lie on this machine's disk and import together; constraints.txt
# holds the same pins so no later install (timm, fvcore, ...) can move torch.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
export HF_HUB_OFFLINE := 1

.PHONY: install test demo bench flops-table clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt $(TORCH_PINS)
	$(PY) -m pip install -q -c constraints.txt -e '.[test,launchers]'
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest

demo: install
	$(VENV)/bin/algm demo

bench: install
	$(PY) scripts/bench_merge.py
	$(PY) scripts/bench_ragged.py

clean:
	rm -rf $(VENV) build *.egg-info outputs multirun

flops-table: install
	$(PY) scripts/flops_table.py
