# `make demo` runs the main job, `make test` the whole test suite; both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slicer-python bench report gpu-pack check-extension clean

# Slicer 5.8's Python (3.9) with the packages it ships: the module's code must run there too.
SLICER_PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.9*/bin/python3.9 /usr/bin/python3.9 /usr/local/bin/python3.9))
SLICER_VENV := .venv-slicer5.8
SLICER_PYTHON_TESTS := Testing/test_io.py Testing/test_roi.py Testing/test_density.py Testing/test_alignment.py \
	Testing/test_atomic.py Testing/test_comparison.py Testing/test_handoff.py Testing/test_requirements.py Testing/test_dicom_fuzz.py

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
	$(BIN)/vermin --no-tips --violations --target=3.9- LDCTDenoise
	$(BIN)/python -m pytest
	$(MAKE) test-slicer-python

$(SLICER_VENV)/.installed: Testing/environments/slicer-5.8.txt LDCTDenoise/LDCTDenoiseLib/slicer/requirements.py
	@test -n "$(SLICER_PYTHON)" || { echo "no python3.9 found: set SLICER_PYTHON=/path/to/python3.9"; exit 1; }
	rm -rf $(SLICER_VENV)
	$(SLICER_PYTHON) -m venv $(SLICER_VENV)
	$(SLICER_VENV)/bin/python -m pip install --quiet -r Testing/environments/slicer-5.8.txt \
		$$(PYTHONPATH=LDCTDenoise $(SLICER_VENV)/bin/python -m LDCTDenoiseLib.slicer.requirements)
	touch $@

# The tests that need no torch (its CPU wheel here is for Python 3.11 only) nor slicer-core (no 3.9 wheel).
test-slicer-python: $(SLICER_VENV)/.installed
	PYTHONPATH=LDCTDenoise $(SLICER_VENV)/bin/python -m pytest -p no:cacheprovider $(SLICER_PYTHON_TESTS)

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
	$(BIN)/python -m evaluation.adaptation --out docs/evaluation/adaptation

# Issue 11's GPU recipe (training/README.md, "On a lent GPU"): the training and validation series packed
# to fit what travels to the device (64 MiB with the working tree), and the wheels the device lacks.
PYDICOM_PIN := $(shell grep -i '^pydicom==' requirements.lock)
PLATFORMDIRS_PIN := $(shell grep -i '^platformdirs==' requirements.lock)
gpu-pack: $(STAMP)
	rm -rf gpu-pack .whl
	$(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation py --platform any -d .whl $(PYDICOM_PIN) $(PLATFORMDIRS_PIN)
	$(BIN)/ldct-train pack --config gpu-scanner --set data.dataset=training/datasets/shared-ct-all.csv --out gpu-pack

check-extension: $(STAMP)
	$(BIN)/python release/check_extension.py

clean:
	rm -rf $(VENV) $(SLICER_VENV) demo-output
