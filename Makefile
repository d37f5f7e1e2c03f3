# The two commands of the README. Both set everything up first (scripts/setup.sh).
.PHONY: setup run test lint bench-ingest

VENV := .venv/bin

setup:
	bash scripts/setup.sh

run: setup
	$(VENV)/lucent-server run --first-run-admin

test: setup
	$(VENV)/ruff check lucent server workstation admin_console tests bench
	$(VENV)/ruff format --check lucent server workstation admin_console tests bench
	$(VENV)/python -m pytest -n 2 --dist loadfile -q tests

lint: setup
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .

bench-ingest: setup
	$(VENV)/python bench/ingest.py
