# soloader: `make demo` to see it load a library, `make test` to run every test.

CARGO ?= cargo
# The test libraries are built by build.rs into <target dir>/testlibs.
TARGET_DIR := $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),target)
TESTLIBS := $(abspath $(TARGET_DIR))/testlibs
SOLOADER := $(CARGO) run --quiet --bin soloader --

.PHONY: help demo test bench clean fmt lint

help:
	@echo "make demo   build, then load three libraries with soloader and call into them"
	@echo "make test   run the whole test suite (unit, integration, CLI and doc tests)"
	@echo "make bench  soloader vs glibc: load, unload, lookup (table + target/bench.json)"
	@echo "make lint   cargo fmt --check and cargo clippy -D warnings"
	@echo "make fmt    format the code"
	@echo "make clean  remove build output"

demo:
	$(CARGO) build --bin soloader
	@echo
	@echo "== A test library, loaded by soloader (not by dlopen), then add(2, 3) called."
	@echo "   Each PT_LOAD segment is mmap'ed MAP_PRIVATE from the file: read-only and"
	@echo "   r-x pages stay the file's page-cache pages, shared with every other process"
	@echo "   mapping the library; a data page becomes private only when written (by a"
	@echo "   relocation or the program). RELRO is the part made read-only once relocated;"
	@echo "   .bss is zeroed in the last file page and, past it, anonymous zero pages."
	@echo
	$(SOLOADER) call $(TESTLIBS)/libarith.so add 2 3 --ret i32 --segments
	@echo
	@echo "== A test library with an 8 MiB .bss: past the last file page, it is anonymous"
	@echo "   zero pages, which cost nothing until touched. bss_sum() reads them all: 0."
	@echo
	$(SOLOADER) call $(TESTLIBS)/libbss.so bss_sum --segments
	@echo
	@echo "== A system library, found by name the way dlopen would, then zlibVersion()."
	@echo
	$(SOLOADER) call libz.so.1 zlibVersion --ret str --segments

# Everything: unit tests of the library and the binary, integration tests,
# and (separately, since --all-targets leaves them out) doc tests.
test:
	$(CARGO) test --all-targets
	$(CARGO) test --doc

# soloader vs glibc dlopen/dlclose/dlsym on libz, libsqlite3, libcrypto and
# generated libraries, alternated in one run; table on stdout, JSON in
# target/bench.json. SOLOADER_BENCH_ITERS sets the iterations (400).
bench:
	$(CARGO) bench --bench compare

clean:
	$(CARGO) clean

fmt:
	$(CARGO) fmt

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
