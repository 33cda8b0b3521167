# oneiric — two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
VAR    := $(CURDIR)/var

.PHONY: fleet-sim venv run test test-pythons lint typecheck check-imports unit bench soak clean deb e2e-systemd check-units

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	mkdir -p $(VAR)/run $(VAR)/state
	ONEIRIC_CONFIG=$(CURDIR)/examples/oneiricd.toml RUNTIME_DIRECTORY=$(VAR)/run \
	STATE_DIRECTORY=$(VAR)/state PYTHONPATH=$(CURDIR)/examples \
	$(VENV)/bin/oneiricd --log-level info

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench tools packaging
	$(VENV)/bin/ruff format --check src tests bench tools packaging

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# no import cycles among src/oneiric's modules (TYPE_CHECKING and lazy imports count)
check-imports: $(STAMP)
	$(PY) -m tools.check_imports src/oneiric

unit: $(STAMP)
	$(VENV)/bin/pytest --cov --cov-report=term -q

test: $(STAMP) lint typecheck check-imports check-units unit

# the whole suite on Python 3.11, 3.12 and 3.13 (one .venv-3.X each; PYTHONS="3.13" for one)
test-pythons:
	bash tools/test-pythons.sh

check-units:
	bash contrib/systemd/check-units.sh

# Debian packages: bookworm (Debian 12, Python 3.11) and trixie (Debian 13, Python 3.13)
deb: $(STAMP)
	bash packaging/build-deb.sh
	DEB_SUITE=trixie bash packaging/build-deb.sh

# the package under a real systemd in nspawn: systemd 252 on Debian 12, then 257 on Debian 13
e2e-systemd: deb
	NS_SUITE=bookworm bash tests/e2e/systemd.sh
	NS_SUITE=trixie bash tests/e2e/systemd.sh

# The standing suites of issue 12 at full length (make test runs their short variants):
# hundreds of SIGKILLs, hostile peers x3, every component fault, a minute of 256 clients.
# Figures: printed, and appended to bench/reliability.jsonl (docs/reliability.md quotes them).
soak: $(STAMP)
	ONEIRIC_SOAK=1 ONEIRIC_FIGURES=$(CURDIR)/bench/reliability.jsonl \
	$(VENV)/bin/pytest -q -s -p no:cacheprovider --timeout 3600 \
	tests/test_suite_crash.py tests/test_suite_hostile_peers.py \
	tests/test_suite_hostile_components.py tests/test_suite_load.py

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# One run, one table: every suite side by side (about 6 minutes on 2 cores), figures and
# goals to bench/results.json. SUITES=scale,ops runs a subset.
bench: $(BENCH_STAMP)
	$(PY) bench/run.py --out bench/results.json $(if $(SUITES),--only $(SUITES))

# A fleet you can watch converge (docs/fleet.md): Debian's nginx (installed here when missing,
# then run as our own process on a loopback port, never as the system service), 50 real
# oneiricd processes, and with HOSTS=N that many light hosts at a 60 s refresh.
HOSTS ?= 0
REAL ?= 50
fleet-sim: $(STAMP)
	@command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || { \
	  echo "fleet-sim: installing Debian's nginx-light (the server is started by the simulation itself)"; \
	  apt-get install -y --no-install-recommends nginx-light >/dev/null || \
	  { apt-get update >/dev/null && apt-get install -y --no-install-recommends nginx-light >/dev/null; }; }
	PATH="$$PATH:/usr/sbin" $(PY) bench/fleet_sim.py --real $(REAL) --hosts $(HOSTS)

clean:
	rm -rf $(VENV) .venv-3.* build dist *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache var
