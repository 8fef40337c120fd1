# The two commands of the README:
#   make quickstart   set up, then run the small offline end-to-end job (CPU)
#   make test         set up, then run the test suite (what CI runs)
VENV ?= .venv
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

.PHONY: setup test test-all quickstart
setup:
	bash scripts/setup.sh

test: setup
	bash scripts/run_tests.sh

test-all: setup
	$(VENV)/bin/python -m pytest -q

quickstart: setup
	$(VENV)/bin/uwmbench quickstart
