"""``python -m workers.busbench``: what the Redis bus costs a turn, with a null engine.

A producer in this process submits turns the way a gateway does (``TurnQueue.submit``, then a
blocking read of the conversation's events until the final) to real worker processes: the
real ``Worker`` (claim loop, keep-alive, cancellation poller, metrics publisher), whose turn
handler is a null engine that answers in one step: one draft, the final, the ack. No SQL, no
agent loop, no model: every millisecond measured is the bus's (and its Python clients').

Side by side, in the same run and on the same server, the limits: ``redis-benchmark`` (when
installed) and a raw redis-py floor, a request/reply through two streams (XADD, XREAD on each
side) between this process and an echo process at the same concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import itertools
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import redis
import redis.asyncio as aioredis

from assistant.app.embedded_redis import EmbeddedRedis
from assistant.bus.connection import bounded_block_ms, connect
from assistant.bus.fanout import EventFanout
from assistant.bus.keys import Keys
from assistant.bus.schema import FinalEvent, TurnRequest
from assistant.bus.streams import EventLog, TurnQueue
from assistant.core.log import configure_logging

# the helper processes ----------------------------------------------------------------------


async def serve_echo(url: str, prefix: str) -> None:
    """The floor's other side: answer each request with one XADD to its reply stream."""
    client = connect(url)
    requests, last = f"{prefix}:raw:req", "0-0"
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        while not stop.is_set():
            reply = await client.xread({requests: last}, block=500, count=512)
            entries = [e for _stream, items in reply for e in items] if reply else []
            if not entries:
                continue
            last = entries[-1][0]
            async with client.pipeline(transaction=False) as pipe:
                for _id, fields in entries:
                    pipe.xadd(fields[b"reply"], {"ok": "1"}, maxlen=100, approximate=True)
                await pipe.execute()
    finally:
        await client.aclose()


# the producer side -------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    what: str
    turns: int
    seconds: float
    latencies_ms: list[float]
    producer_cpu_ms: float  # per turn
    worker_cpu_ms: float  # per turn, all helper processes
    server_cpu_ms: float  # per turn, nan when the server is not ours

    @property
    def per_second(self) -> float:
        return self.turns / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (nan where there is none)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(
    what: str,
    one: Callable[[], Awaitable[float]],
    *,
    concurrency: int,
    turns: int,
    warmup: int,
    helpers: Sequence[int],
    server: int | None,
) -> Result:
    """Run ``turns`` calls of ``one`` (after ``warmup``) from ``concurrency`` tasks."""

    async def run(count: int, out: list[float]) -> None:
        todo = iter(range(count))  # shared: a task takes the next turn when it is free

        async def client() -> None:
            for _ in todo:
                out.append(await one())

        await asyncio.gather(*(client() for _ in range(concurrency)))

    await run(warmup, [])
    before = [cpu_seconds(p) for p in helpers], cpu_seconds(server) if server else float("nan")
    cpu, started = time.process_time(), time.perf_counter()
    latencies: list[float] = []
    await run(turns, latencies)
    seconds = time.perf_counter() - started
    producer = (time.process_time() - cpu) / turns * 1000
    workers = sum(cpu_seconds(p) - b for p, b in zip(helpers, before[0], strict=True))
    server_cpu = cpu_seconds(server) - before[1] if server else float("nan")
    return Result(
        what,
        turns,
        seconds,
        latencies,
        producer,
        workers / turns * 1000,
        server_cpu / turns * 1000,
    )


def bus_turn(client: aioredis.Redis, keys: Keys) -> Callable[[], Awaitable[float]]:
    # A backlog bound above any concurrency used here: the benchmark measures, it never sheds.
    queue = TurnQueue(client, keys=keys, max_backlog=1_000_000)
    # As a gateway does: one blocking read follows every conversation in flight.
    fanout = EventFanout(EventLog(client, keys=keys), client, block_ms=1000)
    run, numbers = uuid.uuid4().hex[:8], itertools.count()

    async def one() -> float:
        # A conversation per turn: no wait for the previous turn's lock to be released.
        conversation = f"{run}-{next(numbers)}"
        turn = TurnRequest(
            turn_id=f"t{conversation}",
            conversation_id=conversation,
            tenant_id="bench",
            channel="widget",
            user_message_id=f"m{conversation}",
        )
        started = time.perf_counter()
        follower = fanout.follow(conversation, 0)
        try:
            await queue.submit(turn)
            async with asyncio.timeout(10):
                async for event in follower.events():
                    if isinstance(event, FinalEvent):
                        return (time.perf_counter() - started) * 1000
        except TimeoutError:
            raise RuntimeError(f"no final for turn {turn.turn_id} within 10 s") from None
        finally:
            fanout.unfollow(follower)
        raise AssertionError("unreachable: a follower's events never end")

    return one


def raw_turn(client: aioredis.Redis, prefix: str) -> Callable[[], Awaitable[float]]:
    requests, numbers = f"{prefix}:raw:req", itertools.count()

    async def one() -> float:
        reply = f"{prefix}:raw:rep:{next(numbers)}"
        started = time.perf_counter()
        await client.xadd(requests, {"reply": reply}, maxlen=10_000, approximate=True)
        # Within the socket timeout, or the client gives up on the read before Redis does.
        block_ms = bounded_block_ms(client, 10_000) or 10_000
        got = await client.xread({reply: "0-0"}, block=block_ms)
        if not got:
            raise RuntimeError(f"the echo process did not answer within {block_ms / 1000:g} s")
        return (time.perf_counter() - started) * 1000

    return one


def redis_benchmark(host: str, port: int, concurrency: int, requests: int) -> list[list[str]]:
    """Rows (test, requests/s, p50 ms, p99 ms) from redis-benchmark, [] when not installed."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return []
    command = [binary, "-h", host, "-p", str(port), "-c", str(concurrency)]
    command += ["-n", str(requests), "-t", "ping_mbulk,set,xadd", "--csv"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    return [[r["test"], r["rps"], r["p50_latency_ms"], r["p99_latency_ms"]] for r in rows]


def spawn(args: list[str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "workers.busbench", *args],
        env=env,
        stdin=subprocess.DEVNULL,
    )


def stop_all(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def wait_for_workers(client: aioredis.Redis, keys: Keys, count: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.ResponseError):
            if len(await client.xinfo_consumers(keys.turns, keys.group)) >= count:
                return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{count} bench workers did not join the group within 30 s")


def hardware() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load_avg = os.getloadavg()[0]
    return (
        f"{model}, {os.cpu_count()} cores, load average {load_avg:.2f}, "
        f"Python {platform.python_version()}, redis-py {redis.__version__}"
    )


def report_row(result: Result) -> str:
    return (
        f"  {result.what:<44} {result.per_second:>9.0f} {result.percentile(0.5):>8.2f} "
        f"{result.percentile(0.99):>8.2f} {result.producer_cpu_ms:>7.3f} "
        f"{result.worker_cpu_ms:>7.3f} {result.server_cpu_ms:>7.3f}"
    )


async def bench(args: argparse.Namespace, url: str, server_pid: int | None) -> None:
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    keys = Keys(prefix)
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    client = connect(url)
    info = await client.info("server")
    persistence = await client.config_get("appendonly")
    print(f"command:  python -m workers.busbench {' '.join(sys.argv[1:])}".rstrip())
    print(f"hardware: {hardware()}")
    print(
        f"server:   redis {info['redis_version']} at {host}:{port}, "
        f"appendonly {persistence.get('appendonly', '?')}, "
        f"{'embedded (started by this command)' if server_pid else 'given by --redis-url'}"
    )
    print(
        f"setup:    {args.workers} worker process(es), each the real Worker loop with batch "
        f"{args.batch}; the producer (this process) plays the gateway"
    )
    print(
        "included: submit (XLEN, SET NX, XADD) -> worker claim (XREADGROUP, XPENDING) -> "
        "draft and final appends (Lua) -> ack (XACK+XDEL, lock release) -> the producer's "
        "event fanout (one blocking XREAD over every turn in flight, woken by CLIENT UNBLOCK "
        "when a turn starts, as in the gateway) until the final; plus the workers' "
        "background tasks"
    )
    print(
        "excluded: SQL (history, stored reply), the agent loop (prompt, tokenizer, tool "
        "parsing), the engine, WebSockets; workers log at warning level"
    )
    print()
    rows: list[Result] = []
    worker_args = ["--redis-url", url, "--prefix", prefix, "--batch", str(args.batch)]
    workers = [spawn(["--serve-worker", f"w{i}", *worker_args]) for i in range(args.workers)]
    try:
        await wait_for_workers(client, keys, args.workers)
        pids = [w.pid for w in workers]
        one = bus_turn(client, keys)
        for concurrency, turns in ((1, args.latency_turns), (args.concurrency, args.turns)):
            result = await load(
                f"bus turn, {concurrency} at a time",
                one,
                concurrency=concurrency,
                turns=turns,
                warmup=args.warmup,
                helpers=pids,
                server=server_pid,
            )
            rows.append(result)
    finally:
        stop_all(workers)
    echo = spawn(["--serve-echo", "--redis-url", url, "--prefix", prefix])
    try:
        one = raw_turn(client, prefix)
        for concurrency, turns in ((1, args.latency_turns), (args.concurrency, args.turns)):
            rows.append(
                await load(
                    f"raw redis-py XADD+XREAD ping-pong, {concurrency} at a time",
                    one,
                    concurrency=concurrency,
                    turns=turns,
                    warmup=args.warmup,
                    helpers=[echo.pid],
                    server=server_pid,
                )
            )
    finally:
        stop_all([echo])
    await client.aclose()
    bench_rows = [] if args.no_redis_benchmark else redis_benchmark(host, port, 50, args.turns * 5)

    print(
        "  what                                           turns/s  p50 ms  p99 ms  "
        "CPU ms per turn: producer  workers  server"
    )
    for result in rows:
        print(report_row(result))
    if bench_rows:
        print()
        print(
            "  redis-benchmark, 50 clients (C client, one command per request): limit of the server"
        )
        print("  command                requests/s   p50 ms   p99 ms")
        for test, rps, p50, p99 in bench_rows:
            print(f"  {test:<20} {float(rps):>12.0f} {float(p50):>8.3f} {float(p99):>8.3f}")
    else:
        print("\n  redis-benchmark: not run (not installed, or --no-redis-benchmark)")
    bus_1, bus_n, raw_1, raw_n = rows
    print()
    print(
        f"  added by the bus per turn, unloaded (p50 / p99): "
        f"{bus_1.percentile(0.5):.2f} / {bus_1.percentile(0.99):.2f} ms "
        f"(target <= 2 / 10); the raw floor: {raw_1.percentile(0.5):.2f} / "
        f"{raw_1.percentile(0.99):.2f} ms"
    )
    print(
        f"  under load ({args.concurrency} at a time): {bus_n.per_second:.0f} turns/s "
        f"(target >= 2000), p50 / p99 {bus_n.percentile(0.5):.2f} / "
        f"{bus_n.percentile(0.99):.2f} ms; the raw floor: {raw_n.per_second:.0f} round trips/s "
        f"({bus_n.per_second / raw_n.per_second:.2f}x of it)"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m workers.busbench",
        description="Turns/s and added latency of the Redis bus with a null engine, side by "
        "side with redis-benchmark and a raw redis-py round trip on the same server.",
    )
    parser.add_argument("--redis-url", help="an existing Redis (default: start an embedded one)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--batch", type=int, default=64, help="turns a worker holds (default 64)")
    parser.add_argument(
        "--concurrency", type=int, default=32, help="turns in flight under load (default 32)"
    )
    parser.add_argument("--turns", type=int, default=4000, help="turns under load (default 4000)")
    parser.add_argument(
        "--latency-turns", type=int, default=1000, help="turns one at a time (default 1000)"
    )
    parser.add_argument("--warmup", type=int, default=200, help="turns not measured (default 200)")
    parser.add_argument("--no-redis-benchmark", action="store_true", help="skip redis-benchmark")
    parser.add_argument("--serve-worker", metavar="NAME", help=argparse.SUPPRESS)
    parser.add_argument("--serve-echo", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("workers", "batch", "concurrency", "turns", "latency_turns"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_worker or args.serve_echo:
        configure_logging(level="warning")
        if args.serve_worker:
            # Imported here: the worker module loads torch, which the other processes skip.
            from workers.busbench_worker import serve_worker

            asyncio.run(serve_worker(args.redis_url, args.prefix, args.serve_worker, args.batch))
        else:
            asyncio.run(serve_echo(args.redis_url, args.prefix))
        return 0
    configure_logging(level="warning")
    if args.redis_url:
        asyncio.run(bench(args, args.redis_url, None))
        return 0
    with tempfile.TemporaryDirectory(prefix="busbench-") as tmp:
        server = EmbeddedRedis(Path(tmp))
        server.start()
        try:
            asyncio.run(bench(args, server.url, server.pid))
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
