#!/bin/sh
# Fills fuzz/corpus/check with the seed corpus: soloader's test libraries
# and a few small system libraries. Run from the repository root after a
# `cargo build` (which builds the test libraries into <target>/testlibs).
set -eu
testlibs="${CARGO_TARGET_DIR:-target}/testlibs"
corpus="fuzz/corpus/check"
mkdir -p "$corpus"
cp "$testlibs"/*.so "$corpus"/
for lib in libz.so.1 libexpat.so.1 libsqlite3.so.0; do
    src="/usr/lib/x86_64-linux-gnu/$lib"
    [ -e "$src" ] && cp -L "$src" "$corpus/$lib"
done
ls "$corpus" | wc -l
