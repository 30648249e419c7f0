#!/usr/bin/env bash
# Coverage-guided fuzzing of Velo with SharpFuzz + afl-fuzz (Debian's afl++).
#   fuzz/run.sh TARGET|all SECONDS
# TARGET: gguf, tokenizer, jinja, http, onnx, safetensors (comma-separated list or "all"). Builds fuzz/Velo.Fuzz into a scratch folder,
# instruments Velo.dll and Velo.Server.dll there, fuzzes each target for SECONDS, copies crashes and hangs to
# fuzz/findings/TARGET/ and prints one summary line per target plus how each crashing input fails.
# Exit status: 0 no crash, 1 a target crashed, 2 usage, 3 a tool is missing (afl-fuzz, dotnet, sharpfuzz).
# Environment: VELO_FUZZ_WORK (scratch, default /tmp/velo-fuzz), SHARPFUZZ (the sharpfuzz command; default: install
# SharpFuzz.CommandLine 2.3.0 into the scratch folder), VELO_FUZZ_TIMEOUT_MS (afl's per-input limit, default 5000),
# VELO_FUZZ_HEAP (GC heap limit per process, default 1 GiB: an input that needs more is a finding).
set -euo pipefail
cd "$(dirname "$0")/.."

all_targets=(gguf tokenizer jinja http onnx safetensors)
if [[ $# -ne 2 || ! $2 =~ ^[0-9]+$ ]]; then
    echo "usage: fuzz/run.sh TARGET|all SECONDS   (targets: ${all_targets[*]})" >&2
    exit 2
fi
if [[ $1 == all ]]; then targets=("${all_targets[@]}"); else IFS=, read -ra targets <<<"$1"; fi
for t in "${targets[@]}"; do
    [[ " ${all_targets[*]} " == *" $t "* ]] || { echo "fuzz: unknown target '$t' (targets: ${all_targets[*]})" >&2; exit 2; }
done
seconds=$2
repo=$PWD
shared=$(cd .. && pwd)/shared
work=${VELO_FUZZ_WORK:-/tmp/velo-fuzz}
findings_root=$repo/fuzz/findings

if ! command -v afl-fuzz >/dev/null; then
    echo "fuzz: afl-fuzz not found: install it (apt-get install afl++) to fuzz" >&2
    exit 3
fi
sharpfuzz=${SHARPFUZZ:-$work/tools/sharpfuzz}
if [[ -z ${SHARPFUZZ:-} && ! -x $sharpfuzz ]]; then
    dotnet tool install --tool-path "$work/tools" SharpFuzz.CommandLine --version 2.3.0 >/dev/null ||
        { echo "fuzz: could not install SharpFuzz.CommandLine 2.3.0" >&2; exit 3; }
fi

# A fresh build every run: instrumenting rewrites the DLLs in place, and an instrumented DLL cannot be instrumented again.
rm -rf "$work/bin"
dotnet build fuzz/Velo.Fuzz -c Release -o "$work/bin" -v quiet -nologo >"$work.build.log" 2>&1 ||
    { cat "$work.build.log" >&2; echo "fuzz: build failed" >&2; exit 3; }
# Instrumented code only runs inside SharpFuzz's loop (elsewhere it writes to unmapped coverage memory), so seeds and
# replays use an untouched copy.
rm -rf "$work/plain"
cp -r "$work/bin" "$work/plain"
fuzzer=("$work/bin/Velo.Fuzz.dll")
plain=("$work/plain/Velo.Fuzz.dll")

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
export DOTNET_GCHeapHardLimit=$(printf '0x%x' "${VELO_FUZZ_HEAP:-1073741824}")
export VELO_FUZZ_MODEL=$shared/models/stories260K/stories260K.gguf
for t in "${targets[@]}"; do
    rm -rf "$work/$t"
    dotnet "${plain[@]}" seeds "$t" "$shared" "$work/$t/seeds"
done
for dll in Velo.dll Velo.Server.dll; do
    "$sharpfuzz" "$work/bin/$dll" >/dev/null || { echo "fuzz: sharpfuzz could not instrument $dll" >&2; exit 3; }
done

# The .NET host is no afl-instrumented binary (SharpFuzz speaks afl's protocol from managed code); afl must not bind
# to a core on a shared machine, nor wait for a terminal.
export AFL_SKIP_BIN_CHECK=1 AFL_NO_UI=1 AFL_NO_AFFINITY=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
status=0
for t in "${targets[@]}"; do
    dict=()
    [[ -f fuzz/dict/$t.dict ]] && dict=(-x "fuzz/dict/$t.dict")
    out=$work/$t/out
    # -V ends the campaign; the outer timeout only guards against afl itself getting stuck.
    timeout $((seconds + 120)) afl-fuzz -V "$seconds" -i "$work/$t/seeds" -o "$out" -t "${VELO_FUZZ_TIMEOUT_MS:-5000}" -m none \
        "${dict[@]}" -- dotnet "${fuzzer[@]}" fuzz "$t" >"$work/$t/afl.log" 2>&1 || true
    stats=$out/default/fuzzer_stats
    if [[ ! -f $stats ]]; then
        echo "fuzz $t: afl-fuzz did not start; the end of its log:"
        tail -20 "$work/$t/afl.log"
        status=1
        continue
    fi
    stat() { sed -nE "s/^$1 *: *//p" "$stats"; }
    found=$findings_root/$t
    rm -rf "$found"
    crashes=() hangs=()
    for kind in crashes hangs; do
        for f in "$out/default/$kind"/id:*; do
            [[ -f $f ]] || continue
            mkdir -p "$found/$kind"
            cp "$f" "$found/$kind/$(basename "$f" | tr ':,' '_-')"
            if [[ $kind == crashes ]]; then crashes+=("$found/$kind/$(basename "$f" | tr ':,' '_-')"); else hangs+=("$f"); fi
        done
    done
    echo "fuzz $t: $(stat execs_done) execs ($(stat execs_per_sec)/s) in $(stat run_time)s, $(stat corpus_count) paths" \
        "($(stat corpus_found) new, bitmap $(stat bitmap_cvg)), ${#crashes[@]} crashes, ${#hangs[@]} hangs (> ${VELO_FUZZ_TIMEOUT_MS:-5000} ms)"
    for f in "${crashes[@]}"; do
        # The bytes travel with the log (gzip + base64), so a crash on a CI machine can become a regression file.
        echo "  crash: $f  (bytes: base64 -d <<<'...' | gunzip > FILE)"
        echo "    $(gzip -9c "$f" | base64 -w0)"
        timeout 60 dotnet "${plain[@]}" replay "$t" "$f" 2>&1 | sed 's/^/    /' | head -12 || true
    done
    for f in "${hangs[@]}"; do echo "  hang: $found/hangs/$(basename "$f" | tr ':,' '_-')"; done
    ((${#crashes[@]} == 0)) || status=1
done
exit $status
