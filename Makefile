.PHONY: run test bench lint docs

# Run the demo on http://127.0.0.1:8000/ (starts a local Redis if needed).
run:
	./scripts/run

# Install and start everything the tests need, then run them.
test:
	./scripts/test $(ARGS)

# The benchmark suite (see bench/README.md).
bench:
	./scripts/bench $(ARGS)

# The documentation site, into docs/_build/html (warnings are errors).
docs:
	bash -c 'source scripts/setup.sh && ensure_venv requirements-dev.txt'
	.venv/bin/sphinx-build -W -E -q -b html docs docs/_build/html

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy events project tests
