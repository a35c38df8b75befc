# The C++ engine: included by the Makefile that Makefile.PL writes.
# CPPFLAGS, CXXFLAGS and LDFLAGS from the environment (dpkg-buildflags) apply.
#   make engine-test      build and run the Catch2 suite (t/engine)
#   make asan-test        the same, built with AddressSanitizer + UBSan in build-asan/

CXX ?= g++
ENGINE_CXXFLAGS = -std=c++20 -O2 -g -Wall -Wextra -Werror=return-type -fPIC \
	-D_FILE_OFFSET_BITS=64 -D_GNU_SOURCE -DENGINE_VERSION='"$(VERSION)"' -Isrc
# GCC 12 reports false maybe-uninitialized warnings in std::regex (via Catch2) under ASan
ASAN_FLAGS = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined \
	-Wno-maybe-uninitialized

ENGINE_SRC := $(sort $(shell find src -name '*.cpp' -not -path 'src/cli/*' -not -path 'src/nbdkit/*'))
CLI_SRC := $(sort $(wildcard src/cli/*.cpp))
NBDKIT_PLUGIN_SRC := $(sort $(wildcard src/nbdkit/*.cpp))
ENGINE_TEST_SRC := $(sort $(wildcard t/engine/*.cpp))
SIM_SRC := $(sort $(wildcard t/sim/*.cpp))

# Catch2 from the Debian release's package: v2 (Debian 12) is header-only, v3
# (Debian 13) has a library too; t/engine/catch2_compat.h picks the headers by
# major version. Expanded only when a test object is built or linked.
catch2_version = $(or $(shell pkg-config --modversion catch2 2>/dev/null),\
	$(error Catch2 not found by pkg-config: install Debian's catch2 package))
CATCH2_CPPFLAGS = $(shell pkg-config --cflags catch2) \
	-DENGINE_CATCH2_MAJOR=$(firstword $(subst ., ,$(catch2_version)))
CATCH2_LIBS = $(shell pkg-config --libs catch2)

define engine_build
$(1)/%.o: %.cpp
	@mkdir -p $$(dir $$@)
	$$(CXX) $$(ENGINE_CXXFLAGS) $$(CPPFLAGS) $$(CXXFLAGS) $$(TEST_CPPFLAGS) $(2) -MMD -MP -c -o $$@ $$<

$$(ENGINE_TEST_SRC:%.cpp=$(1)/%.o): TEST_CPPFLAGS = $$(CATCH2_CPPFLAGS)

$(1)/libengine.a: $$(ENGINE_SRC:%.cpp=$(1)/%.o)
	rm -f $$@
	ar rcs $$@ $$^

$(1)/vma: $$(CLI_SRC:%.cpp=$(1)/%.o) $(1)/libengine.a
	$$(CXX) $$(LDFLAGS) $(2) -o $$@ $$^ $$(ENGINE_LIBS)

# a test that includes a Catch2 header itself builds against one major only
$(1)/engine-tests: $$(ENGINE_TEST_SRC:%.cpp=$(1)/%.o) $(1)/libengine.a
	@! grep -l '^#include <catch2/' $$(ENGINE_TEST_SRC) \
		$$(filter-out t/engine/catch2_compat.h,$$(wildcard t/engine/*.h)) || \
		{ echo 'these include Catch2 directly; include "catch2_compat.h" instead' >&2; exit 1; }
	$$(CXX) $$(LDFLAGS) $(2) -o $$@ $$^ $$(CATCH2_LIBS) $$(ENGINE_LIBS)

# the nbdkit plugin (doc/nbdkit-vma-plugin.pod); the engine stays hidden in it
$(1)/nbdkit-vma-plugin.so: $$(NBDKIT_PLUGIN_SRC:%.cpp=$(1)/%.o) $(1)/libengine.a
	$$(CXX) -shared $$(LDFLAGS) $(2) -Wl,--exclude-libs,ALL -o $$@ $$^ $$(ENGINE_LIBS)

# the pve-qemu QMP simulator the tests run (t/sim)
$(1)/pve-qemu-sim: $$(SIM_SRC:%.cpp=$(1)/%.o) $(1)/libengine.a
	$$(CXX) $$(LDFLAGS) $(2) -o $$@ $$^ $$(ENGINE_LIBS)

-include $$(shell find $(1) -name '*.d' 2>/dev/null)
endef

$(eval $(call engine_build,build,))
$(eval $(call engine_build,build-asan,$(ASAN_FLAGS)))

# the tests (Perl and Catch2) run the vma binary and the simulator from the
# build tree
pure_all :: build/pve-qemu-sim build/nbdkit-vma-plugin.so

# the plugin goes where nbdkit looks for plugins by name (nbdkit vma ...)
NBDKIT_PLUGINDIR ?= $(shell pkg-config nbdkit --variable=plugindir)
pure_install :: build/nbdkit-vma-plugin.so
	install -D -m 0644 build/nbdkit-vma-plugin.so $(DESTDIR)$(NBDKIT_PLUGINDIR)/nbdkit-vma-plugin.so

engine-test: build/engine-tests build/vma build/pve-qemu-sim
	build/engine-tests

asan-test: build-asan/engine-tests build-asan/vma build-asan/pve-qemu-sim
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
		PVE_QEMU_SIM=build-asan/pve-qemu-sim VMA=build-asan/vma build-asan/engine-tests

# t/nbdkit-vma.t against the plugin's sanitizer build; nbdkit is a C program,
# so ASan's runtime and libstdc++ (for its __cxa_throw hook) go in first
asan-nbdkit-test: build-asan/nbdkit-vma-plugin.so build/vma
	NBDKIT_VMA_PLUGIN=build-asan/nbdkit-vma-plugin.so \
	NBDKIT_LD_PRELOAD="$$($(CXX) -print-file-name=libasan.so) $$($(CXX) -print-file-name=libstdc++.so.6)" \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 prove t/nbdkit-vma.t

.PHONY: engine-test asan-test asan-nbdkit-test

# A short libFuzzer run of the VMA reader over the committed seed corpus
# (clang; the fuzzer's own sanitizer runtime, so it has its own build dir).
#   make fuzz-vma [FUZZ_SECONDS=60]
FUZZ_CXX ?= clang++
FUZZ_SECONDS ?= 30
VMA_FUZZ_SRC := fuzz/vma_reader_fuzz.cpp src/vma/reader.cpp src/vma/cluster_set.cpp \
	src/util/md5.cpp src/util/fd.cpp src/util/error.cpp

build-fuzz/vma_reader_fuzz: $(VMA_FUZZ_SRC) $(wildcard src/vma/*.h src/util/*.h)
	@mkdir -p build-fuzz
	$(FUZZ_CXX) -std=c++20 -O1 -g -Isrc -D_FILE_OFFSET_BITS=64 -D_GNU_SOURCE \
		-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
		-o $@ $(VMA_FUZZ_SRC) -lcrypto

fuzz-vma: build-fuzz/vma_reader_fuzz
	@mkdir -p build-fuzz/vma_reader_corpus
	build-fuzz/vma_reader_fuzz -max_total_time=$(FUZZ_SECONDS) -max_len=65536 \
		-print_final_stats=1 build-fuzz/vma_reader_corpus fuzz/vma_reader_corpus

.PHONY: fuzz-vma
