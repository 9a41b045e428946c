# Underpass — every entry point a developer or CI needs.
#   make demo   a complete local tunnel (no cluster needed)
#   make test   install what the tests need and run the whole suite
SHELL := /bin/bash
.DEFAULT_GOAL := help
NODE_MODULES_STAMP := node_modules/.package-lock.json
# Every target runs on the pinned Node 24 (image/node.sh, the image's runtime too): its bin directory
# comes first on PATH, so npm, tsc, jest and every bin/underpass child (`env -S node`) use it, never
# the machine's own node. --dir only prints the path; the $(NODE_STAMP) rule installs it.
NODE_DIR := $(shell bash image/node.sh --dir)
NODE_STAMP := $(NODE_DIR)/.underpass-node
export PATH := $(NODE_DIR)/bin:$(PATH)
TS_SOURCES := $(shell find tunnel worker connector operator cli bench -name '*.ts' -not -name '*.test.ts' 2>/dev/null)

.PHONY: help node deps build typecheck demo test test-unit test-deps interop-peer testenv-bins testenv testenv-stop manifests fuzz clean \
	cluster cluster-stop cluster-status cluster-demo test-cluster

help: ## list targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(NODE_STAMP):
	bash image/node.sh >/dev/null

node: $(NODE_STAMP) ## install the pinned Node 24 (image/node.sh; every target runs on it)
	@echo "$$(node --version) at $$(command -v node)"

$(NODE_MODULES_STAMP): package.json package-lock.json $(NODE_STAMP)
	@# npm ci rejects npm 11 lockfiles that omit other platforms' optional packages; install follows the lock.
	npm install --no-fund --no-audit
	@touch $@

deps: $(NODE_MODULES_STAMP) ## install npm dependencies (from package-lock.json)

dist/.stamp: $(NODE_MODULES_STAMP) $(TS_SOURCES) tsconfig.json tsconfig.build.json package.json
	npx tsc -p tsconfig.build.json
	@touch $@

build: dist/.stamp ## compile TypeScript to dist/ (bin/underpass runs it)

typecheck: deps ## type-check sources and tests
	npx tsc -p tsconfig.json --noEmit

demo: build ## run a complete local tunnel: certificates, worker, connector, an app on each side
	./bin/underpass demo

interop-peer: ## build the hashicorp/yamux Go test peer (cached by content hash)
	@bash test/interop/build-peer.sh >/dev/null

testenv-bins: ## build kube-apiserver, etcd, kube-controller-manager, kubectl, helm from Go modules (cached)
	bash test/env/build.sh

testenv: testenv-bins ## start a real API server in the background; kubeconfig in .testenv/kubeconfig
	bash test/env/start.sh $(CURDIR)/.testenv
	@echo "export KUBECONFIG=$(CURDIR)/.testenv/kubeconfig"

testenv-stop: ## stop what `make testenv` started
	bash test/env/stop.sh $(CURDIR)/.testenv

cluster: ## start a real single-node Kubernetes here (root; ~10 s once built); kubeconfig in .cluster/kubeconfig
	bash test/env/cluster-start.sh $(CURDIR)/.cluster

cluster-stop: ## stop `make cluster`, remove all it put on the host, list any leftover
	bash test/env/cluster-stop.sh $(CURDIR)/.cluster

cluster-status: ## is the local cluster running: components, memory, node, pods
	bash test/env/cluster-status.sh $(CURDIR)/.cluster

cluster-demo: build ## Underpass in the local cluster (root): operator + connector by Helm, traffic both ways
	bash test/env/cluster-demo.sh

test-deps: ## Debian packages some tests use (nftables), installed when missing
	@bash test/env/test-deps.sh

test: build typecheck test-deps interop-peer testenv-bins ## everything: unit, interop, end-to-end, API server and real-cluster tests
	npm test
	bash test/cluster-real/run.sh

test-cluster: build test-deps testenv-bins ## the real-cluster suite only (root): pods, Services, Helm, the image (test/cluster-real)
	bash test/cluster-real/run.sh

test-unit: build ## unit tests only (no Go, no cluster)
	@# Anchored: a bare `tunnel` would also pick test/cluster/tunnel.test.ts, which needs the cluster binaries.
	npm test -- '^$(CURDIR)/(tunnel|worker|connector|cli)/'

# `make fuzz`: FUZZ_RUNS inputs per parser (make test runs 2,000 with a fixed seed); a fresh seed
# unless FUZZ_SEED is set; FUZZ_ONLY and FUZZ_PATH replay one failure (docs/fuzzing.md).
FUZZ_RUNS ?= 100000
fuzz: deps ## fuzz every parser of peer bytes (100,000 inputs each, FUZZ_SEED to replay) and print the table
	@mkdir -p .fuzz && rm -f .fuzz/last.jsonl
	@seed=$${FUZZ_SEED:-$$(node -p 'require("node:crypto").randomInt(2 ** 31)')}; \
	echo "fuzz: seed $$seed, $(FUZZ_RUNS) inputs per parser"; \
	FUZZ_SEED=$$seed FUZZ_RUNS=$(FUZZ_RUNS) FUZZ_REPORT=$(CURDIR)/.fuzz/last.jsonl \
	  node --experimental-vm-modules --no-warnings=ExperimentalWarning node_modules/jest/bin/jest.js --runInBand test/fuzz/fuzz.test.ts

manifests: deps testenv-bins ## regenerate operator/deploy and operator/rbac (helm template of charts/underpass-operator) and the chart's crds/ (from crds/)
	UNDERPASS_UPDATE_MANIFESTS=1 npm test -- test/charts/manifests.test.ts

clean: ## remove build output
	rm -rf dist

include bench/bench.mk
include image/image.mk
