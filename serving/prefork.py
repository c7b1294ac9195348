"""`fashionrec serve --workers N`: load once, then fork.

The parent loads the current bundle (catalog, ID and title tables, the ranking stage, the compiled ranker when its
code is cached) and warms it up (`RecommendationService.preload`), lets go of the vector store and the online store,
and forks N workers on one listening socket. Each worker opens its own online-store connection and, in the
background, its own LLM (`RecommendationService.attach`). With the embedded engine and the table scans (the
default) a request reads nothing from the collections, so a worker opens none; searching the collections, each
opens its own copy of them (an Edge shard opens in one process at a time). It runs the warm-up again (cheap after
the parent's), references the per-item objects it shares with the parent once (so their pages are copied now,
not on the first requests), sends one request through the app in process, and serves with uvicorn. /readyz says
ready once every worker has come that far. The workers share what the parent loaded copy-on-write, so they are ready about when one process would
be, and N of them take little more memory than one.

The parent restarts a worker that dies (from what it loaded: in about a second), and on SIGINT or SIGTERM stops
them all, each removing its copy of the collections if it has one.

Before this, `--workers N` ran uvicorn's own workers: N processes each importing and loading everything, side by
side on the same cores (30 s to ready for two on medium-s0, against 19 s for one).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from typing import NoReturn

from serving.config import Settings
from serving.service import RecommendationService
from serving.vectorstore import remove_private_copies

logger = logging.getLogger(__name__)
RESTART_PAUSE_S = 1.0  # between a worker's death and its replacement (a worker that dies at once does not spin)


def bind(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """The listening socket every worker accepts on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def _worker(service: RecommendationService, sock: socket.socket, index: int) -> NoReturn:
    """A forked worker: its own stores, the warm-up again, then uvicorn on the shared socket until stopped."""
    code = 1
    try:
        # uvicorn handles SIGINT and SIGTERM while it serves, and raises the signal again once it has shut down,
        # under the handler it found: a no-op here, so that the worker goes on to close its stores.
        signal.signal(signal.SIGTERM, lambda *_: None)
        signal.signal(signal.SIGINT, lambda *_: None)
        import uvicorn

        from serving.app import create_app, warm_http

        service.attach()
        service.warm_up(service.bundle)  # cheap after the parent's; it touches the pages a first request would copy
        service.bundle.retriever.touch()  # and the per-item objects the warm-up's few requests did not reach
        app = create_app(service.settings, service=service)
        app.state.service, app.state.settings = service, service.settings
        asyncio.run(warm_http(app))  # and one request through the app itself
        if service.worker_flags is not None:
            service.worker_flags[index] = 1  # /readyz says ready once every worker has come this far
        logger.info("worker %d (pid %d) serving", index, os.getpid())
        config = uvicorn.Config(app, log_level="warning")
        uvicorn.Server(config).run(sockets=[sock])
        code = 0
    except BaseException:  # noqa: BLE001 - whatever ends a worker is logged; the parent starts another
        logger.exception("worker %d (pid %d) failed", index, os.getpid())
    finally:
        try:
            service.close()  # its copy of the collections, its LLM
        except Exception:  # noqa: BLE001
            logger.exception("worker %d: closing failed", index)
        os._exit(code)


def serve(settings: Settings) -> int:
    """Bind, load once, fork `settings.workers` workers and supervise them until SIGINT or SIGTERM; the exit code."""
    sock = bind(settings.host, settings.port)
    t0 = time.perf_counter()
    service = RecommendationService.preload(settings)
    if (others := [t.name for t in threading.enumerate() if t is not threading.main_thread()]):
        logger.warning("forking with threads running (%s): they are not in the workers", ", ".join(others))
    logger.info("loaded bundle %s once in %.1f s; forking %d workers", service.bundle.version,
                time.perf_counter() - t0, settings.workers)
    # The loaded bundle is millions of Python objects (the catalog's strings, the id maps). A worker's cyclic
    # garbage collector would walk them all: a pause of tens of milliseconds on some request, and a write to every
    # page it walks, which copies the page the worker shared with this process. Frozen, the collector leaves them.
    gc.freeze()  # (no collection first: on medium-s0 it takes a second, for little garbage)
    # One flag per worker in shared memory, set once that worker has warmed up (and left set through a restart):
    # /readyz waits for all of them, so that the first requests do not share the cores with a worker's warm-up.
    service.worker_flags = multiprocessing.RawArray("b", settings.workers)
    workers: dict[int, int] = {}  # pid -> worker index
    stopping = False

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:
            _worker(service, sock, index)
        workers[pid] = index

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(workers):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for i in range(settings.workers):
        spawn(i)
    code = 0
    while workers:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        index = workers.pop(pid, None)
        if remove_private_copies(pid):  # a worker that was killed could not remove its copy of the collections
            logger.info("removed the collections copy of worker pid %d", pid)
        if index is None or stopping:
            continue
        code = 1
        logger.warning("worker %d (pid %d) exited with status %d; starting another", index, pid, status)
        time.sleep(RESTART_PAUSE_S)
        if not stopping:
            spawn(index)
    sock.close()
    return 0 if stopping else code
