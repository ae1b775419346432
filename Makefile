# lua-beeos: build, test and install.
#
#   make            build build/lua5.4/beeos/core.so (Lua 5.4)
#   make lua51      the same sources against Lua 5.1/LuaJIT headers (OpenResty)
#   make test       install missing Debian packages, build, run every test
#   make demo       stream a reply from the bundled mock server
#   make sanitize   C tests and specs under ASan+UBSan, then valgrind memcheck
#   make fuzz       libFuzzer run of the SSE parser (bounded time)
#   make bench      benchmarks; figures go to bench/RESULTS.md by hand
#   make install    into $(PREFIX)/lib/lua/$(LUA_VERSION) and $(PREFIX)/share/lua/$(LUA_VERSION)

LUA_VERSION ?= 5.4
LUA ?= lua$(LUA_VERSION)
LUA_INCDIR ?= /usr/include/lua$(LUA_VERSION)
LUA51_INCDIR ?= /usr/include/lua5.1
PREFIX ?= /usr/local
LUA_LIBDIR ?= $(PREFIX)/lib/lua/$(LUA_VERSION)
LUA_SHAREDIR ?= $(PREFIX)/share/lua/$(LUA_VERSION)
CURL_CFLAGS ?= $(shell curl-config --cflags 2>/dev/null)
CURL_LIBS ?= $(shell curl-config --libs 2>/dev/null || echo -lcurl)

CC ?= cc
OPT ?= -O2
WARN = -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CFLAGS_BASE = -std=c99 -D_POSIX_C_SOURCE=200809L -fPIC $(WARN)
CFLAGS ?= $(OPT) -g
LDFLAGS_SO = -shared -fvisibility=hidden

BUILD = build
PURE_SRC = src/buf.c src/sse.c src/evq.c src/engine.c src/fastjson.c
CORE_SRC = $(PURE_SRC) src/lbeeos.c
CORE_HDR = $(wildcard src/*.h)
CORE54 = $(BUILD)/lua$(LUA_VERSION)/beeos/core.so
CORE51 = $(BUILD)/lua5.1/beeos/core.so

# Debian packages `make test` and `make demo` need; installed when missing.
DEB_PACKAGES = gcc make pkg-config python3 openssl lua5.4 liblua5.4-dev lua5.1 liblua5.1-0-dev luajit2 \
	libluajit2-5.1-dev lua-cjson lua-busted lua-socket lua-luv lua-check libcurl4-openssl-dev curl luarocks
DEB_SANITIZE = clang valgrind libclang-rt-14-dev
DEB_BENCH = nginx libnginx-mod-http-lua lua-resty-core

.PHONY: all lua51 deps deps-sanitize deps-bench test ctest demo sanitize fuzz bench install \
	uninstall clean rock-check

all: $(CORE54)

lua51: $(CORE51)

$(CORE54): $(CORE_SRC) $(CORE_HDR)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_BASE) $(CFLAGS) -I$(LUA_INCDIR) $(CURL_CFLAGS) $(LDFLAGS_SO) \
		-o $@ $(CORE_SRC) $(CURL_LIBS)

# Not linked to liblua: symbols resolve against the host (lua5.1, luajit,
# nginx with ngx_lua).
$(CORE51): $(CORE_SRC) $(CORE_HDR)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_BASE) $(CFLAGS) -I$(LUA51_INCDIR) $(CURL_CFLAGS) $(LDFLAGS_SO) \
		-o $@ $(CORE_SRC) $(CURL_LIBS)

deps:
	@sh tools/deps.sh $(DEB_PACKAGES)

deps-sanitize:
	@sh tools/deps.sh $(DEB_PACKAGES) $(DEB_SANITIZE)

# The benchmarks' baselines: nginx + ngx_lua as the load server, Node.js for
# eventsource-parser (Debian's nodejs and npm unless a node is already on PATH).
deps-bench:
	@sh tools/deps.sh $(DEB_PACKAGES) $(DEB_BENCH)
	@command -v npm >/dev/null 2>&1 || sh tools/deps.sh nodejs npm

# C unit tests of the pure C parts: no Lua anywhere in these binaries.
CTESTS = $(patsubst tests/c/%.c,$(BUILD)/ctest/%,$(wildcard tests/c/test_*.c))

$(BUILD)/ctest/%: tests/c/%.c $(PURE_SRC) $(CORE_HDR) $(wildcard tests/c/*.h)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_BASE) $(CFLAGS) -Isrc $(CURL_CFLAGS) -o $@ $< $(PURE_SRC) $(CURL_LIBS) $(CTEST_LIBS)

ctest: $(CTESTS)

test: deps
	@$(MAKE) --no-print-directory all lua51 ctest
	@sh tools/run-tests.sh

demo: deps all
	@sh tools/demo.sh

install: all
	install -d $(DESTDIR)$(LUA_LIBDIR)/beeos $(DESTDIR)$(LUA_SHAREDIR)/beeos/transport \
		$(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(CORE54) $(DESTDIR)$(LUA_LIBDIR)/beeos/core.so
	install -m 0644 lua/beeos/*.lua $(DESTDIR)$(LUA_SHAREDIR)/beeos/
	install -m 0644 lua/beeos/transport/*.lua $(DESTDIR)$(LUA_SHAREDIR)/beeos/transport/
	install -m 0755 bin/beeos-mock $(DESTDIR)$(PREFIX)/bin/beeos-mock

uninstall:
	rm -rf $(DESTDIR)$(LUA_LIBDIR)/beeos $(DESTDIR)$(LUA_SHAREDIR)/beeos \
		$(DESTDIR)$(PREFIX)/bin/beeos-mock

rock-check: deps
	@sh tools/rock-check.sh

# Each benchmark lives in mk/bench_*.mk; figures go to bench/RESULTS.md.
bench: deps-bench
	@$(MAKE) --no-print-directory all bench-sse bench-api bench-concurrency

-include mk/*.mk

clean:
	rm -rf $(BUILD)
