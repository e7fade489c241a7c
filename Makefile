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
PG_CPPFLAGS = -isystem $(shell $(PG_CONFIG) --includedir-server) -Isrc/core
PG_CXXFLAGS = -std=c++17 -Wall -Wextra -Werror -Wno-missing-field-initializers
SHLIB_LINK += -lstdc++ -lcrypto

# make installcheck (as a non-root user) starts its own throwaway server with
# test/regress.conf: the log worker must be connected to the test database,
# which an existing server's worker would keep pg_regress from dropping.
# test/run_tests.sh runs this and every other suite, as root or not.
REGRESS = $(basename $(notdir $(wildcard test/sql/*.sql)))
REGRESS_OPTS = --inputdir=test --load-extension=flint_keys --temp-instance=./tmp_check --temp-config=test/regress.conf --encoding=UTF8 --no-locale \
	--dbname=contrib_regression

# PGXS would compile LLVM bitcode with clang, ignoring PG_CXXFLAGS: C++17
# fails there. The extension gains nothing from JIT inlining; build none.
override with_llvm := no

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

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
