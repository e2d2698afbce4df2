# The two commands of the README. Both create or reuse .venv (scripts/bootstrap.sh) first.
.PHONY: run test lint bootstrap compile

bootstrap:
	@bash scripts/bootstrap.sh

## The main job: the whole pipeline, compiled and run locally through kfp.local on the bundled example.
run: bootstrap
	.venv/bin/intentops run $(ARGS)

## The test suite (what CI runs).
test: bootstrap
	.venv/bin/ruff check .
	.venv/bin/python -m pytest $(ARGS)

lint: bootstrap
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

compile: bootstrap
	.venv/bin/intentops compile
