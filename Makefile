# mlflow-operator: every entry point a developer, CI or a user needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
CLUSTER_DIR ?= $(HOME)/.cache/mlflow-operator/cluster

.PHONY: help deps binaries crds generate check lint typecheck imports crds-check docs docs-check argocd argocd-check workflows unit integration e2e test cluster cluster-down run

help: ## list targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

deps: ## install apt packages and the Python virtualenv (cached)
	@hack/install-deps.sh

binaries: ## build etcd, kube-apiserver & co., kwok, and the real node's kubelet, kube-proxy, containerd, CoreDNS, pause (cached by version)
	@hack/build-binaries.sh all

crds: deps ## regenerate crds/ from the pydantic models (and the Helm chart's copies)
	$(VENV)/bin/mlflow-operator crds --output crds
	cp crds/mlflow.operator.dev_*.yaml charts/mlflow-operator/crds/

lint: deps ## ruff (lint and format check)
	$(VENV)/bin/ruff check operator tests hack bench
	$(VENV)/bin/ruff format --check operator tests hack bench

typecheck: deps ## mypy --strict over the operator, the tests, the benchmarks and hack/
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy tests bench
	$(VENV)/bin/mypy hack

imports: deps ## pure layers must not import I/O
	$(VENV)/bin/lint-imports

crds-check: deps ## fail when crds/ differ from what the models generate
	@tmp=$$(mktemp -d) && $(VENV)/bin/mlflow-operator crds --output $$tmp && diff -ru crds $$tmp \
	  && echo "crds/ up to date" || { echo "crds/ is stale or hand-edited: run 'make crds'"; exit 1; }

docs: deps ## regenerate docs/api.md from the pydantic models
	$(VENV)/bin/mlflow-operator docs --output docs/api.md

docs-check: deps ## fail when docs/api.md differs from what the models generate
	@$(VENV)/bin/mlflow-operator docs | diff -u docs/api.md - \
	  && echo "docs/api.md up to date" || { echo "docs/api.md is stale or hand-edited: run 'make docs'"; exit 1; }

argocd: ## regenerate docs/argocd/argocd-cm.yaml from docs/argocd/health-*.lua (the prelude in every kind's script)
	@python3 hack/argocd-health.py

argocd-check: ## fail when docs/argocd/argocd-cm.yaml differs from what docs/argocd/health-*.lua compose
	@python3 hack/argocd-health.py --check && echo "docs/argocd/argocd-cm.yaml up to date"

generate: crds docs dockerfiles argocd ## everything generated from a single source: CRDs (and the chart's copies), docs/api.md, Dockerfiles, argocd-cm.yaml

check: lint typecheck imports crds-check docs-check argocd-check workflows ## all static checks

workflows: ## actionlint over .github/workflows (the release workflow cannot run here: it is linted offline)
	@hack/build-binaries.sh actionlint
	@. hack/versions.env && "$${MLFLOW_OPERATOR_CACHE:-$$HOME/.cache/mlflow-operator}/bin/actionlint-$$ACTIONLINT_VERSION/actionlint" \
	  -no-color .github/workflows/*.yml && echo "workflows: actionlint clean"

unit: deps ## unit tests (no network)
	$(PY) -m pytest tests/unit

integration: deps binaries ## integration tests: the real data plane as local processes, the images run with runc
	$(PY) -m pytest tests/integration

e2e: deps binaries ## e2e tests on KUBECONFIG, or on a local control plane started for the run
	$(PY) -m pytest tests/e2e

test: deps binaries check ## the whole suite, as CI runs it
	$(PY) -m pytest tests

cluster: deps binaries ## start the local cluster with a real node (idempotent; CLUSTER_ARGS=--fake-nodes 3 adds kwok nodes); prints the kubeconfig path last
	@python3 hack/localcluster.py up --dir $(CLUSTER_DIR) $(CLUSTER_ARGS)

cluster-down: ## stop the local cluster and remove everything it created (processes, mounts, bridge, rules, state)
	@python3 hack/localcluster.py down --dir $(CLUSTER_DIR)

run: deps binaries ## the examples working: images, local cluster (or KUBECONFIG), operator by Helm, MinIO, seeded registry (hack/run.py)
	@python3 hack/run.py --dir $(CLUSTER_DIR) $(CLUSTER_ARGS)

.PHONY: chart lint-chart
chart: crds ## refresh the Helm chart's CRD copies (make crds does it; a unit test fails when they differ)

lint-chart: deps ## helm lint, kubeconform and checkov over the chart, manifests/ and rendered examples
	$(PY) -m pytest tests/integration/test_packaging.py tests/unit/test_chart.py

.PHONY: images dockerfiles
images: ## build every image offline (Debian packages + PyPI, no registry) into ~/.cache/mlflow-operator/images, listed in manifest.tsv
	@hack/install-deps.sh apt
	@python3 hack/build-images.py build

dockerfiles: ## regenerate images/*/Dockerfile from images/*/image.toml (a unit test fails when they differ)
	@python3 hack/build-images.py dockerfiles

.PHONY: bench
bench: deps binaries ## benchmarks; results under bench/results/ (BENCH_ARGS=--quick: a short smoke run)
	$(PY) -m bench.tracking_stack $(BENCH_ARGS)
	$(PY) -m bench.registry $(BENCH_ARGS)
	$(PY) -m bench.modeldeployment $(BENCH_ARGS)
	$(PY) -m bench.registry_events $(BENCH_ARGS)
	$(PY) -m bench.scale $(BENCH_ARGS)
	$(PY) -m bench.lifecycle_safety $(BENCH_ARGS)
	$(PY) -m bench.real_node $(BENCH_ARGS)
	$(PY) -m bench.database_backup $(BENCH_ARGS)
