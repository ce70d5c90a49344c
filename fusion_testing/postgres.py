"""A throwaway PostgreSQL server for a test session: Debian's PostgreSQL (infra/test-tools.sh installs it),
a fresh cluster in a temporary folder, on loopback only, removed at the end.

    with running_postgres(18432) as url:   # postgresql+psycopg://fusion@127.0.0.1:18432/fusion
        ...

The cluster trusts loopback connections and its superuser is `fusion`. PostgreSQL refuses to run as
root, so as root every server command runs as Debian's `postgres` user, which owns the folder.
"""

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["DEFAULT_PORT", "postgres_bin", "running_postgres"]

DEFAULT_PORT = 18432
INSTALL_HINT = "run infra/test-tools.sh (as root) to install Debian's postgresql"
SERVER_USER = "postgres"
"""Debian's PostgreSQL system user, which runs the server when the tests run as root."""
OWNER_FILE = "owner.pid"
"""The pid of the process that made the cluster: a cluster whose owner is gone is stale."""


def postgres_bin() -> Path:
    """The newest installed PostgreSQL's bin folder (/usr/lib/postgresql/<version>/bin)."""
    found = [path.parent for path in Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")]
    versions = [path for path in found if path.parent.name.isdigit()]
    if not versions:
        raise RuntimeError(
            f"PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl): {INSTALL_HINT}"
        )
    return max(versions, key=lambda path: int(path.parent.name))


def _as_server_user() -> list[str]:
    """The prefix that runs a command as the server's user: `runuser` to `postgres` when we are root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise RuntimeError(f"running as root but there is no `{SERVER_USER}` user: {INSTALL_HINT}") from None
    return ["runuser", "-u", SERVER_USER, "--"]


def _run(command: list[str], cwd: Path) -> None:
    """Runs a PostgreSQL command as the server's user; its output goes into the error when it fails."""
    result = subprocess.run(
        [*_as_server_user(), *command], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}".rstrip()
        )


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _prefix(port: int) -> str:
    return f"fusion-postgres-{port}-"


def _remove_stale(port: int, bin_dir: Path) -> list[str]:
    """Stops and removes the clusters on `port` left by test runs that were killed (their owner is gone),
    so a new run gets the port; a cluster whose owner still runs is left alone, and described."""
    live: list[str] = []
    for folder in Path(tempfile.gettempdir()).glob(f"{_prefix(port)}*"):
        try:
            owner = int((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            owner = 0
        if owner and owner != os.getpid() and _alive(owner):
            live.append(f"{folder} (made by process {owner}, still running)")
            continue
        if (folder / "data" / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                _run(
                    [str(bin_dir / "pg_ctl"), "-D", str(folder / "data"), "-m", "immediate", "-w", "stop"],
                    folder,
                )
        shutil.rmtree(folder, ignore_errors=True)
    return live


def _configure(data: Path, port: int, socket_dir: Path) -> None:
    """Loopback only, the socket in the cluster's own folder, and no fsync: a test cluster is thrown away."""
    settings = {
        "listen_addresses": "'127.0.0.1'",
        "port": str(port),
        "unix_socket_directories": f"'{socket_dir}'",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "100",
    }
    with (data / "postgresql.conf").open("a") as conf:
        conf.write("\n# fusion_testing.postgres\n")
        conf.writelines(f"{name} = {value}\n" for name, value in settings.items())


@contextlib.contextmanager
def running_postgres(port: int = DEFAULT_PORT) -> Iterator[str]:
    """A fresh cluster on 127.0.0.1:`port` with the database `fusion`, from when it accepts connections to
    the end of the block; yields its SQLAlchemy URL. Then the server is stopped and its folder removed."""
    bin_dir = postgres_bin()
    prefix = _as_server_user()  # fails early as root without the postgres user
    live = _remove_stale(port, bin_dir)
    if _port_open(port):
        holder = f"by the test cluster in {', '.join(live)}" if live else "by another program"
        raise RuntimeError(f"port {port} on 127.0.0.1 is taken {holder}: stop it or pick another port")
    folder = Path(tempfile.mkdtemp(prefix=_prefix(port)))
    (folder / OWNER_FILE).write_text(str(os.getpid()))
    if prefix:
        entry = pwd.getpwnam(SERVER_USER)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    data = folder / "data"
    pg_ctl = str(bin_dir / "pg_ctl")
    started = False
    try:
        initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", "fusion", "--auth=trust"]
        _run([*initdb, "-E", "UTF8", "--locale=C", "--no-sync"], folder)
        _configure(data, port, folder)
        started = True
        log = folder / "server.log"
        try:
            _run([pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "60", "start"], folder)
        except RuntimeError as error:
            tail = log.read_text(errors="replace")[-4000:] if log.exists() else "(no log)"
            raise RuntimeError(f"{error}\nserver log:\n{tail}") from None
        _run(
            [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "fusion", "fusion"], folder
        )
        yield f"postgresql+psycopg://fusion@127.0.0.1:{port}/fusion"
    finally:
        if started:
            try:
                _run([pg_ctl, "-D", str(data), "-m", "fast", "-w", "-t", "30", "stop"], folder)
            except (RuntimeError, subprocess.TimeoutExpired):
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    _run([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], folder)
        shutil.rmtree(folder, ignore_errors=True)
