#!/bin/bash
# The run behind docs/img/dashboard.png (docs/benchmarks.md, "The dashboard under load").
# assistant serve (2 gateways, 1 fast-diffusion worker) plus one autoregressive worker on the
# same Redis and SQLite; /metrics of both gateways scraped every 2 s; a load test; a poison
# turn queued by hand (3 failed deliveries, then a dead letter); the autoregressive worker
# SIGKILLed mid-load (its turns taken over: redeliveries); one connection flooding frames
# from its own X-Forwarded-For address (rate-limited frames). Then the rendering.
# Run from the repository root: bash docs/loadtest/dashboard-run.sh [out dir]
# (the recorded run had every process under nice -n 10, beside a training job)
set -u
OUT=${1:-/tmp/dashboard-run}
D=$OUT/data
rm -rf "$OUT"; mkdir -p "$D"
export OMP_NUM_THREADS=1 GOMP_SPINCOUNT=10000
ASSISTANT_RATE_IP=200/400 ASSISTANT_TRUSTED_PROXIES=127.0.0.1 ASSISTANT_DECODING_MODE=fast-diffusion \
  ASSISTANT_MAX_BATCH=16 .venv/bin/assistant serve --gateways 2 --workers 1 --port 18765 \
  --data-dir "$D" > "$OUT/serve.log" 2>&1 &
SERVE=$!
for _ in $(seq 1 180); do curl -sf http://127.0.0.1:18765/readyz > /dev/null && break; sleep 1; done
REDIS=$(grep -o 'embedded, redis://[^ ]*' "$OUT/serve.log" | head -1 | sed 's/embedded, //')
ASSISTANT_REDIS_URL=$REDIS ASSISTANT_DATA_DIR=$D ASSISTANT_DECODING_MODE=autoregressive \
  ASSISTANT_MAX_BATCH=16 .venv/bin/assistant worker > "$OUT/worker-ar.log" 2>&1 &
AR=$!
sleep 25  # its model loads
.venv/bin/python -m assistant.lab.dashboard scrape --url http://127.0.0.1:18765/metrics \
  --url http://127.0.0.1:18766/metrics --every 2 --seconds 150 --out "$OUT/scrapes.jsonl" &
SCRAPE=$!
sleep 6
.venv/bin/assistant loadtest --data-dir "$D" --url ws://127.0.0.1:18765/ws \
  --url ws://127.0.0.1:18766/ws --clients 24 --turns 14 --think 3 --label dashboard \
  --json "$OUT/loadtest.json" > "$OUT/loadtest.txt" 2>&1 &
LOAD=$!
.venv/bin/python - "$REDIS" <<'PY'
import asyncio, sys, uuid
import redis.asyncio as aioredis
from assistant.bus.schema import TurnRequest
from assistant.bus.streams import TurnQueue

async def main() -> None:  # a turn of a conversation that does not exist
    redis = aioredis.from_url(sys.argv[1])
    await TurnQueue(redis).submit(TurnRequest(
        turn_id=uuid.uuid4().hex, conversation_id="no-such-conversation",
        tenant_id="t", channel="widget", user_message_id="m"))
    await redis.aclose()

asyncio.run(main())
PY
sleep 12
kill -9 $AR
sleep 15
.venv/bin/python - <<'PY'
import json
from websockets.sync.client import connect

with connect("ws://127.0.0.1:18766/ws",
             additional_headers={"X-Forwarded-For": "203.0.113.9"}) as ws:
    for _ in range(1500):
        ws.send(json.dumps({"type": "nonsense"}))
    limited = sum(json.loads(ws.recv(30)).get("code") == "rate_limited" for _ in range(1500))
print(f"flood: {limited} of 1500 frames rate-limited")
PY
wait $LOAD; cat "$OUT/loadtest.txt"
wait $SCRAPE
kill -INT $SERVE; wait $SERVE
.venv/bin/python -m assistant.lab.dashboard render "$OUT/scrapes.jsonl" --rate-interval 10s \
  --out "$OUT/dashboard.png"
