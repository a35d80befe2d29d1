"""A real single-node Apache Kafka broker (KRaft) for development and tests, without Docker.

The broker's jars are resolved from Maven Central through the pom that ships beside this module
(``kafka-pom.xml``) into a cache directory once (``~/.cache/intentflow/kafka-libs`` unless told
otherwise), so the installed package works outside a checkout. The broker runs as ``java -cp
'libs/*' kafka.Kafka server.properties`` after ``kafka.tools.StorageTool format``, with its logs in
a file. ``start`` is idempotent, ``stop`` leaves no process behind, and ``start`` returns only when
a metadata request succeeds.

``security`` other than ``none`` secures the client listener (TLS, SASL/SCRAM, mutual TLS, ACLs):
see ``streams.devtools.kafka_security``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from streams.devtools.certs import write_private
from streams.devtools.kafka_security import (
    ADMIN,
    Secrets,
    Security,
    connection_for,
    scram_format_args,
    server_properties,
    write_env_files,
)
from streams.errors import BrokerUnreachableError, LocalKafkaError, ToolMissingError
from streams.kafka.connection import KafkaConnection

POM = Path(__file__).with_name("kafka-pom.xml")
DEFAULT_JARS_DIR = Path.home() / ".cache" / "intentflow" / "kafka-libs"
DEFAULT_HOME = Path("var") / "kafka"  # under the working directory

_LOG4J2 = """\
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="warn">
  <Appenders>
    <File name="file" fileName="{log}" append="true">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </File>
  </Appenders>
  <Loggers>
    <Logger name="kafka" level="info"/>
    <Logger name="org.apache.kafka" level="info"/>
    <Logger name="state.change.logger" level="warn"/>
    <Root level="info"><AppenderRef ref="file"/></Root>
  </Loggers>
</Configuration>
"""

_SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{host}:{controller_port}
listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}
advertised.listeners=PLAINTEXT://{host}:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={data}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=24
log.segment.bytes=67108864
"""


def _require(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ToolMissingError(
            f"`{tool}` is not installed, and the local Kafka broker needs it. {hint}\n"
            "Where Docker is available, `docker compose up kafka` runs the broker instead."
        )
    return path


def ensure_jars(jars_dir: Path = DEFAULT_JARS_DIR, *, quiet: bool = True) -> Path:
    """Resolve the broker's jars with Maven into ``jars_dir`` once; reuse them afterwards."""
    stamp = jars_dir / ".pom-sha256"
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest and any(jars_dir.glob("kafka_2.13-*.jar")):
        return jars_dir
    _require(
        "java", "Install a JDK 17 or newer (Debian: `apt-get install openjdk-17-jre-headless`)."
    )
    mvn = _require("mvn", "Install Maven (Debian: `apt-get install maven`).")
    if jars_dir.exists():
        shutil.rmtree(jars_dir)
    jars_dir.mkdir(parents=True)
    cmd = [
        mvn, "-B", "-f", str(POM), "dependency:copy-dependencies",
        f"-DoutputDirectory={jars_dir}", "-DincludeScope=runtime",
    ]  # fmt: skip
    if quiet:
        cmd.insert(1, "-q")
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LocalKafkaError(
            f"Maven could not resolve the Kafka jars from {POM} (exit {result.returncode}):\n"
            f"{(result.stdout + result.stderr)[-2000:]}\n"
            "Check that Maven Central is reachable, then run `intentflow kafka start` again."
        )
    stamp.write_text(digest)
    return jars_dir


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host``."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def broker_ready(
    bootstrap: str, timeout: float = 2.0, *, connection: KafkaConnection | None = None
) -> bool:
    """True when a metadata request to ``bootstrap`` (through ``connection``, when the broker
    is secured) succeeds."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    options = (
        connection.kafka_python() if connection else {"bootstrap_servers": bootstrap.split(",")}
    )
    try:
        admin = KafkaAdminClient(
            **options,
            request_timeout_ms=int(timeout * 1000),
            bootstrap_timeout_ms=int(timeout * 1000),
            client_id="intentflow-probe",
        )
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.describe_cluster()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def wait_for_broker(
    bootstrap: str, timeout: float, *, connection: KafkaConnection | None = None
) -> None:
    """Block until the broker answers a metadata request, or raise BrokerUnreachableError."""
    deadline = time.monotonic() + timeout
    while True:
        wait = min(2.0, max(0.5, deadline - time.monotonic()))
        if broker_ready(bootstrap, timeout=wait, connection=connection):
            return
        if time.monotonic() >= deadline:
            raise BrokerUnreachableError(
                f"no Kafka broker answered at {bootstrap} within {timeout:.0f}s. Start one with "
                "`intentflow kafka start`, or set INTENTFLOW_KAFKA_BOOTSTRAP to a running broker."
            )
        time.sleep(0.25)


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap: str
    healthy: bool
    log_file: Path


@dataclass(frozen=True)
class LocalKafka:
    """One local KRaft broker whose state lives under ``home``."""

    home: Path = DEFAULT_HOME
    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int = 9093
    jars_dir: Path = DEFAULT_JARS_DIR
    heap_mb: int = 512
    security: Security = Security.NONE
    # More secured client listeners on other ports, as (security, port): tests run one broker
    # with SASL_SSL, SSL and SASL_PLAINTEXT listeners side by side.
    extra_listeners: tuple[tuple[Security, int], ...] = ()

    def __post_init__(self) -> None:
        # Absolute, so the broker process and later calls agree whatever their working dir.
        object.__setattr__(self, "home", Path(self.home).absolute())
        object.__setattr__(self, "security", Security(self.security))
        extra = tuple((Security(s), port) for s, port in self.extra_listeners)
        if extra and self.security is Security.NONE:
            raise LocalKafkaError("extra listeners need a secured main listener")
        object.__setattr__(self, "extra_listeners", extra)

    @property
    def listeners(self) -> list[tuple[Security, int]]:
        """Every client listener as (security, port), the main one first."""
        return [(self.security, self.port), *self.extra_listeners]

    def bootstrap_for(self, security: Security) -> str:
        """The bootstrap address of the listener of ``security``."""
        for listener, port in self.listeners:
            if listener is Security(security):
                return f"{self.host}:{port}"
        raise LocalKafkaError(f"this broker has no {security} listener")

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def secrets_dir(self) -> Path:
        return self.home / "secrets"

    def secrets(self) -> Secrets:
        """The TLS material and passwords of a secured broker (made on first use)."""
        return Secrets.load_or_create(self.secrets_dir, (self.host,))

    def connection(
        self, user: str = ADMIN, security: Security | None = None
    ) -> KafkaConnection | None:
        """How ``user`` connects to this broker's listener of ``security`` (default: the main
        one); None for a plaintext broker, which knows no users."""
        if self.security is Security.NONE:
            return None
        chosen = Security(security) if security else self.security
        return connection_for(chosen, self.bootstrap_for(chosen), user, self.secrets())

    @property
    def _security_file(self) -> Path:
        return self.home / "security"

    def formatted_security(self) -> Security | None:
        """The security this home's storage was formatted with (None: never formatted)."""
        if not (self.home / "data" / "meta.properties").exists():
            return None
        try:
            return Security(self._security_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return Security.NONE

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "server.log"

    @property
    def _pid_file(self) -> Path:
        return self.home / "broker.pid"

    def _pid(self) -> int | None:
        try:
            pid = int(self._pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        # A recycled pid belongs to something else: only trust it if it is our java process.
        cmdline = Path(f"/proc/{pid}/cmdline")
        if cmdline.exists() and b"kafka.Kafka" not in cmdline.read_bytes():
            return None
        return pid

    def status(self) -> BrokerStatus:
        pid = self._pid()
        healthy = pid is not None and broker_ready(self.bootstrap, connection=self.connection())
        return BrokerStatus(pid is not None, pid, self.bootstrap, healthy, self.log_file)

    def start(self, timeout: float = 60.0) -> float:
        """Start the broker (a no-op when it already runs). Returns the seconds it took."""
        began = time.monotonic()
        formatted = self.formatted_security()
        if formatted is not None and formatted is not self.security:
            raise LocalKafkaError(
                f"the broker in {self.home} was set up with --security {formatted}, not "
                f"{self.security}. Start it with --security {formatted}, or use another --home "
                "(the users and certificates are made when the storage is formatted)."
            )
        admin = self.connection()
        if self._pid() is not None:
            wait_for_broker(self.bootstrap, timeout, connection=admin)
            self._write_env_files()
            return time.monotonic() - began
        java = _require(
            "java", "Install a JDK 17 or newer (Debian: `apt-get install openjdk-17-jre-headless`)."
        )
        jars = ensure_jars(self.jars_dir)
        for port in (*(p for _, p in self.listeners), self.controller_port):
            if not _port_free(self.host, port):
                raise LocalKafkaError(
                    f"port {self.host}:{port} is already in use by another program. Stop it, or "
                    "choose other ports (`intentflow kafka start --port P --controller-port C`)."
                )
        data = self.home / "data"
        config = self.home / "server.properties"
        log4j = self.home / "log4j2.xml"
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        scram: list[str] = []
        if self.security is Security.NONE:
            properties = _SERVER_PROPERTIES.format(
                host=self.host, port=self.port, controller_port=self.controller_port, data=data
            )
        else:
            secrets_ = self.secrets()
            properties = server_properties(
                self.listeners, self.host, self.controller_port, data, secrets_
            )
            scram = scram_format_args(secrets_)
        write_private(config, properties.encode())  # it holds passwords when secured
        log4j.write_text(_LOG4J2.format(log=self.log_file))
        classpath = f"{jars}/*"
        jvm = [f"-Xms{self.heap_mb // 2}m", f"-Xmx{self.heap_mb}m", "-XX:+UseG1GC",
               "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={log4j}"]  # fmt: skip
        if not (data / "meta.properties").exists():
            fmt = subprocess.run(
                [
                    java,
                    *jvm,
                    "-cp",
                    classpath,
                    "kafka.tools.StorageTool",
                    "format",
                    # "=" form: a random id may start with "-", which argparse takes for a flag
                    f"--cluster-id={_cluster_id()}",
                    "-c",
                    str(config),
                    "--ignore-formatted",
                    *scram,
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if fmt.returncode != 0:
                raise LocalKafkaError(
                    f"formatting the KRaft storage in {data} failed:\n{fmt.stdout}{fmt.stderr}"
                )
            self._security_file.write_text(str(self.security))
        with open(self.home / "logs" / "stdout.log", "ab") as out:
            proc = subprocess.Popen(
                [java, *jvm, "-cp", classpath, "kafka.Kafka", str(config)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        self._pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self._pid_file.unlink(missing_ok=True)
                raise LocalKafkaError(
                    f"the broker exited with code {proc.returncode} during start-up. "
                    f"Its log is {self.log_file}:\n{_tail(self.log_file)}"
                )
            if broker_ready(self.bootstrap, timeout=1.0, connection=admin):
                self._write_env_files()
                return time.monotonic() - began
            time.sleep(0.2)
        self.stop()
        raise LocalKafkaError(
            f"the broker did not answer at {self.bootstrap} within {timeout:.0f}s. "
            f"Its log is {self.log_file}:\n{_tail(self.log_file)}"
        )

    def _write_env_files(self) -> None:
        if self.security is not Security.NONE:
            write_env_files(self.security, self.bootstrap, self.secrets())

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker: SIGTERM, then SIGKILL after ``timeout``. True if one was running."""
        pid = self._pid()
        if pid is None:
            self._pid_file.unlink(missing_ok=True)
            return False
        signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            signal_group(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)
        self._pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """SIGKILL the broker at once (failure tests)."""
        pid = self._pid()
        if pid is not None:
            signal_group(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)


def _cluster_id() -> str:
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        # As Kafka binds: connections of a stopped broker in TIME_WAIT do not block a restart.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):  # reap it if it is our child
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal a process group (as started with start_new_session), or the process alone."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"
