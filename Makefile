# vqclip: `make demo` and `make test` create the environment (.venv) when it is missing or
# older than pyproject.toml, then run.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
# The torch pair tested here: it installs from this machine's disk and imports together
# (pyproject.toml asks only for ranges, so that Colab and conda keep their own CUDA builds).
TORCH_PINS = torch==2.14.1 torchvision==0.29.1
FPS    ?=
ARGS   ?=

.PHONY: env demo test test-fast lint format video notebook bench clean

env: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]' $(TORCH_PINS)
	touch $(STAMP)

demo: $(STAMP)  ## a real generation with the bundled shapes models (their settings), offline: frames + MP4
	$(BIN)/vqclip generate "a red circle on a blue background" --seed 0 --video

test: $(STAMP)  ## the test suite (CPU, tiny models, loopback only); -rP shows measured figures
	$(BIN)/python -m pytest -q -rP --durations=15

test-fast: $(STAMP)  ## the suite without the tests marked slow (the shapes world's quality runs)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check vqclip tests tools
	$(BIN)/ruff format --check vqclip tests tools

format: $(STAMP)
	$(BIN)/ruff check --fix vqclip tests tools
	$(BIN)/ruff format vqclip tests tools

video: $(STAMP)  ## make video RUN=outputs/RUN_DIR [FPS=10] [ARGS="--length 8 --interpolate 30 --overwrite"]
	@test -n "$(RUN)" || (echo "usage: make video RUN=outputs/RUN_DIR [FPS=10] [ARGS=...]" >&2; exit 2)
	$(BIN)/vqclip video "$(RUN)" $(if $(FPS),--fps $(FPS)) $(ARGS)

notebook: $(STAMP)  ## the notebook in local Jupyter: make notebook [ARGS="--ip 127.0.0.1 --port 8899 --no-browser"]
	$(BIN)/jupyter notebook notebooks/vqgan_clip.ipynb $(if $(filter 0,$(shell id -u)),--allow-root) $(ARGS)

bench: $(STAMP)  ## speed against the classic loop, on the real architectures
	$(BIN)/vqclip bench

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
