# Two entry points for a newcomer: `make demo` and `make test`. Both create .venv if missing.
PYTHON ?= python3
VENV ?= .venv
# CPU build from the machine's local wheel; GPU users: make TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 90

.PHONY: demo test test-slow lint clean mlflow-ui prefect-ui

$(BIN)/segflow: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/segflow
	$(BIN)/segflow demo

test: $(BIN)/segflow
	$(BIN)/python -m pytest -q

# The tests `make test` leaves out: crash tests of the real commands and other long ones.
test-slow: $(BIN)/segflow
	$(BIN)/python -m pytest -q -m slow

# The UIs over what the demo wrote (WORKDIR=work), bound to 127.0.0.1; MLflow without its job
# runner (several worker processes otherwise).
WORKDIR ?= work
mlflow-ui: $(BIN)/segflow
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --workers 1 \
		--backend-store-uri sqlite:///$(abspath $(WORKDIR))/mlflow.db --host 127.0.0.1 --port 5000

prefect-ui: $(BIN)/segflow
	PREFECT_HOME=$(abspath .segflow/prefect) $(BIN)/prefect server start --host 127.0.0.1 --port 4200

lint: $(BIN)/segflow
	$(BIN)/ruff check .

clean:
	rm -rf .segflow work
