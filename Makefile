# Two commands do everything on a fresh machine:
#   make demo   set up, build, and run the node on the demo policy and sample scenes
#   make test   set up, build, and run every test
SHELL := /bin/bash
ENV := source scripts/env.sh &&
BIN := target/release/vla_controller

.PHONY: setup build test test-core test-unit test-ros fuzz fuzz-smoke demo bench bench-e2e clean

# Seconds per fuzz target: `make fuzz` (override: make fuzz FUZZ_SECONDS=3600), and the
# smoke run of every target in `make test`.
FUZZ_SECONDS ?= 300
FUZZ_SMOKE_SECONDS ?= 5

setup:
	scripts/setup.sh

build: setup
	scripts/build_msgs.sh
	$(ENV) cargo build --release

test: build test-core
	$(ENV) cargo test --release
	$(ENV) scripts/fuzz.sh -t $(FUZZ_SMOKE_SECONDS)
	$(ENV) python -m pytest -q tests/demo_policy tests/ros tests/explain tests/replay

# The core's tests need neither the ROS prefix nor libtorch (no environment sourced).
test-core:
	cargo test --release --no-default-features --lib

test-unit: setup
	scripts/build_msgs.sh
	$(ENV) cargo test --release

test-ros: build
	$(ENV) python -m pytest -q tests/demo_policy tests/ros tests/explain tests/replay

# Coverage-guided fuzzing of every decoder (fuzz/, scripts/fuzz.sh), FUZZ_SECONDS each.
fuzz: setup
	scripts/build_msgs.sh
	$(ENV) scripts/fuzz.sh -t $(FUZZ_SECONDS)

fuzz-smoke: setup
	scripts/build_msgs.sh
	$(ENV) scripts/fuzz.sh -t $(FUZZ_SMOKE_SECONDS)

demo: build
	$(ENV) python scripts/demo.py

clean:
	cargo clean

bench: build
	$(ENV) cargo bench --bench pipeline

bench-e2e: build
	$(ENV) python benches/e2e.py
