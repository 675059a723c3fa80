.PHONY: setup quality style test test-slow demo

setup:
	bash scripts/setup.sh

quality:
	.venv/bin/ruff check .

style:
	.venv/bin/ruff check --fix .

test:
	.venv/bin/python -m pytest -q

test-slow:
	RUN_SLOW=1 .venv/bin/python -m pytest -q

demo:
	.venv/bin/centerfocus demo
