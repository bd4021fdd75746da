# Two commands do everything on a fresh machine:
#   make demo   set up, build, and run the node on the demo policy and sample scenes
#   make test   set up, build, and run every test
SHELL := /bin/bash
ENV := source scripts/env.sh &&
BIN := target/release/vla_controller

.PHONY: setup build test test-core test-unit test-ros test-lerobot fuzz fuzz-smoke demo diagnose bench bench-e2e bench-sweep bench-closed-loop clean

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
	$(ENV) .venv-lerobot/bin/python -m pytest -q tests/lerobot

# The core's tests need neither the ROS prefix nor libtorch: run with an environment
# emptied of both, whatever the calling shell has sourced.
test-core:
	env -i PATH="$$PATH" HOME="$$HOME" $${CARGO_HOME:+CARGO_HOME="$$CARGO_HOME"} $${RUSTUP_HOME:+RUSTUP_HOME="$$RUSTUP_HOME"} \
		cargo test --release --no-default-features --lib

test-unit: setup
	scripts/build_msgs.sh
	$(ENV) cargo test --release

test-ros: build
	$(ENV) python -m pytest -q tests/demo_policy tests/ros tests/explain tests/replay

# The LeRobot export (python -m vla_export.lerobot) against LeRobot itself, in its own environment.
test-lerobot: build
	$(ENV) .venv-lerobot/bin/python -m pytest -q tests/lerobot

# Coverage-guided fuzzing of every decoder (fuzz/, scripts/fuzz.sh), FUZZ_SECONDS each.
fuzz: setup
	scripts/build_msgs.sh
	$(ENV) scripts/fuzz.sh -t $(FUZZ_SECONDS)

fuzz-smoke: setup
	scripts/build_msgs.sh
	$(ENV) scripts/fuzz.sh -t $(FUZZ_SMOKE_SECONDS)

demo: build
	$(ENV) python scripts/demo.py

# The placement diagnosis (README, "A diagnosis"): policies A and B told to put the item
# on the right side of the tray, in one held-out scene: the side each chose, the side
# word's weight and the tray's split, and the pictures side by side in out/diagnose.
diagnose: build
	$(ENV) python -m vla_demo.diagnose --show

clean:
	cargo clean

bench: build
	$(ENV) cargo bench --bench pipeline

bench-e2e: build
	$(ENV) python benches/e2e.py

# The load at which the node and the Python baseline break (7-12 minutes; not in `make test`).
bench-sweep: build
	$(ENV) python benches/e2e.py --sweep

# Smoothings against inference delay, closed loop with the simulated arm, with an
# instruction switch mid-run (9 minutes with the defaults, 10 scenes; not in `make test`).
bench-closed-loop: build
	$(ENV) python benches/closed_loop.py
