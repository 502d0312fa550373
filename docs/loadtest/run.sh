#!/bin/bash
# docs/loadtest/run.sh: 50 and 100 clients, for autoregressive, fast-diffusion and adaptive diffusion, one after the other
cd "$(dirname "$0")/../.." && source .venv/bin/activate
# Reports go to $OUT (default /tmp/loadtest): session 12 kept them in docs/loadtest/session12,
# session 15 in docs/loadtest/session15.
OUT=${OUT:-/tmp/loadtest}; mkdir -p $OUT
for clients in 100 50; do
for mode in autoregressive fast-diffusion adaptive-diffusion; do
  d=/tmp/scale/data-$mode-$clients; rm -rf $d; mkdir -p $d
  m=$mode; [ $mode = default ] && m=""
  ASSISTANT_RATE_IP=1000/2000 ASSISTANT_MAX_BATCH=16 ASSISTANT_DECODING_MODE=$m \
    assistant serve --workers 2 --port 18765 --data-dir $d --log-level warning > $OUT/serve-$mode-$clients.log 2>&1 &
  pid=$!
  for i in $(seq 120); do curl -sf http://127.0.0.1:18765/readyz >/dev/null && break; sleep 1; done
  sleep 2
  echo "== $mode $clients clients (load average $(cut -d' ' -f1 /proc/loadavg))"
  assistant loadtest --data-dir $d --url ws://127.0.0.1:18765/ws --clients $clients --turns 3 --think 2 \
     --label "$mode-$clients" --json $OUT/$mode-$clients.json --log-level warning 2>&1 | tail -12
  kill -INT $pid; wait $pid 2>/dev/null; sleep 3
done; done
