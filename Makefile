# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
# Both create .venv if missing and install into it only when pyproject.toml changed.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PORT ?= 8080
STAMP := $(VENV)/.installed
BENCH_DIR := benchmarks/results

.PHONY: setup run test bench bench-core bench-llm kmod kmod-test clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# silero-vad carries the demo model's ONNX files; its own dependencies (torch) are not needed
# to serve them, so it is installed without them. llama-cpp-python compiles llama.cpp for a
# generic x86-64 (GGML_NATIVE=OFF) so the wheel pip caches runs on any machine of this kind.
$(STAMP): pyproject.toml | $(PY)
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PIP) install -q -e '.[test,gpu,convert,gguf]'
	$(PIP) install -q --no-deps 'silero-vad==6.2.3'
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(PY) -m mlos_core --port $(PORT) --demo

# The kernel-mode suite: the shim's behavioural tests and the core's zero-copy path, run inside
# the guest against /dev/mlos-ml (-k kernel keeps tests/kernel_shim whole and the core's
# [kernel] cases; their userspace twins ran on the host just before).
KMOD_PYTEST ?= tests/kernel_shim tests/mlos_core/zerocopy/test_server.py -k kernel -q -rs

# The host suite, then the kernel module in a qemu guest where this machine can boot one
# (kmod/vm/can-run.sh says why not elsewhere; MLOS_SKIP_VM=1 skips it on purpose).
test: setup
	$(PY) -m pytest -q -p no:cacheprovider
	@if why=$$(kmod/vm/can-run.sh); then \
		$(MAKE) --no-print-directory kmod-test PYTEST_ARGS="$(KMOD_PYTEST)" VM_TIMEOUT=900; \
	else \
		echo "make test: SKIPPED the kernel-module tests in a VM (make kmod-test): $$why"; \
	fi

bench: bench-core bench-llm

bench-core: setup
	mkdir -p $(BENCH_DIR)
	$(PY) -m pytest benchmarks/test_core.py -p no:cacheprovider --benchmark-only \
		--benchmark-json=$(BENCH_DIR)/core.json -q
	$(PY) -m benchmarks.report $(BENCH_DIR)/core.json

bench-llm: setup
	mkdir -p $(BENCH_DIR)
	$(PY) -m pytest benchmarks/test_llm.py -p no:cacheprovider --benchmark-only \
		--benchmark-json=$(BENCH_DIR)/llm.json -q
	$(PY) -m benchmarks.report_llm $(BENCH_DIR)/llm.json

kmod:
	$(MAKE) -C kmod build

# Boots Debian's kernel under qemu (TCG) with the module loaded and runs the guest checks;
# PYTEST_ARGS="tests/kernel_shim -q" also runs that suite inside the guest with MLOS_KERNEL=on.
kmod-test: setup
	$(MAKE) -C kmod test PYTEST_ARGS="$(PYTEST_ARGS)" MODULE_PARAMS="$(MODULE_PARAMS)" \
		VM_TIMEOUT="$(VM_TIMEOUT)"

clean:
	rm -rf $(VENV) build *.egg-info
