# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
# Both create .venv if missing and install into it only when pyproject.toml changed.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PORT ?= 8080
STAMP := $(VENV)/.installed
BENCH_DIR := benchmarks/results

.PHONY: setup setup-converters run test e2e-test browser report report-screenshot bench bench-validation bench-core bench-llm bench-llm-serving bench-seq2seq bench-kmod bench-oip bench-grpc bench-startup bench-safety bench-cluster bench-baseline bench-tune kmod kmod-test clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# silero-vad carries the demo model's ONNX files; its own dependencies (torch) are not needed
# to serve them, so it is installed without them. llama-cpp-python compiles llama.cpp for a
# generic x86-64 (GGML_NATIVE=OFF) so the wheel pip caches runs on any machine of this kind.
$(STAMP): pyproject.toml | $(PY)
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PIP) install -q -e '.[test,gpu,convert,gguf,ray,repos,tune]'
	$(PIP) install -q --no-deps 'silero-vad==6.2.3'
	touch $(STAMP)

setup: $(STAMP)

# axon-py's converter environments (axon_pkg/converter_envs.py): torchvision for pytorch/ models,
# TensorFlow + tf2onnx for tfhub/ SavedModels, each in its own virtualenv beside the core's (their
# torch and Keras do not fit in it). About 3 and 1 minutes the first time; make test needs them.
CONVERTERS := $(VENV)/converters
CONVERTER_KINDS := vision tf
$(CONVERTERS)/%/.installed: pyproject.toml | $(PY)
	test -x $(CONVERTERS)/$*/bin/python || $(PYTHON) -m venv $(CONVERTERS)/$*
	$(CONVERTERS)/$*/bin/pip install -q -e '.[convert-$*]'
	touch $@

setup-converters: $(foreach k,$(CONVERTER_KINDS),$(CONVERTERS)/$(k)/.installed)

run: setup
	$(PY) -m mlos_core --port $(PORT) --demo

# The kernel-mode suite: the shim's behavioural tests and the core's zero-copy path, run inside
# the guest against /dev/mlos-ml (-k kernel keeps tests/kernel_shim whole and the core's
# [kernel] cases; their userspace twins ran on the host just before).
KMOD_PYTEST ?= tests/kernel_shim tests/mlos_core/zerocopy/test_server.py -k kernel -q -rs

# The host suite, then the kernel module in a qemu guest where this machine can boot one
# (kmod/vm/can-run.sh says why not elsewhere; MLOS_SKIP_VM=1 skips it on purpose).
test: setup setup-converters browser
	$(PY) -m pytest -q -p no:cacheprovider
	@if why=$$(kmod/vm/can-run.sh); then \
		$(MAKE) --no-print-directory kmod-test PYTEST_ARGS="$(KMOD_PYTEST)" VM_TIMEOUT=900; \
	else \
		echo "make test: SKIPPED the kernel-module tests in a VM (make kmod-test): $$why"; \
	fi

# Debian's Chromium, for the validator report's browser test and its screenshot (apt-get as root;
# elsewhere the browser test skips and says why).
BROWSER_PKGS := validation/report/browser-packages.txt
browser:
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$(cat $(BROWSER_PKGS)); }

VALIDATION_OUT ?= validation-results
# the kernel comparison of the last `make bench`, when there is one, joins the report
VALIDATION_EXTRA = $(if $(wildcard $(BENCH_DIR)/kernel-comparison.json),--in $(BENCH_DIR))
# The validator's offline suite end to end (tiny models of the 18 seed architectures + the real
# PyPI models, both modes; kernel mode is skipped with its reason where /dev/mlos-ml is absent),
# then the report, written even when a model failed; the exit code is the run's.
e2e-test: setup setup-converters browser
	rc=0; $(PY) -m validation run --suite offline --mode both --out $(VALIDATION_OUT) || rc=$$?; \
	$(PY) -m validation report --in $(VALIDATION_OUT) $(VALIDATION_EXTRA) --out $(VALIDATION_OUT)/report.html \
		--screenshot $(VALIDATION_OUT)/report.png || rc=$$((rc ? rc : 1)); exit $$rc

report: setup
	$(PY) -m validation report --in $(VALIDATION_OUT) $(VALIDATION_EXTRA) --out $(VALIDATION_OUT)/report.html

report-screenshot: setup browser
	$(PY) -m validation report --in $(VALIDATION_OUT) $(VALIDATION_EXTRA) --out $(VALIDATION_OUT)/report.html \
		--screenshot $(VALIDATION_OUT)/report.png

# `make bench`: the validator's kernel vs userspace comparison (LoadGen's SingleStream, Offline
# and Server on the zero-copy path; runs interleaved, bootstrap intervals) for MatMul, Silero
# VAD and MiniLM. Natively where /dev/mlos-ml exists, else inside the TCG guest of kmod-test
# (about 8 minutes; emulated: read the ratios). MiniLM is converted to ONNX on the host first:
# the guest sees the checkout read-only. kernel-comparison.json lands in $(BENCH_DIR).
bench: bench-validation

VAL_BENCH := benchmarks/test_validation_kernel.py --benchmark-only -q
bench-validation: setup
	mkdir -p $(BENCH_DIR)
	$(PY) -m validation.kernel_workload prepare-minilm $(BENCH_DIR)/minilm-onnx
	@if [ -e /dev/mlos-ml ]; then \
		MLOS_BENCH_OUT=$(abspath $(BENCH_DIR))/kernel-comparison.json $(PY) -m pytest -p no:cacheprovider \
			$(VAL_BENCH) --benchmark-json=$(BENCH_DIR)/validation-bench.json; \
	elif why=$$(kmod/vm/can-run.sh); then \
		$(MAKE) --no-print-directory kmod-test VM_TIMEOUT=1500 OUT_DIR=$(abspath $(BENCH_DIR)) \
			PYTEST_ARGS="$(VAL_BENCH) --benchmark-json=/tmp/mlos-out/validation-bench.json"; \
	else \
		echo "make bench: SKIPPED (no /dev/mlos-ml and no VM here): $$why"; exit 0; \
	fi && $(PY) -m validation.compare render $(BENCH_DIR)/kernel-comparison.json

bench-core: setup
	mkdir -p $(BENCH_DIR)
	$(PY) -m pytest benchmarks/test_core.py -p no:cacheprovider --benchmark-only \
		--benchmark-json=$(BENCH_DIR)/core.json -q
	$(PY) -m benchmarks.report $(BENCH_DIR)/core.json

# What issue 11's defences cost: health p99 and RSS while 60 MB JSON bodies are parsed (offloaded vs
# inline), throughput at c=32 with and without --api-key, and the batch probe's load time.
bench-safety: setup
	mkdir -p $(BENCH_DIR)
	$(PY) -m pytest benchmarks/test_safety.py -p no:cacheprovider --benchmark-only \
		--benchmark-json=$(BENCH_DIR)/safety.json -q
	$(PY) -m benchmarks.report_safety $(BENCH_DIR)/safety.json

# mlos-tune on the demo models (MatMul, Silero VAD, Gemma GGUF): the tuned configuration against the
# default in each tuning's final round, interleaved, with 95% intervals; reports and their screenshots
# under benchmarks/results/tune/ (MLOS_BENCH_TUNE_* knobs: benchmarks/test_tune.py).
bench-tune: setup browser
	mkdir -p $(BENCH_DIR)
	$(PY) -m pytest benchmarks/test_tune.py -p no:cacheprovider --benchmark-only \
		--benchmark-json=$(BENCH_DIR)/tune.json -q
	$(PY) -m benchmarks.report_tune $(BENCH_DIR)/tune.json
	@for d in $(BENCH_DIR)/tune/*/; do \
		$(PY) -m mlos_tune report $$d --screenshot $$d/report.png || true; done

# LLM serving next to llama.cpp's llama-server, built once from the llama.cpp sources vendored in the
# installed llama-cpp-python's sdist (about 12 minutes on 2 cores; cached under ~/.cache/mlos-bench).
# bench-llm-serving runs only the many-clients part (benchmarks/test_llm_serving.py).
bench-llm: setup
	mkdir -p $(BENCH_DIR)
	$(PY) -m benchmarks.peers.llama_server
	$(PY) -m pytest benchmarks/test_llm.py benchmarks/test_llm_serving.py -p no:cacheprovider --benchmark-only \
		--benchmark-json=$(BENCH_DIR)/llm.json -q
	$(PY) -m benchmarks.report_llm $(BENCH_DIR)/llm.json

# Encoder-decoder generation (a T5-small-shaped random model: mlos-core vs optimum's
# ORTModelForSeq2SeqLM vs transformers, interleaved) and SafeTensors -> GGUF conversion + quantisation
# times (tiny and ~260M-parameter Llama). The models are built once into ~/.cache/mlos-tests/bench.
bench-seq2seq: setup
	mkdir -p $(BENCH_DIR)
	$(PY) -m benchmarks.seq2seq_models
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest benchmarks/test_seq2seq.py -p no:cacheprovider --benchmark-only \
		--benchmark-json=$(BENCH_DIR)/seq2seq.json -q
	$(PY) -m benchmarks.report_seq2seq $(BENCH_DIR)/seq2seq.json

bench-llm-serving: setup
	mkdir -p $(BENCH_DIR)
	$(PY) -m benchmarks.peers.llama_server
	$(PY) -m pytest benchmarks/test_llm_serving.py -p no:cacheprovider --benchmark-only \
		--benchmark-json=$(BENCH_DIR)/llm-serving.json -q
	$(PY) -m benchmarks.report_llm $(BENCH_DIR)/llm-serving.json

# The baseline comparison's false-alarm rate and power: the validator run MLOS_BENCH_BASE_RUNS times
# (6) on the same code and MLOS_BENCH_BASE_SLOWED times (2) with its core slowed from outside, every
# split into baseline and candidate compared, one baseline run and three (docs/validation-ci.md).
bench-baseline: setup
	mkdir -p $(BENCH_DIR)
	$(PY) -m pytest benchmarks/test_baseline_noise.py -p no:cacheprovider --benchmark-only \
		--benchmark-json=$(BENCH_DIR)/baseline-bench.json -q
	$(PY) -m benchmarks.baseline_noise render $(BENCH_DIR)/baseline-noise.json

# The Open Inference Protocol paths (JSON, binary, system shared memory) next to Triton (PyTriton)
# and MLServer on a ResNet-50-sized model. The peers get their own virtualenvs: nvidia-pytriton
# pins numpy 1.26, and its stub needs Debian's python3.11 (its libpython) rather than pyenv's.
BENCH_VENVS ?= $(HOME)/.cache/mlos-bench
PYTRITON_PY := $(BENCH_VENVS)/pytriton/bin/python
$(PYTRITON_PY):
	mkdir -p $(BENCH_VENVS)
	/usr/bin/python3.11 -m venv $(BENCH_VENVS)/pytriton && \
		$(BENCH_VENVS)/pytriton/bin/pip install -q nvidia-pytriton==0.7.0 onnxruntime

bench-oip: setup $(PYTRITON_PY)
	mkdir -p $(BENCH_DIR) $(BENCH_VENVS)
	test -x $(BENCH_VENVS)/mlserver/bin/python || { $(PYTHON) -m venv $(BENCH_VENVS)/mlserver && \
		$(BENCH_VENVS)/mlserver/bin/pip install -q mlserver==1.7.1 onnxruntime; }
	$(PY) -m benchmarks.vision_model
	$(PY) -m pytest benchmarks/test_oip.py -p no:cacheprovider --benchmark-only \
		--benchmark-json=$(BENCH_DIR)/oip-benchmark.json -q
	$(PY) -m benchmarks.report_oip $(BENCH_DIR)/oip.json

# `make run`'s first start: cold (a fresh data dir, MiniLM converted) and warm, to all demo models ready.
bench-startup: setup
	mkdir -p $(BENCH_DIR)
	$(PY) -m pytest benchmarks/test_startup.py -p no:cacheprovider --benchmark-only -q -s

# The Open Inference Protocol over gRPC against HTTP binary and JSON on mlos-core, and against
# Triton's gRPC endpoint (PyTriton, as bench-oip), on the ResNet-50 and a small MatMul.
bench-grpc: setup $(PYTRITON_PY)
	mkdir -p $(BENCH_DIR)
	$(PY) -m benchmarks.vision_model
	$(PY) -m pytest benchmarks/test_grpc.py -p no:cacheprovider --benchmark-only \
		--benchmark-json=$(BENCH_DIR)/grpc-benchmark.json -q
	$(PY) -m benchmarks.report_grpc $(BENCH_DIR)/grpc.json
# The cluster path (benchmarks/test_cluster.py): a Ray cluster of a head and two worker nodes
# started by the benchmark itself on this machine; a compute-bound ONNX model with 1 vs 2
# replicas (and the single-process server), and the front door's overhead at one client.
bench-cluster: setup
	mkdir -p $(BENCH_DIR)
	$(PY) -m pytest benchmarks/test_cluster.py -p no:cacheprovider --benchmark-only \
		--benchmark-json=$(BENCH_DIR)/cluster.json -q
	$(PY) -m benchmarks.report_cluster $(BENCH_DIR)/cluster.json

kmod:
	$(MAKE) -C kmod build

# Boots Debian's kernel under qemu (TCG) with the module loaded and runs the guest checks;
# PYTEST_ARGS="tests/kernel_shim -q" also runs that suite inside the guest with MLOS_KERNEL=on.
kmod-test: setup
	$(MAKE) -C kmod test PYTEST_ARGS="$(PYTEST_ARGS)" MODULE_PARAMS="$(MODULE_PARAMS)" \
		VM_TIMEOUT="$(VM_TIMEOUT)" OUT_DIR="$(OUT_DIR)"

# The kernel path's benchmark (benchmarks/test_kernel_path.py) inside the guest: zero-copy over
# /dev/mlos-ml vs the userspace broker vs JSON/HTTP, and priority under a CPU hog. Emulated
# (TCG): compare the ratios. The JSON comes back to $(BENCH_DIR)/kernel.json. MLOS_BENCH_*
# variables (MLOS_BENCH_KPATH_SCALE, MLOS_BENCH_PRIO_SECONDS) reach the guest.
bench-kmod: setup
	mkdir -p $(BENCH_DIR)
	$(MAKE) --no-print-directory kmod-test VM_TIMEOUT=3000 OUT_DIR=$(abspath $(BENCH_DIR)) \
		PYTEST_ARGS="benchmarks/test_kernel_path.py benchmarks/test_kernel_priority.py --benchmark-only \
		--benchmark-json=/tmp/mlos-out/kernel.json -q"
	$(PY) -m benchmarks.report_kernel $(BENCH_DIR)/kernel.json

clean:
	rm -rf $(VENV) build *.egg-info
