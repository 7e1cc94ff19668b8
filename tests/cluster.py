"""A cluster of simulated machines on one Linux host: network namespaces on a private bridge.

The cluster owns everything it talks to. A bridge in the root namespace carries a
private /24 picked so that no route of this machine covers it; the cluster's own
PostgreSQL listens on its first address and its own redis-server on its second
(two addresses, so that the broker can be cut off while the results DB stays up).
Each host is a network namespace joined to the bridge by a veth pair, with its own
hostname (a UTS namespace) and its own mount namespace in which a tmpfs covers the
cluster's whole folder: a host starts in an empty working folder and ``HOME``, and
no file of the scheduler's folder exists for it. It runs ``python -P -m worker``
with the two URLs as its only arguments, importing seqsweep from the installed code
(``PYTHONPATH`` is the checkout, as for ``launch``'s local workers).

Nothing here sends a packet to an address the cluster did not make, every wait is
bounded, and :meth:`Cluster.close` tears everything down, also after a failure.
Needs root, ``ip``, ``unshare``, ``runuser``, redis-server, PostgreSQL's server
binaries (``/usr/lib/postgresql/*/bin``) and, for a host with a wrong clock, a C
compiler; :func:`missing` says what is absent.
"""

from __future__ import annotations

import contextlib
import glob
import ipaddress
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from tests.processes import Proc, wait_until

REPO = Path(__file__).resolve().parent.parent
PG_PORT = 5432
#: A throwaway cluster: trust on the private subnet only, no fsync.
INITDB_OPTIONS = ("-U", "postgres", "-E", "UTF8", "--auth=trust", "--no-sync")
REDIS_PORT = 6379
#: A host's wrong wall clock: an LD_PRELOAD library built from this source (see its comment
#: for why not libfaketime).
SKEW_SOURCE = Path(__file__).resolve().parent / "skew" / "wallclock_skew.c"


def _sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=30, check=check)


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=_version_key)
    return Path(found[-1]).parent if found else None


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(p) for p in Path(path).parent.parent.name.split(".") if p.isdigit())


def missing() -> str | None:
    """Why this machine cannot build a cluster, or None when it can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "unshare", "runuser", "redis-server", "cc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install iproute2 util-linux redis-server gcc)"
    if _pg_bin() is None:
        return "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"
    probe = f"sqprobe{uuid.uuid4().hex[:6]}"
    made = _sh("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot make a network namespace: {made.stderr.strip()}"
    _sh("ip", "netns", "del", probe, check=False)
    return None


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.213.0.0/16 that no address or route of this machine overlaps."""
    used = []
    for line in _sh("ip", "-4", "route", "show", "table", "all").stdout.splitlines():
        first = line.split()[0] if line.split() else ""
        for word in (first, line.split()[1] if first in ("local", "broadcast") else ""):
            with contextlib.suppress(ValueError):
                used.append(ipaddress.ip_network(word, strict=False))
    candidates = list(range(1, 255))
    random.shuffle(candidates)
    for third in candidates:
        net = ipaddress.ip_network(f"10.213.{third}.0/24")
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise RuntimeError("no free /24 in 10.213.0.0/16 for the test cluster")


class Host:
    """One simulated machine: a network namespace running one worker node."""

    def __init__(self, cluster: Cluster, name: str, index: int) -> None:
        self.cluster = cluster
        self.name = name
        self.netns = f"sq{cluster.tag}{name}"
        #: The root namespace's end of the host's link: down means the cable is cut.
        self.link = f"sq{cluster.tag}v{index}"
        self.address = str(cluster.subnet.network_address + 10 + index)
        self.worker: Proc | None = None
        self.log = cluster.folder / "logs" / f"{name}.log"

    def build(self) -> None:
        peer = f"sq{self.cluster.tag}p"
        _sh("ip", "netns", "add", self.netns)
        _sh("ip", "link", "add", self.link, "type", "veth", "peer", "name", peer)
        _sh("ip", "link", "set", peer, "netns", self.netns)
        _sh("ip", "link", "set", self.link, "master", self.cluster.bridge, "up")
        prefix = self.cluster.subnet.prefixlen
        for cmd in (
            ["ip", "link", "set", peer, "name", "eth0"],
            ["ip", "addr", "add", f"{self.address}/{prefix}", "dev", "eth0"],
            ["ip", "link", "set", "eth0", "up"],
            ["ip", "link", "set", "lo", "up"],
        ):
            _sh("ip", "netns", "exec", self.netns, *cmd)
        # After an outage of t seconds, TCP's doubling retransmission timer may wait up to
        # about t more before it tries again (up to 120 s by default); a ceiling of 2 s
        # keeps the outage tests short. Kernels before 6.15 lack the setting.
        _sh(
            "ip",
            "netns",
            "exec",
            self.netns,
            "sysctl",
            "-qw",
            "net.ipv4.tcp_rto_max_ms=2000",
            check=False,
        )

    def start_worker(
        self, db_url: str, broker_url: str, concurrency: int, *, skew_s: int = 0
    ) -> None:
        """Start ``python -m worker`` on this host, its wall clock ``skew_s`` seconds off."""
        folder = self.cluster.folder
        home = folder / self.name
        sched = self.cluster.scheduler_dir
        worker = [sys.executable, "-P", "-m", "worker", "--broker", broker_url, "--db", db_url]
        worker += ["--concurrency", str(concurrency), "--loglevel", "INFO"]
        # The tmpfs hides the whole cluster folder (the scheduler's files, the other hosts'
        # logs) from this host; its stdout is the log file opened outside, before the mount.
        script = f"""
            set -e
            hostname {self.name}
            mount -t tmpfs -o mode=0755 seqsweep-host {shlex.quote(str(folder))}
            mkdir {shlex.quote(str(home))}
            cd {shlex.quote(str(home))}
            export HOME="$PWD"
            if [ -e {shlex.quote(str(sched))} ]; then echo "SCHEDULER DIR VISIBLE"; exit 3; fi
            echo "host $(hostname): cwd $PWD holds $(ls -A | wc -l) entries; scheduler dir hidden"
            exec {shlex.join(worker)}
        """
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(REPO),
            "LANG": "C.UTF-8",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            **self.cluster.worker_env,
        }
        if skew_s:
            env.update(LD_PRELOAD=str(self.cluster.skew_library()), SEQSWEEP_SKEW_S=str(skew_s))
        self.worker = Proc(
            [*self.exec_prefix(), "unshare", "--uts", "--mount", "--fork", "sh", "-c", script],
            cwd=Path("/"),
            env=env,
            log=self.log,
        )

    def exec_prefix(self) -> list[str]:
        """Prefix a command with this to run it in the host's network namespace."""
        return ["ip", "netns", "exec", self.netns]

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def ready(self) -> bool:
        if self.worker is not None and not self.worker.alive():
            raise AssertionError(f"worker of {self.name} exited:\n{self.output()[-3000:]}")
        return " ready." in self.output()

    def pids(self) -> list[int]:
        found = _sh("ip", "netns", "pids", self.netns, check=False).stdout.split()
        return [int(p) for p in found]

    def destroy(self) -> None:
        """The machine is gone: kill -9 every process in its namespace, then delete it."""
        deadline = time.monotonic() + 20
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            time.sleep(0.1)
        if self.worker is not None:
            self.worker.kill9()  # the ip/unshare wrapper, outside the namespace
        _sh("ip", "netns", "del", self.netns, check=False)
        _sh("ip", "link", "del", self.link, check=False)

    def exists(self) -> bool:
        return self.netns in _sh("ip", "netns", "list").stdout.split()

    def cut(self) -> None:
        """Cut the host's link: nothing reaches it, nothing leaves it."""
        _sh("ip", "link", "set", self.link, "down")

    def heal(self) -> None:
        _sh("ip", "link", "set", self.link, "up")

    def block(self, address: str) -> None:
        """Drop every packet this host sends to ``address`` (a blackhole route)."""
        _sh("ip", "netns", "exec", self.netns, "ip", "route", "add", "blackhole", address)

    def unblock(self, address: str) -> None:
        _sh("ip", "netns", "exec", self.netns, "ip", "route", "del", "blackhole", address)


class Cluster:
    """A private bridge with the cluster's own PostgreSQL and Redis, and its hosts."""

    def __init__(self, worker_env: dict[str, str] | None = None) -> None:
        self.tag = uuid.uuid4().hex[:4]
        self.bridge = f"sq{self.tag}br"
        self.subnet = _free_subnet()
        self.pg_address = str(self.subnet.network_address + 1)
        self.redis_address = str(self.subnet.network_address + 2)
        # Outside pytest's tmp folders (mode 0700), so that the postgres user can reach its data.
        self.folder = Path(tempfile.mkdtemp(prefix="seqsweep-cluster-"))
        self.folder.chmod(0o755)
        (self.folder / "logs").mkdir()
        self.scheduler_dir = self.folder / "scheduler"
        self.scheduler_dir.mkdir()
        # Tools the hosts must see: outside the folder that their tmpfs hides.
        self.tools = Path(tempfile.mkdtemp(prefix="seqsweep-cluster-tools-"))
        self.tools.chmod(0o755)
        self.worker_env = dict(worker_env or {})
        self.hosts: list[Host] = []
        self._procs: list[Proc] = []
        self._bridge_made = False

    # -- life cycle ---------------------------------------------------------------

    def start(self) -> Cluster:
        prefix = self.subnet.prefixlen
        _sh("ip", "link", "add", self.bridge, "type", "bridge")
        self._bridge_made = True
        _sh("ip", "addr", "add", f"{self.pg_address}/{prefix}", "dev", self.bridge)
        _sh("ip", "addr", "add", f"{self.redis_address}/{prefix}", "dev", self.bridge)
        _sh("ip", "link", "set", self.bridge, "up")
        self._start_redis()
        self._start_postgres()
        return self

    def close(self) -> None:
        """Tear everything down; each step runs even if an earlier one failed."""
        for host in self.hosts:
            with contextlib.suppress(Exception):
                host.destroy()
        for proc in reversed(self._procs):
            with contextlib.suppress(Exception):
                # SIGINT: PostgreSQL's fast shutdown (SIGTERM would wait for every client).
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(15)
                proc.kill9()
        if self._bridge_made:
            _sh("ip", "link", "del", self.bridge, check=False)
        shutil.rmtree(self.folder, ignore_errors=True)
        shutil.rmtree(self.tools, ignore_errors=True)

    def skew_library(self) -> Path:
        """The wall-clock skew library, built on first use (needs a C compiler)."""
        built = self.tools / "wallclock_skew.so"
        if not built.exists():
            compiler = shutil.which("cc") or shutil.which("gcc")
            assert compiler, "a C compiler is needed for a skewed clock (apt-get install gcc)"
            subprocess.run(
                [compiler, "-shared", "-fPIC", "-O2", "-o", str(built), str(SKEW_SOURCE), "-ldl"],
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            )
        return built

    def _start_redis(self) -> None:
        args = ["redis-server", "--bind", self.redis_address, "--port", str(REDIS_PORT)]
        args += ["--save", "", "--appendonly", "no", "--protected-mode", "no"]
        args += ["--dir", str(self.folder), "--databases", "64"]
        self._procs.append(Proc(args, self.folder, dict(os.environ), self.folder / "redis.log"))
        wait_until(lambda: self.redis_client().ping(), 15, "the cluster's redis-server", every=0.2)

    def redis_client(self):  # type: ignore[no-untyped-def]
        import redis

        return redis.Redis(host=self.redis_address, port=REDIS_PORT, socket_connect_timeout=1)

    def _start_postgres(self) -> None:
        bin_dir = _pg_bin()
        assert bin_dir is not None
        data = self.folder / "pg"
        data.mkdir(mode=0o700)
        shutil.chown(data, "postgres", "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [*as_postgres, str(bin_dir / "initdb"), "-D", str(data), *INITDB_OPTIONS],
            cwd=data,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        with open(data / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {self.subnet} trust\n")
        settings = {
            "listen_addresses": self.pg_address,
            "port": str(PG_PORT),
            "unix_socket_directories": str(data),
            "max_connections": "300",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_preload_libraries": "pg_stat_statements",
        }
        args = [*as_postgres, str(bin_dir / "postgres"), "-D", str(data)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        self._procs.append(Proc(args, data, dict(os.environ), self.folder / "postgres.log"))
        wait_until(self._pg_ready, 30, "the cluster's PostgreSQL", every=0.3)

    def _pg_ready(self) -> bool:
        bin_dir = _pg_bin()
        assert bin_dir is not None
        ready = [str(bin_dir / "pg_isready"), "-q", "-h", self.pg_address, "-p", str(PG_PORT)]
        return subprocess.run(ready, timeout=10, check=False).returncode == 0

    # -- what tests use -----------------------------------------------------------

    def new_db(self, name: str) -> str:
        """Create database ``name`` on the cluster's PostgreSQL and return its URL."""
        import sqlalchemy

        admin = sqlalchemy.create_engine(self.db_url("postgres"), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return self.db_url(name)

    def db_url(self, name: str) -> str:
        return f"postgresql+psycopg://postgres@{self.pg_address}:{PG_PORT}/{name}"

    def broker_url(self, db: int) -> str:
        return f"redis://{self.redis_address}:{REDIS_PORT}/{db}"

    def add_host(self, name: str) -> Host:
        host = Host(self, name, len(self.hosts))
        self.hosts.append(host)
        host.build()
        return host

    def start_hosts(
        self,
        names: list[str],
        db_url: str,
        broker_url: str,
        concurrency: int,
        skews: dict[str, int] | None = None,
        timeout: float = 120,
    ) -> list[Host]:
        """Build and start one worker host per name; return once every node is ready."""
        hosts = [self.add_host(name) for name in names]
        for host in hosts:
            host.start_worker(
                db_url, broker_url, concurrency, skew_s=(skews or {}).get(host.name, 0)
            )
        for host in hosts:
            wait_until(host.ready, timeout, f"worker node of {host.name}", every=0.5)
        return hosts

    def stop_hosts(self) -> None:
        for host in self.hosts:
            host.destroy()
        self.hosts = []


@contextlib.contextmanager
def cluster(worker_env: dict[str, str] | None = None) -> Iterator[Cluster]:
    """A started :class:`Cluster`, torn down on exit whatever happened."""
    made = Cluster(worker_env)
    try:
        yield made.start()
    finally:
        made.close()
