#!/bin/bash
# velo serve against llama-server under the same load, on this machine:
#   LLAMA_SERVER=/path/to/llama-server bench/serverload.sh MODEL.gguf [ROUNDS] [REQUESTS] [TOKENS] [WORDS]
# (after dotnet build -c Release; llama.cpp is built elsewhere, never here). Both servers load MODEL with 2 threads,
# 8 sequences, a 512-token context per sequence and an F16 KV cache (llama-server's default; VELO_CACHE=f32 for
# Velo's; VELO_ARGS and LLAMA_ARGS add flags), and stay up; each round then drives each of them with
# velo bench-serve (REQUESTS streaming completions of TOKENS tokens, prompts of WORDS seeded words, end of text
# ignored, at 1 and then 8 concurrent clients), the servers taking turns and swapping who goes first every round.
# Every round's lines (bench-serve's columns, then the server's CPU ms per generated token), then the medians per
# server and client count, with the load average before and after.
set -euo pipefail
: "${LLAMA_SERVER:?set LLAMA_SERVER to a llama-server binary}"
M=$1; ROUNDS=${2:-6}; REQUESTS=${3:-32}; N=${4:-64}; WORDS=${5:-25}
PARALLEL=8; CTX=512; THREADS=2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
V="dotnet $ROOT/src/Velo.Cli/bin/Release/net10.0/Velo.Cli.dll"
LOGS=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait; rm -rf "$LOGS"' EXIT
trap 'exit 1' INT TERM
$V serve -m "$M" -t $THREADS --parallel $PARALLEL --ctx $CTX --port 18201 --log-format none -ctk "${VELO_CACHE:-f16}" -ctv "${VELO_CACHE:-f16}" ${VELO_ARGS:-} 2>"$LOGS/velo" & pids+=($!)
# llama-server's -c is the context of all its slots together.
# OpenMP's default spinning collapses on a machine with more busy threads than cores (llama-server then decodes
# ~20x slower here); passive waits are what Velo's pool does after 200 µs. OMP_WAIT_POLICY=active restores it.
OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive} "$LLAMA_SERVER" -m "$M" -t $THREADS -tb $THREADS -np $PARALLEL -c $((PARALLEL * CTX)) -ctk f16 -ctv f16 --port 18202 ${LLAMA_ARGS:-} >"$LOGS/llama" 2>&1 & pids+=($!)
for p in 18201 18202; do
  until curl -sf http://127.0.0.1:$p/health >/dev/null; do
    kill -0 "${pids[@]}" 2>/dev/null || { cat "$LOGS/velo" "$LOGS/llama" >&2; exit 1; }
    sleep 1
  done
done
echo "velo serve: KV cache ${VELO_CACHE:-f16} ${VELO_ARGS:-}; llama-server: KV cache f16, OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive} ${LLAMA_ARGS:-}"
echo "$(basename "$M"): $REQUESTS requests of $N tokens, prompts of $WORDS words, $PARALLEL sequences, $THREADS threads; llama.cpp $("$LLAMA_SERVER" --version 2>&1 | grep -m1 version)"
echo "load average before: $(cat /proc/loadavg)"
# Server CPU time per generated token (user + system, spin-waits and bench-serve's one warm-up request included, alike
# for both) moves much less than wall time on a shared machine.
cpu_ticks() { awk '{ print $14 + $15 }' /proc/"$1"/stat; }
TICK_MS=$((1000 / $(getconf CLK_TCK)))
for r in $(seq "$ROUNDS"); do
  order="0 1"; [ $((r % 2)) -eq 0 ] && order="1 0"
  for i in $order; do
    name=velo; port=18201; [ "$i" = 1 ] && { name=llama.cpp; port=18202; }
    for c in 1 $PARALLEL; do
      # Both servers get the same prompts in a round; no prompt is seen twice by one server.
      before=$(cpu_ticks "${pids[$i]}")
      row=$($V bench-serve --url http://127.0.0.1:$port --clients "$c" --requests "$REQUESTS" --max-tokens "$N" --prompt-words "$WORDS" \
        --seed $((2 * r + (c > 1))) | tail -n 1)
      ticks=$(( $(cpu_ticks "${pids[$i]}") - before ))
      echo "round $r $name $row $(awk -v t="$ticks" -v ms="$TICK_MS" -v n="$(echo "$row" | awk '{ print $3 }')" 'BEGIN { printf "%.2f", t * ms / n }')" \
        | tee -a "$LOGS/rows"
    done
  done
  echo "  load average: $(cat /proc/loadavg)"
done
echo "medians of $ROUNDS rounds (server CPU ms per generated token: user + system time of the server process):"
printf '%-10s %7s %9s %11s %11s %14s %13s %12s\n' server clients tokens/s "TTFT p50 ms" "TTFT p99 ms" "decode t/s p50" "prompt tokens" "CPU ms/token"
for name in velo llama.cpp; do
  for c in 1 $PARALLEL; do
    median() { awk -v n="$name" -v c="$c" -v k="$1" '$3 == n && $4 == c { print $k }' "$LOGS/rows" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
    printf '%-10s %7s %9.1f %11.0f %11.0f %14.1f %13.1f %12.2f\n' $name $c "$(median 8)" "$(median 9)" "$(median 10)" "$(median 12)" "$(median 13)" "$(median 14)"
  done
done
echo "load average after: $(cat /proc/loadavg)"
