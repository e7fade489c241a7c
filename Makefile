# PGXS build of the flint_keys extension: make, make install, make installcheck.
# The Postgres-free core's unit tests and benchmarks build with CMake (see README).
EXTENSION = flint_keys
MODULE_big = flint_keys
DATA = $(wildcard flint_keys--*.sql)
PGFILEDESC = "flint_keys - merchant-bound, scoped API keys"

CORE_SRCS = $(sort $(wildcard src/core/*.cpp))
PG_SRCS = $(sort $(wildcard src/pg/*.cpp))
OBJS = $(CORE_SRCS:.cpp=.o) $(PG_SRCS:.cpp=.o)

PG_CONFIG ?= pg_config
# Postgres's server headers as system headers: their old-C idioms must not
# trip -Wextra -Werror in our C++17.
PG_CPPFLAGS = -isystem $(shell $(PG_CONFIG) --includedir-server) -isystem $(shell $(PG_CONFIG) --includedir) -Isrc/core
PG_CXXFLAGS = -std=c++17 -Wall -Wextra -Werror -Wno-missing-field-initializers
# libpq: a standby's forwarder sends its log rows to the primary.
SHLIB_LINK += -lstdc++ -lcrypto -lpq

# Tests, the PGXS way. `make installcheck`, as a non-root user after `sudo
# make install`, runs the regression suite (sql -> expected), the
# isolation specs (test/isolation/specs) and the TAP tests (test/t), each
# against throwaway servers of its own started with test/regress.conf: the log
# worker must be connected to the test database, which an existing server's
# worker would keep pg_regress from dropping. `make installcheck
# REGRESS=03_verify ISOLATION= TAP_TESTS=` runs one regression file alone.
# sql/ and expected/ are PGXS's own layout (pg_regress's default --inputdir);
# every other test lives under test/. These wildcards are the one list of tests: test/run_tests.sh (which also
# runs them as root, and the regression suite under valgrind) and
# test/deb_installcheck.sh take the same files from the same directories.
REGRESS = $(sort $(basename $(notdir $(wildcard sql/*.sql))))
REGRESS_OPTS = --load-extension=flint_keys --temp-instance=./tmp_check \
	--temp-config=test/regress.conf --encoding=UTF8 --no-locale
# The specs create and drop the extension themselves.
ISOLATION = $(sort $(basename $(notdir $(wildcard test/isolation/specs/*.spec))))
ISOLATION_OPTS = --inputdir=test/isolation --temp-instance=./tmp_check_iso \
	--temp-config=test/regress.conf --encoding=UTF8 --no-locale
# prove runs test/t/*.pl from here with PostgreSQL::Test::Cluster, the
# server binaries first on PATH, and FLINT_SRC (the tests that need the
# examples, contrib/ or README.md read them from it) this tree.
TAP_TESTS = 1
# FLINT_TAP_TESTS (environment) may name a subset: the pgxn suite's `pgxn
# check` runs the install tests there, the tap suite runs them all.
PROVE_TESTS = $(if $(FLINT_TAP_TESTS),$(FLINT_TAP_TESTS),$(sort $(wildcard test/t/*.pl)))
FLINT_SRC ?= $(CURDIR)
export FLINT_SRC

# PGXS would compile LLVM bitcode with clang, ignoring PG_CXXFLAGS: C++17
# fails there. The extension gains nothing from JIT inlining; build none.
override with_llvm := no

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# Both suites in pg_regress's database contrib_regression, where
# test/regress.conf points the log worker (pgxs.mk names isolation's
# database isolation_regression otherwise).
ISOLATION_TESTDB = contrib_regression

# C++ standard library and PGXS's C-only warning flags do not mix. -MMD: rebuild
# what includes a changed header (a stale struct layout is a silent crash).
override CXXFLAGS := $(filter-out -Wmissing-prototypes -Wdeclaration-after-statement -Werror=vla,$(CXXFLAGS)) -MMD -MP
-include $(OBJS:.o=.d)
EXTRA_CLEAN += $(OBJS:.o=.d)

.PHONY: format-check
format-check:
	clang-format --dry-run --Werror $(CORE_SRCS) $(PG_SRCS) src/core/*.hpp src/pg/*.hpp test/unit/*.cpp test/bench/*.cpp test/fuzz/*.cpp

# Packaging. `make deb`: the Debian package postgresql-15-flint-keys (debian/,
# pg_buildext), built from a clean copy of HEAD, into dist/ (scripts/build_deb.sh).
# `make dist`: the PGXN release dist/flint_keys-<version>.zip of HEAD, where
# <version> is default_version as a semantic version (1.1 -> 1.1.0), as in
# META.json (test/pgxn/check_meta.py checks they agree).
DIST_VERSION = $(shell sed -n "s/^default_version *= *'\([^']*\)'.*/\1/p" $(EXTENSION).control | awk -F. '{ printf "%d.%d.%d", $$1, $$2, $$3 }')

.PHONY: deb dist
deb:
	bash scripts/build_deb.sh

dist:
	python3 test/pgxn/check_meta.py
	mkdir -p dist
	git archive --format zip --prefix=$(EXTENSION)-$(DIST_VERSION)/ -o dist/$(EXTENSION)-$(DIST_VERSION).zip HEAD
	@echo "built dist/$(EXTENSION)-$(DIST_VERSION).zip"

# PGXN: `pgxn check -d DB` runs `make installcheck CONTRIB_TESTDB=DB`. The
# suites run on temporary instances of their own, whose log worker
# test/regress.conf points at contrib_regression: in any other database every
# verification that waits for the worker times out and fails. A temporary
# instance's database name matters to no one, so the suites keep
# contrib_regression whatever the command line says (the pgxn suite of
# test/run_tests.sh runs `pgxn check -d` from the release zip).
override CONTRIB_TESTDB := contrib_regression
