"""The Ray a search runs on: joined or started before anything is stored, checked, and left as it was found.

A cluster that cannot be joined (``--address auto`` with none running, an unreachable host) or cannot
run a trial at all (no node with ``cpus_per_trial`` CPUs and ``gpus_per_trial`` GPUs) is a clear error
before the search writes its MLflow run and Optuna study, where it used to be a traceback afterwards,
or a hang. ``ray.init`` installs a SIGTERM handler that exits the process and Tune one for SIGUSR1;
the session puts the caller's handlers back (a scheduler's TERM then stops a search as Ctrl-C does).
A Ray started here also leaves environment variables behind (``PYTHONBREAKPOINT`` set to Ray's remote
debugger, which broke the caller's next ``breakpoint()``; ``RAY_*``): they are put back as well.
``ray.init`` also sets the ``ray`` logger's level (and its handlers' formats), which are put back too.
A Ray the caller started is used as it is and left running.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from autoq.errors import AutoqError, Terminated
from autoq.interrupts import STOP_SIGNALS, deferred_interrupts, raise_terminated
from autoq.messages import note, warn

OBJECT_STORE_BYTES = 512 * 1024**2  # a local Ray needs little: the workload is the largest object
CONNECT_TIMEOUT_S = 5.0  # an unreachable host:port is refused after this, not after Ray's minutes of retries
SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1") if hasattr(signal, name))


RAY_OPTIONS = ("address", "cpus_per_trial", "gpus_per_trial")  # how Ray runs trials: SearchConfig fields the optuna backend ignores


def cluster_address(config: Any) -> str | None:
    """The Ray cluster a search joins: ``--address``, else ``$RAY_ADDRESS`` as Ray's own tools read it (``ray job
    submit`` sets it for the job it runs); ``None``: a local Ray started for the search."""
    return config.address or os.environ.get("RAY_ADDRESS", "").strip() or None


def ray_options_set(config: Any) -> dict[str, Any]:
    """The :data:`RAY_OPTIONS` of ``config`` (a `SearchConfig`) that differ from their defaults."""
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    return {name: getattr(config, name) for name in RAY_OPTIONS if getattr(config, name) != defaults[name]}


# Ray searches of one process run one at a time: two threads (an outer Optuna study's n_jobs=2) each started, or shut
# down under the other, the one Ray a process has ("called ray.init twice"), and Tune's trainable registry is not
# thread-safe. Process-wide by nature, as the Ray it guards is.
_ONE_RAY_SEARCH = threading.RLock()


@contextmanager
def ray_session(config: Any) -> Iterator[None]:
    """For ``config.backend == "ray"``: a joined or started Ray for the block, shut down after it if started here.
    Another Ray search of this process running in another thread is waited for, with a line saying so."""
    if config.backend != "ray":
        yield
        return
    if not _ONE_RAY_SEARCH.acquire(blocking=False):
        note("another Ray search of this process is running; this one starts when it ends (Ray searches of one "
             "process run one at a time)")
        _ONE_RAY_SEARCH.acquire()
    try:
        with _ray_session(config):
            yield
    finally:
        _ONE_RAY_SEARCH.release()


@contextmanager
def _ray_session(config: Any) -> Iterator[None]:
    import ray

    main = threading.current_thread() is threading.main_thread()
    handlers = {sig: signal.getsignal(sig) for sig in SIGNALS} if main else {}
    environ = dict(os.environ)
    owned = not ray.is_initialized()  # started (or joined) here: shut down after, also when Ctrl-C cuts ray.init short
    ray_logger = logging.getLogger("ray")
    logger_state = (ray_logger.level, [(h, h.formatter) for h in ray_logger.handlers])
    try:
        _ensure_ray(config)
        if main:  # ray.init's TERM handler calls sys.exit: the search would end as a crash, not an interruption
            signal.signal(signal.SIGTERM, handlers[signal.SIGTERM])
        check_resources(config)
        yield
    finally:
        if owned:
            # whether or not the driver connected: a Ctrl-C inside ray.init, after it started the node's processes, left
            # its agents running a minute after autoq exited (shutdown stops the node this process started, if any)
            ray.shutdown()
            _put_back(environ)
            ray_logger.setLevel(logger_state[0])
            for handler, formatter in logger_state[1]:
                handler.setFormatter(formatter)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def _put_back(environ: dict[str, str]) -> None:
    """``os.environ`` as it was before a Ray started here set its variables."""
    for name in [name for name in os.environ if name not in environ]:
        del os.environ[name]
    for name, value in environ.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


def _ensure_ray(config: Any) -> None:
    """Join ``config.address``, or start a local Ray sized for the workers, unless one is up already."""
    import ray

    if ray.is_initialized():
        return
    common = dict(logging_level=logging.ERROR, log_to_driver=False)
    address = cluster_address(config)
    if not address:
        cpus = max(1, math.ceil(config.workers * config.cpus_per_trial))
        said = oversubscribed(config.workers, config.cpus_per_trial, os.cpu_count() or 1)
        if said:
            note(said)
        # address="local": a RAY_ADDRESS set to an empty string would still make ray.init look for a cluster. Ctrl-C
        # waits for it (seconds; a second one cuts it short): cut mid-way, its agents outlived autoq by a minute or two
        # (their SIGTERM blocked, `kill` did nothing), or the KeyboardInterrupt landed in a finalizer, which Python drops,
        # and the search ran to its end. SIGTERM is held as well: the handler ray.init installs (sys.exit) took one sent
        # meanwhile, mid-way (status 15, no word, its agents left running), and the search puts the caller's back after it
        with _term_blocked(), deferred_interrupts(forceable=True), _ray_keeps_handlers():
            ray.init(address="local", num_cpus=cpus, include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES, **common)
        return
    given = f"--address {address!r}" if config.address else f"RAY_ADDRESS={address!r} (the environment)"
    reachable = _check_reachable(address, given)
    try:
        ray.init(address=address, **common)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        if reachable:  # something listens there: no cluster to start, the address or the cluster's terms are wrong
            hint = ("something answers at that port, but no Ray cluster took this driver: give the head's GCS port ('ray start "
                    "--head' prints it; 6379 by default), and check that this Ray's version and authentication match the cluster's")
        else:
            hint = "start one ('ray start --head'), or leave --address out and unset RAY_ADDRESS to run a local Ray"
        raise AutoqError(f"cannot join a Ray cluster at {given} ({str(exc).splitlines()[0]}); {hint}") from None


def oversubscribed(workers: int, cpus_per_trial: float, machine_cpus: int) -> str | None:
    """A note where a local Ray sized for ``workers`` trials claims more CPUs than the machine has (``None`` where it
    does not): the trials then share the CPUs, each slower, and each worker holds its own copy of the model."""
    claimed = workers * cpus_per_trial
    if claimed <= machine_cpus + 1e-9:  # 3 x 0.1 is 0.30000000000000004
        return None
    return (f"--workers {workers} x --cpus-per-trial {cpus_per_trial:g} claim {claimed:g} CPUs on a machine with {machine_cpus}: "
            f"the local Ray runs the {workers} trials at once on shared CPUs, each slower, and holds {workers} copies of the model "
            f"(--workers {max(1, math.floor(machine_cpus / cpus_per_trial + 1e-9))} fits this machine)")  # 2 // 0.1 is 19.0


@contextmanager
def _ray_keeps_handlers() -> Iterator[None]:
    """``ray.init`` without its own SIGTERM handler (``sys.exit``), which replaced the one in place while Ray started.
    Ray sets it through ``ray._private.utils.set_sigterm_handler``; where a Ray has none such, nothing is changed."""
    from unittest import mock

    try:
        import ray._private.utils as ray_utils
    except ImportError:
        ray_utils = None
    if ray_utils is None or not hasattr(ray_utils, "set_sigterm_handler"):
        yield
        return
    with mock.patch.object(ray_utils, "set_sigterm_handler", lambda handler: None):
        yield


@contextmanager
def _term_blocked() -> Iterator[None]:
    """SIGTERM blocked while a local Ray starts, so its processes (which share this process group) inherit it blocked, as
    Ray blocks SIGINT in them: a scheduler's group-wide SIGTERM (``timeout``, ``kill -TERM -PGID``, SLURM, systemd) killed
    Ray's GCS with the search, which then hung 60 s and died with status 1, its parent run left RUNNING and agents left
    behind. This process gets a SIGTERM sent meanwhile once it is unblocked, and stops as on any other (143)."""
    if not hasattr(signal, "pthread_sigmask"):  # not POSIX: nothing to inherit
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, set(STOP_SIGNALS))  # a closed terminal's group-wide HUP as well
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _check_reachable(address: str, given: str) -> bool:
    """A ``host:port`` (or ``ray://host:port``) that takes no connection, or answers HTTP (the dashboard's port, 8265,
    is the usual slip), is refused now: Ray retries for minutes. ``True`` where it connected; ``False`` for ``auto``."""
    if address == "auto":
        return False  # the cluster 'ray start' recorded on this machine: Ray finds it, or says there is none
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        if address.startswith("ray://"):
            return False  # Ray Client resolves a host without a port itself
        raise AutoqError(f"{given} is not a Ray address: give HOST:PORT of the head node (its GCS port, 6379 by default), "
                         "ray://HOST:10001 for Ray Client, or auto for the cluster 'ray start' began on this machine")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT_S) as conn:
            http = _answers_http(conn)
    except OSError as exc:
        raise AutoqError(f"cannot reach the Ray cluster at {given} ({exc}); check the head node's address and port, "
                         "or leave --address out and unset RAY_ADDRESS to run a local Ray") from None
    if http:
        raise AutoqError(f"{given} answers HTTP, which no Ray cluster's GCS or Ray Client port does (the dashboard's port, 8265, "
                         "is for 'ray job submit'): give the head's GCS port ('ray start --head' prints it; 6379 by default) "
                         "or ray://HOST:10001")
    return True


def _answers_http(conn: socket.socket) -> bool:
    """Whether the server on ``conn`` answers an HTTP/1.0 request with an HTTP status line (a gRPC server does not)."""
    try:
        conn.settimeout(CONNECT_TIMEOUT_S)
        conn.sendall(b"HEAD / HTTP/1.0\r\n\r\n")
        return conn.recv(5) == b"HTTP/"
    except OSError:
        return False


def check_resources(config: Any) -> None:
    """Refuse a trial that no node of a local Ray can run (it would wait forever); warn where a cluster's autoscaler
    might still add such a node."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    cpus = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
    gpus = max((n.get("GPU", 0.0) for n in nodes), default=0.0)
    if config.cpus_per_trial <= cpus and config.gpus_per_trial <= gpus:
        return
    message = (f"a trial needs {config.cpus_per_trial:g} CPU(s) and {config.gpus_per_trial:g} GPU(s) on one node, and the largest node "
               f"of this Ray has {cpus:g} and {gpus:g}")
    if not cluster_address(config):
        raise AutoqError(f"{message}; lower --cpus-per-trial / --gpus-per-trial, or start Ray with more (ray.init(num_cpus=...))")
    warn(f"{message}: trials wait until the cluster adds such a node")


@contextmanager
def term_stops_tune() -> Iterator[list[int]]:
    """While Tune runs: SIGTERM and SIGHUP stop it as its SIGINT and SIGUSR1 handler does (the running trials end, the
    search is interrupted and can be resumed); the handlers are restored after (Tune leaves its own behind). Yields the
    list of those signals received, so that the stop can be told from a Ctrl-C (its exit status is 143 or 129, not 130)."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    handlers = {sig: signal.getsignal(sig) for sig in SIGNALS}

    def gentle(signum: int, frame: Any) -> None:
        received.append(signum)
        tune_stop = signal.getsignal(signal.SIGUSR1) if hasattr(signal, "SIGUSR1") else None
        if callable(tune_stop) and tune_stop is not handlers.get(signal.SIGUSR1):
            tune_stop(signum, frame)
        else:  # Tune's handler not (yet) in place
            raise Terminated(signum)

    for sig in STOP_SIGNALS:  # SIGHUP too (a closed terminal); not where the caller handles it or ignores it (nohup)
        if handlers.get(sig) in (signal.SIG_DFL, raise_terminated):
            signal.signal(sig, gentle)
    try:
        yield received
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
