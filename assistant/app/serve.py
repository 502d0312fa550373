"""``assistant serve``: the whole system on one machine, started and stopped as one.

It applies migrations, starts an embedded redis-server unless a Redis URL is given, then
runs gateway and worker processes and supervises them. Ctrl-C or SIGTERM stops the workers,
then the gateways, then Redis. A child (or the embedded redis-server) that dies is started
again, as systemd would: clients reconnect and workers take its turns over. One that keeps
dying (``MAX_RESTARTS`` within ``RESTART_WINDOW_S``) stops everything, non-zero.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

import structlog

from assistant.app.embedded_redis import EmbeddedRedis, die_with_parent
from assistant.bus import heartbeat
from assistant.bus.connection import check_redis, connect
from assistant.bus.keys import Keys
from assistant.core.config import Settings
from assistant.core.errors import UserError
from assistant.core.ports import ensure_port_free
from assistant.demo.load import DemoKeys
from assistant.store import migrate

log = structlog.get_logger(__name__)

MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0


def check_model_path(settings: Settings) -> None:
    """A checkpoint directory, or a hub model id downloaded now (before any worker starts)."""
    path = settings.model_path
    if not path or Path(path).is_dir():
        return
    # Lazily: the runtime (torch) is the workers' business unless a download is due.
    from dlm_runtime.hub import looks_like_hub_id, resolve_checkpoint
    from dlm_runtime.loading import CheckpointError

    if looks_like_hub_id(path):
        try:
            resolve_checkpoint(path)
        except CheckpointError as exc:
            raise UserError(f"model path {exc}") from None
        return
    raise UserError(
        f"model path {path} is not a directory: point ASSISTANT_MODEL_PATH or --model-path at "
        "a checkpoint directory or a Hugging Face Hub model id, or leave it empty for the "
        "bundled model"
    )


class Supervisor:
    """Starts child processes of this package, restarts those that die, stops them together."""

    def __init__(self, settings: Settings, workers: int = 1) -> None:
        self.settings = settings
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        # Workers share the cores rather than each spreading over all of them: measured
        # with 50 clients on 2 cores, two workers of one thread carried 11.9 turns/s
        # against 8.5 for one worker of two (docs/benchmarks.md). OMP_NUM_THREADS in the
        # environment overrides this.
        cores = os.cpu_count() or 1
        self.thread_env = {"OMP_NUM_THREADS": str(max(1, cores // max(1, workers)))}
        self._args: dict[str, tuple[str, ...]] = {}
        self._restarts: dict[str, list[float]] = {}

    def spawn(self, name: str, *args: str) -> None:
        # Torch's OpenMP threads spin after each parallel region (libgomp's default spins
        # ~300k times); with several processes on few cores that starves the others
        # (measured here: training 9x slower). Passive waiting is no cure for a small
        # model: its many tiny ops pay a thread wake-up each (bundled model, 2 cores:
        # autoregressive 99 tokens/s passive against 254 spinning). A short spin keeps
        # most of the speed (228) and yields the cores soon after a forward.
        env = {"GOMP_SPINCOUNT": "10000", **self.thread_env, **os.environ}
        env.update(self.settings.to_env())
        process = subprocess.Popen(
            [sys.executable, "-m", "assistant", *args],
            env=env,
            # Own process group: Ctrl-C reaches only the supervisor, which stops children in
            # order; die_with_parent still ends them if the supervisor itself is killed.
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        self._args[name] = args
        self.children = [(n, p) for n, p in self.children if n != name] + [(name, process)]
        log.info("started", process=name, pid=process.pid)

    def first_exited(self) -> tuple[str, int] | None:
        for name, process in self.children:
            code = process.poll()
            if code is not None:
                return name, code
        return None

    def may_restart(self, name: str) -> bool:
        """Record a restart of ``name``; False once it keeps dying (a crash loop)."""
        now = time.monotonic()
        recent = [t for t in self._restarts.get(name, []) if now - t < RESTART_WINDOW_S]
        self._restarts[name] = [*recent, now]
        return len(recent) < MAX_RESTARTS

    def restart_exited(self) -> bool:
        """Start again every child that has exited; False when one of them crash-loops."""
        while (exited := self.first_exited()) is not None:
            name, code = exited
            if not self.may_restart(name):
                log.error("child process keeps exiting; stopping everything", process=name)
                return False
            log.warning("child process exited; starting it again", process=name, code=code)
            self.spawn(name, *self._args[name])
        return True

    def stop_all(self, timeout: float = 15.0) -> None:
        # Workers first, so that gateways can still relay their last events.
        for group in ("worker", "gateway"):
            members = [p for n, p in self.children if n.startswith(group) and p.poll() is None]
            for process in members:
                process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for process in members:
                try:
                    process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def serve(settings: Settings, gateways: int = 1, workers: int = 1) -> int:
    """Run the system until Ctrl-C / SIGTERM; return the exit status."""
    if gateways < 1 or workers < 0:
        raise UserError("serve needs at least one gateway and zero or more workers")
    check_model_path(settings)
    if workers and settings.decoding_mode:
        from assistant.agent.decoding import check_decoding_mode  # imports torch: only when asked

        check_decoding_mode(settings.decoding_mode)
    ports = [settings.port + i for i in range(gateways)] if settings.port else [0] * gateways
    for port in ports:
        ensure_port_free(settings.host, port)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.effective_database_url)
    settings = settings.with_(database_url=settings.effective_database_url)
    demo_keys = asyncio.run(_load_demo(settings.database_url, settings.data_dir))

    stop_requested = False

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    redis_server: EmbeddedRedis | None = None
    supervisor: Supervisor | None = None
    try:
        if settings.redis_url:
            asyncio.run(check_redis(settings.redis_url))
        else:
            redis_server = EmbeddedRedis(settings.data_dir / "redis")
            redis_server.start()
            settings = settings.with_(redis_url=redis_server.url)
        supervisor = Supervisor(settings, workers)
        for index, port in enumerate(ports):
            supervisor.spawn(f"gateway-{index}", "gateway", "--port", str(port))
        for index in range(workers):
            supervisor.spawn(f"worker-{index}", "worker")
        # The URLs are printed once a worker has loaded the model and consumes turns (its
        # heartbeat is in Redis), so that a message sent at once gets an answer promptly.
        announced = False
        if workers:
            _say("Waiting for a worker to load the model…")
        while not stop_requested:
            if not announced and (workers == 0 or _worker_alive(settings)):
                _announce(settings, ports, redis_server, demo_keys)
                announced = True
            if not supervisor.restart_exited():
                return 1
            if redis_server is not None and not redis_server.running:
                if not supervisor.may_restart("redis"):
                    log.error("redis-server keeps exiting; stopping everything")
                    return 1
                log.warning("redis-server exited; starting it again on the same port")
                redis_server.start()
            time.sleep(0.2)
        log.info("stopping")
        return 0
    finally:
        if supervisor is not None:
            supervisor.stop_all()
        if redis_server is not None:
            redis_server.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


async def _load_demo(url: str, data_dir: Path) -> DemoKeys:
    """The demo store and its keys are there from the first run on, so the pages work."""
    from assistant.demo.load import ensure_demo_keys, load_demo
    from assistant.store.database import create_engine

    engine = create_engine(url)
    try:
        tenant_id, added = await load_demo(engine)
        if any(added.values()):
            log.info("demo store loaded", tenant=tenant_id, **added)
        return await ensure_demo_keys(engine, tenant_id, data_dir)
    finally:
        await engine.dispose()


def _worker_alive(settings: Settings) -> bool:
    """Whether some worker's heartbeat lives (False while Redis does not answer)."""

    async def check() -> bool:
        redis = connect(settings.redis_url)
        try:
            return bool(await heartbeat.alive(redis, Keys(settings.key_prefix)))
        finally:
            await redis.aclose()

    try:
        return asyncio.run(check())
    except Exception as exc:
        log.debug("cannot read the workers' heartbeats yet", error=str(exc))
        return False


def _say(text: str) -> None:
    """One line on the console, where the URLs are printed too."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _announce(
    settings: Settings,
    ports: list[int],
    redis_server: EmbeddedRedis | None,
    demo_keys: DemoKeys,
) -> None:
    lines = ["", "The assistant is running. Open:"]
    for port in ports:
        base = f"http://{settings.host}:{port}"
        lines += [
            f"  {base}/         demo store page with the support widget",
            f"  {base}/console  agent console",
            f"  {base}/tutor    tutor page",
            f"  {base}/healthz  {base}/readyz  {base}/metrics",
            f"  ws://{settings.host}:{port}/ws  WebSocket endpoint (protocol v1)",
        ]
    redis_note = f"embedded, {redis_server.url}" if redis_server else settings.redis_url
    lines += [
        f"Demo operator key (console login): {demo_keys.operator_key}",
        f"Redis: {redis_note}",
        f"Database: {settings.database_url}",
        "Press Ctrl-C to stop everything.",
        "",
    ]
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()
