# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Installs are stamped so a second run is incremental and fast.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
PIP := $(VENV)/bin/python -m pip
PYTHON := $(VENV)/bin/python
SHARED ?= ../shared
NUSCENES ?=
PYTEST_ARGS ?=
export PIP_DISABLE_PIP_VERSION_CHECK=1

.PHONY: all install install-ros sysdeps test test-fast demo bench weights weights-camera weights-fusion eval-seeds clean help

help:
	@echo "make test    - create .venv, install everything, run the whole suite"
	@echo "make demo    - same set-up, then run the main job (synthetic world + shipped weights)"
	@echo "make bench   - run the benchmarks in bench/ (JSON + Markdown in out/bench)"
	@echo "make weights - re-train both shipped tiny weights: camera-only (training/tiny_ship.yaml) and fusion"
	@echo "               (training/tiny_fusion.yaml + tiny_fusion_flow.yaml + tiny_fusion_cycle.yaml); needs the"
	@echo "               ../shared nuScenes sample; ~2.5 h on a 2-core CPU"

$(VENV)/bin/python:
	@command -v $(PY) >/dev/null || { echo "need $(PY) (Python 3.11) on PATH"; exit 1; }
	$(PY) -m venv $(VENV)

# torch is installed FIRST and pinned: an unpinned torch drags GBs of CUDA wheels.
.stamp-torch: $(VENV)/bin/python requirements/torch.txt
	$(PIP) install -q -r requirements/torch.txt
	@touch $@

.stamp-core: .stamp-torch requirements/core.txt requirements/dev.txt requirements/nuscenes.txt setup.py
	$(PIP) install -q -r requirements/core.txt -r requirements/dev.txt
	# nuscenes-devkit 1.2.0 pins numpy<2: install it alone without deps, then its real needs.
	$(PIP) install -q --no-deps nuscenes-devkit==1.2.0
	$(PIP) install -q -r requirements/nuscenes.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	@touch $@

# Real rclpy + messages (unofficial ros-jazzy-* wheels). Failure is not fatal: the ROS tests
# then skip with a loud reason, never faked.
.stamp-ros: .stamp-core requirements/ros.txt
	@if $(PIP) install -q -r requirements/ros.txt; then touch $@; \
	 else echo "WARNING: ros-jazzy-* wheels could not be installed; ROS tests will be skipped"; fi

# Debian libraries open3d needs (offscreen rendering through Vulkan on llvmpipe). Best effort.
.stamp-sysdeps:
	@if ldconfig -p | grep -q libusb-1.0.so.0 && ldconfig -p | grep -q libvulkan.so.1; then touch $@; \
	 elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	   (apt-get install -y -q libusb-1.0-0 libvulkan1 mesa-vulkan-drivers >/dev/null 2>&1 || \
	    (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q libusb-1.0-0 libvulkan1 mesa-vulkan-drivers >/dev/null 2>&1)) \
	   && touch $@ || echo "WARNING: apt could not install libusb/vulkan; point-cloud renders will be skipped"; \
	 else echo "WARNING: not root, cannot apt-get libusb-1.0-0 libvulkan1 mesa-vulkan-drivers"; fi

# open3d for the demo's point-cloud renders; the renders skip with a reason if it cannot be imported.
.stamp-viz: .stamp-core requirements/viz.txt
	@if $(PIP) install -q -r requirements/viz.txt; then touch $@; \
	 else echo "WARNING: open3d could not be installed; point-cloud renders will be skipped"; fi

install: .stamp-core .stamp-ros .stamp-sysdeps .stamp-viz

test: install
	$(PYTHON) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PYTHON) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: install
	$(VENV)/bin/mv4d demo --out out/demo $(if $(NUSCENES),--nuscenes $(NUSCENES),) --shared $(SHARED)

bench: install
	$(PYTHON) -m bench.run_all --out out/bench

# The recipes behind mv4d_core/weights/: camera-only (mv4d_tiny.pt) and with the LiDAR as an input
# (mv4d_tiny_fusion.pt); each is trained (synthetic + the nuScenes sample in $(SHARED)), evaluated on
# unseen synthetic seeds, then slimmed with its provenance.
RUN ?= runs/tiny_ship
FUSION_RUN ?= runs/tiny_fusion
weights: weights-camera weights-fusion

eval-seeds: install
	rm -rf runs/data/seed100 runs/data/seed101    # re-rendered: the GT follows the current code
	$(VENV)/bin/mv4d synth --out runs/data/seed100 --frames 12 --seed 100
	$(VENV)/bin/mv4d synth --out runs/data/seed101 --frames 12 --seed 101

weights-camera: install eval-seeds
	$(VENV)/bin/mv4d train --config training/tiny_ship.yaml --out $(RUN) --time-budget-min 55
	$(VENV)/bin/mv4d eval --checkpoint $(RUN)/last.pt --data runs/data/seed100 runs/data/seed101 \
	  --camera-only-checkpoint none --json $(RUN)/eval_unseen.json
	$(PYTHON) -m mv4d_core.training.ship --checkpoint $(RUN)/last.pt --eval $(RUN)/eval_unseen.json \
	  --out mv4d_core/weights/mv4d_tiny.pt --note "tiny config, training/tiny_ship.yaml"

weights-fusion: install eval-seeds
	$(VENV)/bin/mv4d train --config training/tiny_fusion.yaml --out $(FUSION_RUN)
	$(VENV)/bin/mv4d train --config training/tiny_fusion_flow.yaml --out $(FUSION_RUN) --resume --max-steps 2700
	$(VENV)/bin/mv4d train --config training/tiny_fusion_cycle.yaml --out $(FUSION_RUN) --resume --max-steps 3500
	$(VENV)/bin/mv4d eval --checkpoint $(FUSION_RUN)/last.pt --data runs/data/seed100 runs/data/seed101 \
	  --json $(FUSION_RUN)/eval_unseen.json
	$(PYTHON) -m mv4d_core.training.ship --checkpoint $(FUSION_RUN)/last.pt --eval $(FUSION_RUN)/eval_unseen.json \
	  --out mv4d_core/weights/mv4d_tiny_fusion.pt \
	  --note "tiny fusion config, training/tiny_fusion.yaml, then training/tiny_fusion_flow.yaml, then training/tiny_fusion_cycle.yaml"

clean:
	rm -rf $(VENV) .stamp-* out .pytest_cache
