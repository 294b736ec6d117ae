# Two commands do all the set-up on a fresh machine:
#   make demo   builds the environments if missing, meta-trains, evaluates, deploys to a simulated device
#   make test   builds the environments if missing and runs the test suite
VENV      := .venv
LAVA_VENV := .venv-lava
PY        := $(VENV)/bin/python
LAVA_PY   := $(LAVA_VENV)/bin/python
PIP_FLAGS := --quiet --disable-pip-version-check
CHROMIUM  := /usr/bin/chromium
ARM_GCC   := /usr/bin/arm-none-eabi-gcc
QEMU_ARM  := /usr/bin/qemu-system-arm
MOSQUITTO := /usr/sbin/mosquitto
FIRMWARE  := build/mcu/firmware.elf
# Cortex-M4F with its single-precision FPU; float contraction on (vfma); no C runtime start files (firmware_sim/mcu/board.c)
MCU_CFLAGS := -std=c11 -O2 -ffp-contract=fast -Wall -Wextra -Werror -Wdouble-promotion -ffunction-sections -fdata-sections \
	-mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16 --specs=nano.specs --specs=rdimon.specs -nostartfiles
SUDO      := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: demo test test-fast lint env firmware bench docs clean help

help:
	@echo "make demo   meta-train 6 algorithms on the demodulation task, evaluate, deploy Meta-SGD to a simulated device"
	@echo "make test   check lint and format (ruff), then run the test suite (both environments)"
	@echo "make lint   ruff check and ruff format --check over the source tree"
	@echo "make test-fast  the tests not marked slow (no meta-training runs of seconds or more), for the edit-test loop"
	@echo "make bench  batched meta-training core vs per-task loop (JSON in docs/benchmarks/meta-train.json)"
	@echo "make docs   build the documentation site into site/ (strict: a broken link or a missing page fails)"
	@echo "make env    build .venv (Python 3.11+, everything) and .venv-lava (Python 3.10, Lava, no torch); install Chromium, the Arm toolchain, QEMU and Mosquitto"
	@echo "make firmware  build the Cortex-M4F firmware of the mcu target into $(FIRMWARE)"
	@echo "make clean  remove the environments and demo output"

env: $(VENV)/.installed $(LAVA_VENV)/.installed $(CHROMIUM) $(ARM_GCC) $(QEMU_ARM) $(MOSQUITTO)

# Debian's Chromium, for the tests that open the HTML report and the docs site in a real browser (headless)
$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "error: the page tests need Chromium at $(CHROMIUM) (Debian/Ubuntu: apt-get install chromium)" >&2; exit 1; }
	$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null

# Debian's Arm bare-metal toolchain (GCC 12 with newlib) and QEMU, for the mcu target's firmware and its emulated board
$(ARM_GCC) $(QEMU_ARM):
	@command -v apt-get >/dev/null || { echo "error: the mcu target needs gcc-arm-none-eabi and qemu-system-arm (Debian/Ubuntu: apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm)" >&2; exit 1; }
	$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm >/dev/null

# Debian's Eclipse Mosquitto, the fleet's MQTT broker (metaedge fleet up, and the fleet tests start it on loopback)
$(MOSQUITTO):
	@command -v apt-get >/dev/null || { echo "error: the fleet needs the Mosquitto broker (Debian/Ubuntu: apt-get install mosquitto)" >&2; exit 1; }
	$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq mosquitto >/dev/null

firmware: $(FIRMWARE)

$(FIRMWARE): $(wildcard firmware_sim/mcu/*.c firmware_sim/mcu/*.h) firmware_sim/mcu/firmware.ld | $(ARM_GCC)
	@mkdir -p $(dir $@)
	arm-none-eabi-gcc $(MCU_CFLAGS) -T firmware_sim/mcu/firmware.ld -Wl,--gc-sections -Wl,-Map=$(@:.elf=.map) $(filter %.c,$^) -o $@

# Main environment: Python 3.11+, every extra, pinned by constraints/main.txt (CPU torch 2.13.0).
$(VENV)/.installed: pyproject.toml setup.py constraints/main.txt
	@test -x $(PY) || { py=$$(scripts/find-python main) && echo "creating $(VENV) with $$py" && $$py -m venv $(VENV); }
	$(PY) -m pip install $(PIP_FLAGS) -c constraints/main.txt -e '.[all,dev,docs]'
	@touch $@

# Lava environment: Python 3.10, lava-nc 0.10.0 with numpy<2, device-side extras only, no torch.
$(LAVA_VENV)/.installed: pyproject.toml setup.py constraints/lava.txt
	@test -x $(LAVA_PY) || { py=$$(scripts/find-python lava) && echo "creating $(LAVA_VENV) with $$py" && $$py -m venv $(LAVA_VENV); }
	$(LAVA_PY) -m pip install $(PIP_FLAGS) -c constraints/lava.txt -e '.[loihi,onnx,dev]'
	@if $(LAVA_PY) -c 'import torch' 2>/dev/null; then echo "error: torch is installed in $(LAVA_VENV); the device side must run without it" >&2; exit 1; fi
	@touch $@

demo: env
	$(VENV)/bin/metaedge demo

SOURCES := api sdk deploy backends firmware_sim scripts tests

lint: env
	$(VENV)/bin/ruff check $(SOURCES)
	$(VENV)/bin/ruff format --check $(SOURCES)

# pytest exits 5 when it collected no tests: that must fail, not pass silently.
test: env lint firmware
	@METAEDGE_LAVA_PYTHON=$(abspath $(LAVA_PY)) $(PY) -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-fast: env firmware
	@METAEDGE_LAVA_PYTHON=$(abspath $(LAVA_PY)) $(PY) -m pytest -m "not slow"

bench: env
	@mkdir -p docs/benchmarks
	$(VENV)/bin/metaedge bench meta-train --json > docs/benchmarks/meta-train.json
	@cat docs/benchmarks/meta-train.json

docs: env
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) $(LAVA_VENV) runs/demo site build
