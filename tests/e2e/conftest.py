"""Fixtures for end-to-end tests against a real `chronik-broker` process.

By default each test that asks for `broker` gets its own chronik-broker started on
free 127.0.0.1 ports with a fresh temporary data dir, and waited for on /readyz.

Environment:
  CHRONIK_BROKER_BIN        broker binary (default ${CARGO_TARGET_DIR:-target}/release/chronik-broker,
                            relative CARGO_TARGET_DIR resolved against the repo root)
  CHRONIK_READY_TIMEOUT     seconds to wait for /readyz (default 30)
  KAFKA_EXTERNAL_BOOTSTRAP  use an already running Kafka-compatible broker instead
                            (e.g. Apache Kafka from bench/kafka-local.sh). Tests that
                            kill/restart the broker or read Chronik metrics skip...
  KAFKA_EXTERNAL_CTL        ...unless this names a control script taking
                            `kill9|stop|restart` (e.g. bench/kafka-local.sh), in which
                            case kill/restart tests run against the external broker too.
"""

from __future__ import annotations

import os

# Brokers are started with fork + exec while gRPC channels (the admin API's) have threads
# running; gRPC's fork handlers can then deadlock the fork itself (grpc/grpc#13873, #17986:
# a CI run hung in Popen). A child that execs at once needs none of them. Read when grpc
# is first imported, so set before any import that may bring it in.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import importlib
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafkautil import http_get

REPO = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO / "api" / "proto"
EXTERNAL_BOOTSTRAP = os.environ.get("KAFKA_EXTERNAL_BOOTSTRAP", "").strip()
EXTERNAL_CTL = os.environ.get("KAFKA_EXTERNAL_CTL", "").strip()
LOG_TAIL_BYTES = 64 * 1024


def broker_bin() -> Path:
    explicit = os.environ.get("CHRONIK_BROKER_BIN")
    if explicit:
        return Path(explicit)
    target = Path(os.environ.get("CARGO_TARGET_DIR") or "target")
    if not target.is_absolute():
        target = REPO / target
    return target / "release" / "chronik-broker"


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free port not handed out before in this session (brokers of one cluster get their
    ports before any of them binds, so the OS alone could give two of them the same one)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def _tail(path: Path, limit: int = LOG_TAIL_BYTES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            data = f.read().decode("utf-8", "replace")
        prefix = f"... ({size - limit} bytes skipped)\n" if size > limit else ""
        return prefix + data
    except OSError as e:
        return f"<could not read {path}: {e}>"


class ChronikBroker:
    """A chronik-broker child process with a fixed data dir and fixed ports."""

    external = False
    restartable = True

    def __init__(self, workdir: Path, config: dict | None = None, node_id: int = 1):
        # other brokers of the cluster as (node id, cluster address); empty: single node
        self.peers: list[tuple[int, str]] = []
        self.extra_args: list[str] = []
        # extra environment, e.g. FAILPOINTS for fault injection
        self.env: dict[str, str] = {}
        self.binary = broker_bin()
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "broker.log"
        self.node_id = node_id
        self.port = free_port()
        self.metrics_port = free_port()
        while self.metrics_port == self.port:
            self.metrics_port = free_port()
        self.cluster_port = free_port()
        while self.cluster_port in (self.port, self.metrics_port):
            self.cluster_port = free_port()
        self.admin_addr = f"127.0.0.1:{self.cluster_port}"
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}"
        self.config_path: Path | None = None
        if config:
            self.config_path = workdir / "broker.toml"
            self.config_path.write_text(_to_toml(config))
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self._stopped_on_purpose = False

    # -- lifecycle -------------------------------------------------------------------
    def command(self) -> list[str]:
        cmd = [
            str(self.binary),
            "--node-id", str(self.node_id),
            "--data-dir", str(self.data_dir),
            "--kafka-addr", self.bootstrap,
            "--advertised-kafka-addr", self.bootstrap,
            "--metrics-addr", f"127.0.0.1:{self.metrics_port}",
            "--cluster-addr", self.admin_addr,
        ]
        if self.config_path:
            cmd += ["--config", str(self.config_path)]
        if self.peers:
            cmd += ["--peers", ",".join(f"{i}@{addr}" for i, addr in self.peers)]
        return cmd + self.extra_args

    def start(self, timeout: float | None = None) -> None:
        timeout = timeout or float(os.environ.get("CHRONIK_READY_TIMEOUT", "30"))
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the process without waiting for it to be ready (brokers of a cluster
        become ready together, once their metadata group has a quorum)."""
        if self.alive:
            raise RuntimeError("broker already running")
        if not self.binary.exists():
            raise RuntimeError(
                f"chronik-broker binary not found at {self.binary}; build it with "
                "`cargo build --release` or set CHRONIK_BROKER_BIN"
            )
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        env.setdefault("RUST_BACKTRACE", "1")
        env.update(self.env)
        self.starts += 1
        self._stopped_on_purpose = False
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts}: {shlex.join(self.command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise RuntimeError(
                    f"chronik-broker exited with {code} before becoming ready; log:\n"
                    + self.log_tail()
                )
            try:
                status, body = http_get(self.metrics_url + "/readyz", timeout=2)
                if status == 200:
                    return
                last = f"HTTP {status}: {body[:200]}"
            except OSError as e:
                last = repr(e)
            time.sleep(0.1)
        self.kill9()
        raise RuntimeError(
            f"chronik-broker not ready after {timeout}s (last /readyz: {last}); log:\n"
            + self.log_tail()
        )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def died_unexpectedly(self) -> int | None:
        """Exit code if the process ended without the harness stopping it, else None."""
        if self.proc is None or self._stopped_on_purpose:
            return None
        return self.proc.poll()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def kill9(self) -> None:
        """SIGKILL the broker (no clean shutdown) and reap it."""
        if self.proc is None:
            return
        self._stopped_on_purpose = True
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=15)

    def signal_stop(self) -> None:
        """SIGTERM without waiting (several brokers stopping at once); `terminate` then
        waits for the exit."""
        if self.proc is not None and self.proc.poll() is None and not self._stopped_on_purpose:
            self._stopped_on_purpose = True
            self.proc.send_signal(signal.SIGTERM)

    def terminate(self, timeout: float = 20) -> int | None:
        """SIGTERM (unless `signal_stop` sent it) and wait for a clean exit; SIGKILL if it
        does not exit in time. Returns the exit code (negative = killed by signal)."""
        if self.proc is None:
            return None
        self.signal_stop()
        self._stopped_on_purpose = True
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with open(self.log_path, "ab") as log:
                    log.write(b"\n===== harness: no exit within SIGTERM timeout, SIGKILL\n")
                self.proc.kill()
                self.proc.wait(timeout=15)
        return self.proc.returncode

    def restart(self, timeout: float | None = None) -> None:
        """Stop (gracefully if still running) and start again on the same data dir and ports."""
        if self.alive:
            self.terminate()
        self.start(timeout)

    def stop(self) -> None:
        if self.alive:
            self.terminate(timeout=10)

    def log_tail(self, limit: int = LOG_TAIL_BYTES) -> str:
        return _tail(self.log_path, limit)

    def describe(self) -> str:
        return f"chronik-broker at {self.bootstrap} (metrics {self.metrics_url}, data {self.data_dir})"


class ExternalBroker:
    """An already running Kafka-compatible broker (KAFKA_EXTERNAL_BOOTSTRAP)."""

    external = True
    metrics_url = None
    proc = None

    def __init__(self, bootstrap: str, ctl: str = ""):
        self.bootstrap = bootstrap
        self.ctl = shlex.split(ctl) if ctl else []
        self.restartable = bool(self.ctl)
        self.log_path = None

    @property
    def alive(self) -> bool:
        host, _, port = self.bootstrap.split(",")[0].rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=2):
                return True
        except OSError:
            return False

    def _ctl(self, verb: str) -> None:
        if not self.ctl:
            pytest.skip(f"external broker ({self.bootstrap}) cannot be {verb}ed "
                        "(set KAFKA_EXTERNAL_CTL to allow it)")
        cmd = self.ctl + [verb]
        if not os.path.isabs(cmd[0]) and (REPO / cmd[0]).exists():
            cmd[0] = str(REPO / cmd[0])
        subprocess.run(cmd, check=True, timeout=180, stdin=subprocess.DEVNULL)

    def kill9(self) -> None:
        self._ctl("kill9")

    def terminate(self, timeout: float = 20) -> None:
        self._ctl("stop")

    def restart(self, timeout: float | None = None) -> None:
        self._ctl("restart")

    def stop(self) -> None:
        pass

    def log_tail(self, limit: int = LOG_TAIL_BYTES // 4) -> str:
        if not self.ctl:
            return "<external broker: no log>"
        try:
            path = subprocess.run(self.ctl + ["log"], capture_output=True, text=True,
                                  timeout=10, cwd=REPO).stdout.strip()
        except (OSError, subprocess.SubprocessError) as e:
            return f"<external broker log unavailable: {e}>"
        return _tail(Path(path), limit) if path else "<external broker: no log>"

    def describe(self) -> str:
        return f"external broker at {self.bootstrap}"


def _die_with_parent() -> None:  # runs in the child between fork and exec
    """Ask Linux to SIGKILL the broker if pytest itself dies (no orphaned brokers)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001
        pass


def _to_toml(config: dict) -> str:
    lines = []
    for key, value in config.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, (int, float)):
            lines.append(f"{key} = {value}")
        else:
            escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'{key} = "{escaped}"')
    return "\n".join(lines) + "\n"


# -- failure reporting: attach broker logs to failed tests ----------------------------

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for b in getattr(item, "_chronik_brokers", []):
            report.sections.append((f"broker log ({b.describe()})", b.log_tail()))


def _register(request, broker) -> None:
    node = request.node
    if not hasattr(node, "_chronik_brokers"):
        node._chronik_brokers = []
    node._chronik_brokers.append(broker)


# -- fixtures -------------------------------------------------------------------------

@pytest.fixture
def broker_factory(request, tmp_path_factory):
    """Start a dedicated chronik-broker, optionally with a TOML config dict.
    Skips when running against an external broker (its config cannot be changed)."""
    started: list[ChronikBroker] = []

    def make(config: dict | None = None) -> ChronikBroker:
        if EXTERNAL_BOOTSTRAP:
            pytest.skip("needs a chronik-broker with custom config; KAFKA_EXTERNAL_BOOTSTRAP is set")
        b = ChronikBroker(tmp_path_factory.mktemp("broker"), config=config)
        _register(request, b)
        started.append(b)
        b.start()
        return b

    yield make
    crashed = [(b, b.died_unexpectedly()) for b in started]
    crashed = [(b, code) for b, code in crashed if code is not None]
    for b in started:
        b.stop()
        if b.proc is not None and b.proc.returncode not in (0, None, -signal.SIGTERM, -signal.SIGKILL):
            # not a test failure by itself, but make it visible in the output
            print(f"\nchronik-broker exited with code {b.proc.returncode} on shutdown; log tail:\n"
                  + b.log_tail(8192))
    if crashed:
        pytest.fail("chronik-broker died during the test: " + "; ".join(
            f"{b.describe()} exit code {code}" for b, code in crashed), pytrace=False)


@pytest.fixture
def cluster_factory(request, tmp_path_factory):
    """Start n chronik-brokers (node ids 1..n) that know each other through --peers and
    replicate every partition through Raft. Returns the list of brokers, all ready."""
    started: list[ChronikBroker] = []

    def make(n: int = 3, config: dict | None = None,
             env: dict | None = None, args=None) -> list[ChronikBroker]:
        """`args`, if given, maps each broker to extra command-line arguments."""
        if EXTERNAL_BOOTSTRAP:
            pytest.skip("needs a Chronik cluster; KAFKA_EXTERNAL_BOOTSTRAP is set")
        brokers = [ChronikBroker(tmp_path_factory.mktemp(f"node{i}"), config=config, node_id=i)
                   for i in range(1, n + 1)]
        for b in brokers:
            b.peers = [(o.node_id, o.admin_addr) for o in brokers if o is not b]
            b.env.update(env or {})
            if args:
                b.extra_args += args(b)
            _register(request, b)
            started.append(b)
        for b in brokers:
            b.launch()
        timeout = float(os.environ.get("CHRONIK_READY_TIMEOUT", "30"))
        for b in brokers:
            b.wait_ready(timeout)
        return brokers

    def add(brokers: list[ChronikBroker], config: dict | None = None) -> ChronikBroker:
        """Start one more broker (the next node id) that knows the others: it joins
        their running cluster. Returns it ready; `brokers` gets it appended."""
        node_id = max(b.node_id for b in brokers) + 1
        b = ChronikBroker(tmp_path_factory.mktemp(f"node{node_id}"), config=config, node_id=node_id)
        b.peers = [(o.node_id, o.admin_addr) for o in brokers]
        _register(request, b)
        started.append(b)
        b.start()
        brokers.append(b)
        return b

    make.add = add
    yield make
    crashed = [(b, b.died_unexpectedly()) for b in started]
    # One at a time: each hands its leaderships to the brokers still running (the last
    # one, with no peer left to take them, exits at once).
    for b in started:
        b.stop()
    crashed = [(b, code) for b, code in crashed if code is not None]
    if crashed:
        pytest.fail("chronik-broker died during the test: " + "; ".join(
            f"{b.describe()} exit code {code}" for b, code in crashed), pytrace=False)


@pytest.fixture
def broker_process(request, tmp_path_factory):
    """Makes chronik-brokers that the test starts itself (e.g. with FAILPOINTS set) and
    that may die on purpose: their exit is the test's to check. Stopped at teardown."""
    made: list[ChronikBroker] = []

    def make(env: dict | None = None) -> ChronikBroker:
        if EXTERNAL_BOOTSTRAP:
            pytest.skip("needs a chronik-broker process; KAFKA_EXTERNAL_BOOTSTRAP is set")
        b = ChronikBroker(tmp_path_factory.mktemp("broker"))
        b.env.update(env or {})
        _register(request, b)
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


@pytest.fixture
def broker(request, broker_factory):
    """A running broker: a fresh chronik-broker, or the external one."""
    if EXTERNAL_BOOTSTRAP:
        b = ExternalBroker(EXTERNAL_BOOTSTRAP, EXTERNAL_CTL)
        _register(request, b)
        if not b.alive:
            pytest.fail(f"external broker {EXTERNAL_BOOTSTRAP} is not reachable")
        yield b
        if b.restartable and not b.alive:
            # a kill/restart test failed half-way: bring it back for the next tests
            try:
                b.restart()
            except Exception as e:  # noqa: BLE001
                print(f"could not restart external broker: {e}")
        return
    yield broker_factory()


@pytest.fixture
def restartable_broker(broker):
    """A broker the test may kill -9 and restart; skips on a plain external broker."""
    if not broker.restartable:
        pytest.skip("needs kill/restart; external broker without KAFKA_EXTERNAL_CTL")
    return broker


@pytest.fixture
def chronik_broker(broker):
    """A chronik-broker specifically (metrics, Chronik-only behaviour)."""
    if broker.external:
        pytest.skip("Chronik-specific; KAFKA_EXTERNAL_BOOTSTRAP is set")
    return broker


@pytest.fixture
def topic_name(request):
    """A unique, valid topic name derived from the test name."""
    from kafkautil import unique_topic

    return unique_topic(request.node.name)


@pytest.fixture(scope="session")
def admin_pb(tmp_path_factory):
    """Python modules generated from the admin proto the broker is built from:
    (messages, stubs)."""
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("admin_pb")
    proto = "chronik/admin/v1/admin.proto"
    rc = protoc.main(["protoc", f"-I{PROTO_ROOT}", f"--python_out={out}", f"--grpc_python_out={out}", proto])
    assert rc == 0, "protoc failed on the admin proto"
    sys.path.insert(0, str(out))
    try:
        pb = importlib.import_module("chronik.admin.v1.admin_pb2")
        stubs = importlib.import_module("chronik.admin.v1.admin_pb2_grpc")
    finally:
        sys.path.remove(str(out))
    return pb, stubs
