#!/bin/bash
# Decode speed of a model split across pipeline stages against the unsplit server, on this machine:
#   bench/pipeline.sh MODEL.gguf BLOCKS [ROUNDS] [TOKENS]      (after dotnet build -c Release)
# Starts velo serve unsplit, split in 2 (half the blocks at one stage) and in 3 (two stages), every process -t 2,
# then takes turns: one round of velo bench-serve --clients 1 against each, ROUNDS times. Prints each round's line
# (clients, requests, tokens, seconds, tokens/s, TTFT p50, p99, ms/token) and the load average before and after.
set -euo pipefail
M=$1; LAYERS=$2; ROUNDS=${3:-5}; N=${4:-64}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
V="dotnet $ROOT/src/Velo.Cli/bin/Release/net10.0/Velo.Cli.dll"
LOGS=$(mktemp -d)
H=$((LAYERS / 2)); T=$((LAYERS / 3))
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait; rm -rf "$LOGS"' EXIT
$V serve -m "$M" -t 2 --port 18101 --parallel 1 --log-format none 2>"$LOGS/unsplit" & pids+=($!)
$V stage -m "$M" --layers $H-$((LAYERS - 1)) -t 2 --port 18111 2>"$LOGS/a" & pids+=($!)
$V stage -m "$M" --layers $T-$((2 * T - 1)) -t 2 --port 18112 2>"$LOGS/b" & pids+=($!)
$V stage -m "$M" --layers $((2 * T))-$((LAYERS - 1)) -t 2 --port 18113 2>"$LOGS/c" & pids+=($!)
for f in a b c; do until grep -q "stage serving" "$LOGS/$f"; do sleep 1; done; done
$V serve -m "$M" -t 2 --port 18102 --parallel 1 --log-format none --pipeline 127.0.0.1:18111 2>"$LOGS/split2" & pids+=($!)
$V serve -m "$M" -t 2 --port 18103 --parallel 1 --log-format none --pipeline 127.0.0.1:18112,127.0.0.1:18113 2>"$LOGS/split3" & pids+=($!)
for p in 18101 18102 18103; do until curl -sf http://127.0.0.1:$p/health >/dev/null; do sleep 1; done; done
grep -h pipeline "$LOGS/split2" "$LOGS/split3"
echo "load average before: $(cat /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
  for p in 18101 18102 18103; do
    case $p in 18101) name=unsplit;; 18102) name="2 stages";; *) name="3 stages";; esac
    echo "round $r, $name: $($V bench-serve --url http://127.0.0.1:$p --clients 1 --requests 4 --max-tokens "$N" 2>&1 | tail -n 1)"
  done
done
echo "load average after: $(cat /proc/loadavg)"
