# Driftwarden. Two commands do all set-up on a fresh machine:
#   make demo   - the local end-to-end demo (no cluster needed)
#   make test   - every test tier (unit, cluster, e2e)
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | md5sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: setup venv tools test test-unit test-cluster test-e2e test-pods test-images images demo train cluster-up cluster-down bench generate lint \
        kind-up kind-images kind-install kind-demo kind-down clean help

help:
	@grep -E '^[a-z-]+:.*## ' Makefile | sed -E 's/:.*## /\t/' | column -t -s $$'\t'

setup: venv tools ## Python venv and every pinned tool (control plane, Prometheus, helm)

venv: $(STAMP)
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

tools: ## Build or fetch pinned tools into ~/.cache/driftwarden (reused across clones)
	bash hack/install-tools.sh

test: setup ## Run every test tier: unit, cluster (real control plane), e2e (real Prometheus/Alertmanager), pods (real nodes), images (built and run)
	$(BIN)/python -m pytest -m "unit or cluster or e2e or pods or images" $(PYTEST_ARGS)

test-unit: setup ## Unit tier only (seconds; promtool, helm and CRD schemas come from the tools)
	$(BIN)/python -m pytest -m unit $(PYTEST_ARGS)

test-cluster: setup ## Cluster tier only
	$(BIN)/python -m pytest -m cluster $(PYTEST_ARGS)

test-pods: setup ## Pods tier only (real kubelet/containerd/kube-proxy/CoreDNS node; root, podman, buildah, iptables)
	$(BIN)/python -m pytest -m pods $(PYTEST_ARGS)

test-images: setup ## Images tier only (builds the images, cached; runs them as the operator renders their pods)
	$(BIN)/python -m pytest -m images $(PYTEST_ARGS)

images: ## Build the operator, model-server and drift-worker images (Docker, else podman); IMAGES_ARGS=--torch adds the -torch flavours
	bash hack/images.sh $(IMAGES_ARGS)

test-e2e: setup ## End-to-end tier only
	$(BIN)/python -m pytest -m e2e $(PYTEST_ARGS)

demo: venv ## The local end-to-end demo: model server, 3 shards, Prometheus, Alertmanager, drifting traffic
	bash hack/install-prometheus.sh
	$(BIN)/driftwarden demo $(DEMO_ARGS)

train: venv ## Train every built-in model bundle into ~/.cache/driftwarden/bundles
	$(BIN)/driftwarden train

cluster-up: setup ## Start the local test control plane (etcd, apiserver, kwok...) in .run/controlplane
	$(BIN)/python -m driftwarden.testing.controlplane up

cluster-down: ## Stop the local test control plane
	$(BIN)/python -m driftwarden.testing.controlplane down

bench: setup ## Benchmarks (not in CI); results in bench/results/*.json
	$(BIN)/python -m bench $(BENCH_ARGS)

generate: venv ## Regenerate the CRD, chart CRD and manifests from the pydantic spec
	$(BIN)/driftwarden generate

lint: setup ## ruff format + check, mypy (strict), generated files up to date, helm lint, hadolint, shellcheck
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/driftwarden generate --check
	$$($(BIN)/python -c 'from driftwarden.testing.tools import tool_path; print(tool_path("helm"))') lint --strict charts/driftwarden
	$(BIN)/hadolint operator/Dockerfile model_server/Dockerfile drift_worker/Dockerfile
	$(BIN)/shellcheck -x hack/*.sh .ci/run

# The kind path (needs Docker and kind; see docs/kind.md). Versions: versions.env.
kind-up: ## Create the kind cluster of kind-config.yaml (pinned kindest/node image)
	bash hack/kind-up.sh

kind-images: ## Build the operator, model-server and drift-worker images and load them into kind
	bash hack/kind-images.sh

kind-install: ## Install kube-prometheus-stack (pinned chart), then the Driftwarden chart
	bash hack/kind-install.sh

kind-demo: ## Apply the example DriftMonitor and port-forward Grafana to 127.0.0.1:3000
	bash hack/kind-demo.sh

kind-down: ## Delete the kind cluster
	bash hack/kind-down.sh

clean:
	rm -rf $(VENV) .run .pytest_cache .hypothesis
