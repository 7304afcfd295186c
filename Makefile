# Safehold developer entry points. `make install` then `make test` is the whole set-up.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install infra test test-fast lint bench clean crds docs argocd cluster cluster-down images lock exe wheelhouse e2e

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[runner,operator,dev]'
	touch $(STAMP)

# Database servers, storage emulators, Kubernetes control plane, helm (idempotent; builds are cached
# in .cache/ and in ~/.cache/safehold).
infra: install
	bash scripts/infra.sh

# Two pytest-xdist workers (the machine's cores): each test file runs whole in one worker, the
# real node's tests (tests/cluster, e2e) all in one (tests/conftest.py). TEST_WORKERS=0: one
# process, as a plain `pytest` does.
TEST_WORKERS ?= 2

test: install infra wheelhouse
	$(BIN)/pytest -q --durations=25 -n $(TEST_WORKERS) $(PYTEST_ARGS)

# The one-file executable (PyInstaller; SQLite + local storage), cached in .cache/exe/: rebuilt
# only when the sources change. Prints its path and size.
exe: install
	@ls -lh "$$(bash scripts/build-exe.sh)"

# Wheels of the runner's dependencies in .cache/wheelhouse, so the pipx/install.sh tests
# install offline (docs/install.md).
wheelhouse: install
	@bash scripts/wheelhouse.sh >/dev/null

# The whole-system suite alone (local mode: the real node, the chart's operator as a Pod, the
# sample manifests of docs/examples; `make test` runs it too). -s shows what kubectl shows.
e2e: install infra
	$(BIN)/pytest -q -s e2e $(PYTEST_ARGS)

# Unit tests only: no servers.
test-fast: install
	$(BIN)/pytest -q tests/unit $(PYTEST_ARGS)

# actionlint (built from the Go module proxy, pinned): the GitHub Actions workflows. shellcheck and
# pyflakes integration off, so the verdict is the same here (neither is installed) and in CI.
ACTIONLINT := .cache/bin/actionlint -shellcheck= -pyflakes=

lint: install
	$(BIN)/ruff check operator tests e2e
	$(BIN)/mypy
	$(BIN)/lint-imports
	bash scripts/infra/80-actionlint.sh
	$(ACTIONLINT) .github/workflows/*.yml

# CustomResourceDefinitions generated from the pydantic models in safehold.api, and the Helm
# chart's copy of them (a unit test fails when either is stale).
crds: install
	$(BIN)/python -m safehold.api.crdgen --out crds
	$(BIN)/python -m safehold.api.crdgen --out charts/safehold/files/crds
	$(BIN)/python -m safehold.docsgen --out docs/reference

# docs/reference/crds.md (from the CRD schemas) and docs/reference/cli.md (from every command's
# --help); `make crds` writes them too. tests/unit/test_docs_reference.py fails when one is stale.
docs: install
	$(BIN)/python -m safehold.docsgen --out docs/reference

# Argo CD's ConfigMap entries (deploy/argocd/argocd-cm.yaml) from the health checks in
# deploy/argocd/health/ (a test fails when it is stale).
argocd: install
	$(BIN)/python scripts/argocd-cm.py

# The runner and operator images (buildah, on the debootstrap'd Debian base of `make infra`),
# built by the same code and into the same cache as the cluster tests' (tests/infra/images.py);
# prints each image's size. docs/images.md.
images: install infra
	$(BIN)/python -m tests.infra.images

# The images' hash-pinned dependency locks from pyproject.toml (a unit test fails when stale).
lock: install
	$(BIN)/python scripts/lock.py $(BIN)/uv

bench: install infra
	$(BIN)/python -m bench $(BENCH_ARGS)

# A local single-node cluster with the chart installed (root; stays up until cluster-down).
# Use it with `scripts/cluster exec -- kubectl get pods -A`.
cluster: install infra
	scripts/cluster up

cluster-down:
	scripts/cluster down

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
