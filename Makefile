# Chronik: `make run` starts a single broker, `make test` runs every test suite.
# Builds go to $CARGO_TARGET_DIR (default ./target); CI points it at a cache directory.

CARGO_TARGET_DIR ?= $(CURDIR)/target
export CARGO_TARGET_DIR
BROKER := $(CARGO_TARGET_DIR)/release/chronik-broker
PYTHON ?= python3

.PHONY: deps build-deps build run test unit-test unit-test-local api-server-test e2e-test chaos-test chaos conformance lint fmt crds bench fuzz clean \
	k8s-up k8s-down k8s-smoke images images-import e2e-k8s k8s-test

# Installs what the build and the tests need (idempotent; quick when all is present).
deps:
	bash .ci/install-deps.sh

build-deps:
	CHRONIK_DEPS=build bash .ci/install-deps.sh

# One feature set for every build and test of the workspace: building a subset would
# resolve shared dependencies' features differently and rebuild RocksDB's C++ each time.
# --timings leaves what each crate cost in $CARGO_TARGET_DIR/cargo-timings/ (cold CI time).
build:
	cargo build --release --workspace --all-targets --timings

run: build-deps build
	$(BROKER) --data-dir ./data

# A cold Kubernetes build (started by deps, niced) runs in the background beside the cargo
# build (.ci/install-deps.sh says how) and on beside the suites that need none of its
# binaries; the operator's API-server tests wait for it, then the timing-sensitive fault
# injection runs on a quiet machine.
test: deps build unit-test-local e2e-test conformance api-server-test chaos-test k8s-test
test: export CHRONIK_K8S_BACKGROUND = 1

# The Kubernetes e2e suite on the local node (~6 min with the images; the node needs
# root, as chaos-test does: skipped otherwise).
k8s-test:
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory e2e-k8s; \
	else echo "k8s-test: skipped (the local Kubernetes node needs root)"; fi

unit-test:
	cargo test --release --workspace

# unit-test in two parts: the unit tests, and the operator's tests against a real
# kube-apiserver and etcd (tools/k8s/build.sh builds them once).
unit-test-local:
	cargo test --release --workspace --lib --bins

api-server-test:
	cargo test --release --workspace --test api_server

e2e-test: build
	CHRONIK_BROKER_BIN=$(BROKER) $(PYTHON) -m pytest tests/e2e -q -p no:cacheprovider

lint:
	cargo fmt --all -- --check
	cargo clippy --release --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

# franz-go's kgo integration tests against one broker and against three (~2 min; the
# first run builds their test binary from the Go module proxy, cached in ~/.cache/chronik).
conformance: build
	CHRONIK_BROKER_BIN=$(BROKER) bash tests/conformance/franz-go.sh

# The fault-injection suite's short form (one seeded run, every fault once: ~1.5 min). Needs
# root for its network namespaces; skipped otherwise.
chaos-test: build
	CHRONIK_BROKER_BIN=$(BROKER) $(PYTHON) -m pytest tests/chaos -q -p no:cacheprovider

# The long form: 20 seeded schedules of 5 faults each while every core is saturated, then
# the replication and fault e2e tests on the same saturated machine (~40 min).
CHAOS_SEEDS ?= 1-20
chaos: build
	CHRONIK_BROKER_BIN=$(BROKER) $(PYTHON) tests/chaos/chaos.py --seeds $(CHAOS_SEEDS) \
		--faults 5 --load --json chaos-results.json
	CHRONIK_BROKER_BIN=$(BROKER) $(PYTHON) tests/chaos/loaded.py $(PYTHON) -m pytest \
		tests/e2e/test_replication.py tests/e2e/test_faults.py -q -p no:cacheprovider

# The CRD is generated from operator/src/crd.rs; a unit test fails when these copies drift.
crds: build
	$(CARGO_TARGET_DIR)/release/crdgen > crds/chronikcluster.yaml
	cp crds/chronikcluster.yaml charts/chronik/crds/chronikcluster.yaml

bench: build
	CHRONIK_BROKER_BIN=$(BROKER) bench/run.sh

# Fuzzes the request decoder and the record-batch validator for FUZZ_SECONDS. Builds with
# coverage instrumentation in a target dir of its own (the first build recompiles RocksDB's
# C++: ~20 min here), so the main build cache stays valid.
FUZZ_SECONDS ?= 300
fuzz:
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	cd broker/fuzz && CARGO_TARGET_DIR=$(CARGO_TARGET_DIR)-fuzz RUSTC_BOOTSTRAP=1 \
		cargo fuzz run decode_request -s none -- -max_total_time=$(FUZZ_SECONDS)

# A real single-node Kubernetes as local processes (tools/k8s/README.md): etcd, API server,
# controller-manager, scheduler, containerd, kubelet, kube-proxy, CoreDNS. Needs root. State
# in .k8s/ (kept by k8s-down; `tools/k8s/node.sh purge .k8s` for a fresh cluster).
# `eval "$$(tools/k8s/node.sh env .k8s)"` sets KUBECONFIG and PATH (kubectl, helm).
k8s-up:
	bash tools/k8s/node.sh up .k8s

k8s-down:
	bash tools/k8s/node.sh down .k8s

k8s-smoke:
	bash tools/k8s/node-smoke.sh .k8s

# Image tarballs (tools/images/build.sh) of the broker, the operator and the e2e client,
# plus a broker reporting version TAG-next for the rolling-upgrade scenario: the broker is
# relinked with CHRONIK_BUILD_VERSION set, then again without (under a minute each: only
# its binary crate reads the variable).
TAG ?= $(shell awk -F'"' '/^version *=/ {print $$2; exit}' Cargo.toml)
IMAGES_DIR ?= $(CARGO_TARGET_DIR)/images
images: build
	mkdir -p $(IMAGES_DIR)
	CHRONIK_BUILD_VERSION=$(TAG)-next cargo build --release -p chronik-broker --bin chronik-broker
	cp $(BROKER) $(IMAGES_DIR)/chronik-broker-next
	cargo build --release -p chronik-broker --bin chronik-broker
	bash tools/images/build.sh $(IMAGES_DIR) $(TAG) $(IMAGES_DIR)/chronik-broker-next
	if bash tools/k8s/node.sh status .k8s 2>/dev/null; then $(MAKE) --no-print-directory images-import; fi

# Loads the image tarballs into the local node's containerd (make k8s-up).
images-import:
	bash tools/k8s/node.sh import .k8s $(IMAGES_DIR)/broker.tar $(IMAGES_DIR)/broker-next.tar \
		$(IMAGES_DIR)/operator.tar $(IMAGES_DIR)/kclient.tar

# The Kubernetes e2e suite (e2e/) on the local node: up, import the images, run, down
# (~15 min after the images; docs/deployment.md). Needs root, like the chaos suite.
e2e-k8s: images
	bash tools/k8s/node.sh up .k8s >/dev/null
	$(MAKE) --no-print-directory images-import
	KUBECONFIG=$(CURDIR)/.k8s/kubeconfig CHRONIK_TAG=$(TAG) $(PYTHON) e2e/run.py; \
		rc=$$?; bash tools/k8s/node.sh down .k8s; exit $$rc

clean:
	cargo clean
