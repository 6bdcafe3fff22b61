# `make demo` runs the main job, `make test` the whole test suite; both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench report clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ldct-denoise demo --out demo-output

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/inference.py

# The evaluation study (docs/evaluation). BM3D is an optional baseline under a non-commercial
# licence: `make report BM3D=no` leaves it out (the report then says it was not run).
BM3D ?= yes
report: $(STAMP)
ifeq ($(BM3D),yes)
	$(BIN)/python -m pip install --quiet "bm3d>=4.0"
endif
	$(BIN)/python -m evaluation --out docs/evaluation

clean:
	rm -rf $(VENV) demo-output
