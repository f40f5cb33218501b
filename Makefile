# soloader: `make demo` to see it load a library, `make test` to run every test.

CARGO ?= cargo
# The test libraries are built by build.rs into <target dir>/testlibs.
TARGET_DIR := $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),target)
TESTLIBS := $(abspath $(TARGET_DIR))/testlibs
SOLOADER := $(CARGO) run --quiet --bin soloader --
# The demo's relocation cache (made afresh by each make demo).
DEMO_CACHE := $(abspath $(TARGET_DIR))/demo-relocation-cache

.PHONY: help demo test bench clean fmt lint

help:
	@echo "make demo   soloader rss: what 4 processes share of one library, three ways, then with the relocation cache; then one load"
	@echo "make test   run the whole test suite (unit, integration, CLI and doc tests)"
	@echo "make bench  soloader vs glibc: load, unload, lookup (table + target/bench.json)"
	@echo "make lint   cargo fmt --check and cargo clippy -D warnings"
	@echo "make fmt    format the code"
	@echo "make clean  remove build output"

demo:
	$(CARGO) build --bin soloader
	@echo
	@echo "== One library, loaded by 4 processes three ways: by soloader (mmap MAP_PRIVATE per"
	@echo "   segment), by glibc's dlopen, and by read() into anonymous memory. Each worker calls"
	@echo "   bigtext_run(1024), which runs all 340 KiB of the library's code, then waits while"
	@echo "   this process reads their page tables."
	@echo
	$(SOLOADER) rss $(TESTLIBS)/libbigtext.so --procs 4 --loader all --call bigtext_run 1024
	@echo
	@echo "== What the numbers mean:"
	@echo "   - text (and hdr): one physical copy (phys = resident size) however many processes map"
	@echo "     it: MAP_PRIVATE pages nobody writes stay the page cache's pages, shared."
	@echo "   - relro and data: 'anon/proc' is what each process pays alone: the pages relocation"
	@echo "     wrote (a table of pointers, fixed up for where the library landed) became private"
	@echo "     copy-on-write copies; compare soloader's column with dlopen's."
	@echo "   - read: every process holds its own copy of the whole file (debug info included),"
	@echo "     nothing is shared: the copy mmap avoids."
	@echo
	@echo "== The relocation cache: the same library in 4 workers forked from this one (as a pre-fork"
	@echo "   server starts them), with --relocation-cache. Worker 0 relocates it and saves the"
	@echo "   relocated pages to a cache file; workers 1-3 map them from that file instead of"
	@echo "   relocating. relro becomes one physical copy, and nothing is private. The price: the"
	@echo "   library sits at a fixed address derived from its build-id (no ASLR for it)."
	@echo
	@rm -rf $(DEMO_CACHE)
	$(SOLOADER) rss $(TESTLIBS)/libbigtext.so --procs 4 --fork --relocation-cache $(DEMO_CACHE) --call bigtext_run 1024
	@echo
	@echo "== And how each segment was mapped, for one load (soloader call --segments):"
	@echo
	$(SOLOADER) call $(TESTLIBS)/libarith.so add 2 3 --ret i32 --segments

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
