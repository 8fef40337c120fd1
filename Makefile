# The two commands of the README:
#   make quickstart   set up, then run the small offline end-to-end job (CPU)
#   make test         set up (with Chromium for the report's browser check), then run the test suite (what CI runs)
VENV ?= .venv
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

.PHONY: setup test test-all quickstart
setup:
	bash scripts/setup.sh

test:
	UWMBENCH_BROWSER=1 bash scripts/setup.sh
	bash scripts/run_tests.sh

test-all: setup
	$(VENV)/bin/python -m pytest -q

quickstart: setup
	$(VENV)/bin/uwmbench quickstart
