#!/usr/bin/env bash
# scripts/fuzz.sh [SECONDS-PER-HARNESS] - build the libFuzzer harnesses
# (clang, ASan + UBSan + libFuzzer, library instrumented for coverage) in
# build-fuzz, make the seed corpora, run every harness in turn for
# SECONDS (default 45) and fail if any found a crash, leak, timeout or OOM.
#
# Environment:
#   FUZZ_HARNESSES  space-separated subset (default: every fuzz/fuzz_*.c)
#   FUZZ_BUILD      build dir (default build-fuzz)
#   FUZZ_ARGS       extra libFuzzer flags (e.g. "-jobs=4 -workers=4")
# Findings go to $FUZZ_BUILD/artifacts/<harness>/, logs to
# $FUZZ_BUILD/logs/<harness>.log; the grown corpus stays in
# $FUZZ_BUILD/corpus/<harness>/.  See docs/FUZZING.md.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-45}"
bdir="${FUZZ_BUILD:-build-fuzz}"

if ! [ -f /usr/lib/llvm-14/lib/clang/14.0.6/lib/linux/libclang_rt.fuzzer-x86_64.a ] &&
   ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
  PB_WITH_FUZZ=1 scripts/deps.sh --fuzz
fi

harnesses="${FUZZ_HARNESSES:-}"
if [ -z "$harnesses" ]; then
  for f in fuzz/fuzz_*.c; do harnesses+="$(basename "$f" .c) "; done
fi

echo "== building harnesses in $bdir"
CC=clang cmake -S . -B "$bdir" -DPB_FUZZ=ON -DPB_SANITIZE=ON -DPB_BUILD_TESTS=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link" >/dev/null
# shellcheck disable=SC2086
cmake --build "$bdir" -j"$(nproc)" --target $harnesses >/dev/null

echo "== corpora"
fuzz/make_corpus.sh "$bdir/corpus" | sed 's/^/   /'

mkdir -p "$bdir/logs"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:allocator_may_return_null=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
failed=()
for h in $harnesses; do
  art="$bdir/artifacts/$h"
  mkdir -p "$art" "$bdir/corpus/$h"
  before=$(find "$art" -type f | wc -l)
  log="$bdir/logs/$h.log"
  echo "== $h for ${secs}s"
  rc=0
  # shellcheck disable=SC2086
  "$bdir/bin/$h" -max_total_time="$secs" -dict=fuzz/pb.dict -rss_limit_mb=2048 \
    -max_len=65536 -timeout=30 -print_final_stats=1 -artifact_prefix="$art/" \
    ${FUZZ_ARGS:-} "$bdir/corpus/$h" >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  echo "$h: ${execs:-?} execs in ${took:-$secs} s"
  after=$(find "$art" -type f | wc -l)
  if [ "$rc" != 0 ] || [ "$after" -gt "$before" ]; then
    echo "$h: FOUND A PROBLEM (exit $rc); log: $log; inputs:" >&2
    find "$art" -type f -newer "$log" -o -type f -cnewer "$log" 2>/dev/null | sed 's/^/   /' >&2 || true
    grep -E "^(==[0-9]+==ERROR|SUMMARY|fuzz invariant)|runtime error" "$log" | head -5 | sed 's/^/   /' >&2 || true
    failed+=("$h")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: problems in ${failed[*]}" >&2
  echo "reproduce: $bdir/bin/<harness> <artifact>; minimise: add -minimize_crash=1 -runs=10000" >&2
  exit 1
fi
echo "fuzz: no crashes, leaks or timeouts"
