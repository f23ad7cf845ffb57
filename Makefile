# Set-up and the two jobs. Works on a fresh Debian machine with Python 3.11 and the package registries.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
SUDO    = $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FASHION = /usr/share/datasets/fashion-mnist

.PHONY: install data browser run test test-fast lint docs bench clean

$(BIN)/ofasearch: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/ofasearch

# Fashion-MNIST from Debian's dataset-fashion-mnist (MIT); tests and the default job read it offline.
data:
	@[ -d $(FASHION) ] || $(SUDO) apt-get install -y -q dataset-fashion-mnist \
	  || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q dataset-fashion-mnist)

# Headless Chromium (Debian) for the test that opens report.html the way a user's browser would.
browser:
	@command -v chromium >/dev/null || $(SUDO) apt-get install -y -q chromium \
	  || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium)

run: install data
	$(BIN)/ofasearch run search_spaces/cnn_to_vit.yaml

lint: install
	$(BIN)/ruff check ofasearch tests scripts docs

# The docs site (docs/, mkdocs.yml) into site/; --strict: a broken link or reference fails it.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

test: install data browser lint docs
	$(BIN)/pytest -q

# The fast tier while iterating: no Ray and no search (about 2 minutes on 2 cores); CI runs `make test`.
test-fast: install data
	$(BIN)/pytest -q -m "not slow"

bench: install data
	$(BIN)/python scripts/bench_step.py
	$(BIN)/python scripts/bench_teacher_cache.py
	$(BIN)/python scripts/bench_search.py
	$(BIN)/python scripts/bench_recipes.py
	$(BIN)/python scripts/bench_views.py

clean:
	rm -rf $(VENV) runs site *.egg-info
