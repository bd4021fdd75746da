#!/usr/bin/env bash
# Coverage-guided fuzzing of every decoder of outside input: the targets in fuzz/
# (libFuzzer through cargo-fuzz, on the nightly toolchain). Builds them, then runs each
# for SECONDS on its committed seeds (fuzz/seeds/<target>) and its corpus
# (target/fuzz/corpus/<target>, which grows from run to run). A panic, failed assertion,
# timeout or memory blow-up leaves its input in target/fuzz/artifacts/<target>/ and
# makes the script fail; `target/fuzz/<target>.log` holds each run's output.
#
#   scripts/fuzz.sh [-t SECONDS] [TARGET...]   every target (or those named), SECONDS each
#   scripts/fuzz.sh --minimize TARGET...       rewrites fuzz/seeds/TARGET: the smallest set
#                                              of seeds and corpus inputs of the same coverage
#   scripts/fuzz.sh --reproduce TARGET FILE    runs one input (a regression check)
#
# Environment: FUZZ_SANITIZER (none; address for AddressSanitizer, slower), FUZZ_JOBS
# (1: parallel fuzzing processes per target), FUZZ_CODEGEN_UNITS (8). The cdr target links r2r: source
# scripts/env.sh first (make does). The build is cached in target/fuzz, apart from the
# stable build (another toolchain and other compiler flags).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
CARGO_FUZZ_VERSION=0.13.2
ALL=(image sync tokenizer params bag cdr)
out=$root/target/fuzz
triple=$(rustc -vV | sed -n 's/^host: //p')

seconds=60 mode=run
case "${1:-}" in
  -t) seconds=$2; shift 2 ;;
  --minimize) mode=minimize; shift ;;
  --reproduce) mode=reproduce; file=$3; set -- "$2" ;;
esac
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${ALL[@]}")

if [ "$(cargo fuzz --version 2>/dev/null | awk '{print $2}')" != "$CARGO_FUZZ_VERSION" ]; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION from crates.io (once)"
  cargo install --quiet --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

# Release builds with debug assertions and overflow checks (cargo-fuzz's default); the
# targets are safe Rust over safe Rust, so no sanitizer by default: twice the executions.
# Eight codegen units instead of cargo-fuzz's one: the build (r2r's generated bindings
# above all) takes a fraction of the time, for slightly slower executions.
build_args=(--sanitizer "${FUZZ_SANITIZER:-none}" --codegen-units "${FUZZ_CODEGEN_UNITS:-8}" --target-dir "$out/build")
needs_ros() { [ "$1" = cdr ]; }
core=() ros=()
for t in "${targets[@]}"; do
  [[ " ${ALL[*]} " == *" $t "* ]] || { echo "fuzz: no target $t (${ALL[*]})" >&2; exit 2; }
  if needs_ros "$t"; then ros+=("$t"); else core+=("$t"); fi
done
started=$(date +%s)
# Without a name cargo-fuzz builds every target whose features are on: all but cdr
# without `ros`, all of them with it (one build of the library, not two).
if [ ${#ros[@]} -gt 0 ]; then
  cargo +nightly fuzz build "${build_args[@]}" --features ros
else
  cargo +nightly fuzz build "${build_args[@]}"
fi
echo "fuzz: targets built in $(( $(date +%s) - started )) s"
bin() { echo "$out/build/$triple/release/$1"; }

if [ "$mode" = reproduce ]; then
  exec "$(bin "${targets[0]}")" "$file"
fi

if [ "$mode" = minimize ]; then
  for t in "${targets[@]}"; do
    new=$(mktemp -d)
    mkdir -p "$out/corpus/$t"
    "$(bin "$t")" -merge=1 "$new" "fuzz/seeds/$t" "$out/corpus/$t" >"$out/$t.merge.log" 2>&1
    rm -rf "fuzz/seeds/$t" && mv "$new" "fuzz/seeds/$t"
    echo "fuzz: fuzz/seeds/$t: $(ls "fuzz/seeds/$t" | wc -l) inputs, $(du -sh "fuzz/seeds/$t" | cut -f1)"
  done
  exit 0
fi

failed=() total=0
printf '%-10s %12s %8s %s\n' target executions seconds result >"$out/summary.txt"
for t in "${targets[@]}"; do
  mkdir -p "$out/corpus/$t" "$out/artifacts/$t" "fuzz/seeds/$t"
  args=(-max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="$out/artifacts/$t/")
  [ -f "fuzz/dicts/$t.dict" ] && args+=(-dict="fuzz/dicts/$t.dict")
  [ "${FUZZ_JOBS:-1}" -gt 1 ] && args+=(-fork="$FUZZ_JOBS" -ignore_crashes=0)
  result=ok
  "$(bin "$t")" "${args[@]}" "$out/corpus/$t" "fuzz/seeds/$t" >"$out/$t.log" 2>&1 || result=FAILED
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/$t.log" | tail -1)
  runs=${runs:-0}
  total=$((total + runs))
  printf '%-10s %12d %8d %s\n' "$t" "$runs" "$seconds" "$result" | tee -a "$out/summary.txt"
  if [ "$result" != ok ]; then
    failed+=("$t")
    grep -E "panicked at|Assertion|ERROR: libFuzzer|SUMMARY|Test unit written" "$out/$t.log" | head -20 >&2 || true
  fi
done
printf '%-10s %12d\n' total "$total" | tee -a "$out/summary.txt"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: ${failed[*]} failed; inputs in $out/artifacts/, reproduce with scripts/fuzz.sh --reproduce TARGET FILE" >&2
  exit 1
fi
