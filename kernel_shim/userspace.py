"""The userspace backend: a broker (``start_broker``) and the client device that talks to it.

The broker listens on a SOCK_SEQPACKET Unix socket (``$MLOS_SHIM_SOCKET``, else
``<$MLOS_DATA_DIR or ~/.mlos>/run/shim.sock``: the socket 0600 in a directory 0700 of its owner,
so that no other user can reach it or plant one there) and runs in daemon threads of whichever
process starts it. ``UserspaceDevice`` connects to a running broker or starts one in-process; with
``own=True`` (what a server asks) it never uses a broker it did not start itself. Every connection
checks the broker's uid (SO_PEERCRED): a socket another uid listens on is refused. The protocol and
the semantics are in ``broker.py``.

Scheduling priority is applied by the client to the calling thread, as the module does:
REALTIME -> SCHED_FIFO 1; HIGH -> SCHED_OTHER nice -5 (as mlos_prio.c); NORMAL -> SCHED_OTHER nice 0;
BATCH -> SCHED_BATCH nice 10. The bound mirrors the module parameter ``max_priority_class``
(default NORMAL) for unprivileged callers; root may go up to HIGH (REALTIME is refused in
userspace: a SCHED_FIFO Python thread can starve a small machine). ``$MLOS_SHIM_MAX_PRIORITY``
overrides the unprivileged bound. Resetting after BATCH needs CAP_SYS_NICE or a RLIMIT_NICE
that allows nice 0 again; without it ``reset_priority`` raises EPERM.
"""
from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
import struct
import threading

from . import abi
from .broker import BrokerState, Conn, OpError, block_signals, recv_frame
from .errors import shim_error

DEFAULT_POOL_LIMIT = 256 << 20
DEFAULT_MAX_QUEUE = 1024
_PRIO_SCHED = {abi.PRIO_REALTIME: ("SCHED_FIFO", 0), abi.PRIO_HIGH: ("SCHED_OTHER", -5),
               abi.PRIO_NORMAL: ("SCHED_OTHER", 0), abi.PRIO_BATCH: ("SCHED_BATCH", 10)}


def socket_path() -> str:
    if os.environ.get("MLOS_SHIM_SOCKET"):
        return os.environ["MLOS_SHIM_SOCKET"]
    data = os.environ.get("MLOS_DATA_DIR") or "~/.mlos"
    return os.path.join(os.path.expanduser(data), "run", "shim.sock")


def private_dir(path: str) -> None:
    """Make ``path`` a directory only this uid can enter, or refuse: a socket in a directory
    someone else controls could be replaced by theirs."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise shim_error(errno.ENOTDIR, "start_broker", f"{path} is not a directory")
    if st.st_uid != os.getuid():
        raise shim_error(errno.EACCES, "start_broker", f"{path} belongs to uid {st.st_uid}, not to this uid "
                         f"({os.getuid()}); set MLOS_SHIM_SOCKET to a path in a directory of your own")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)


def peer_uid(sock: socket.socket) -> int:
    _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                          struct.calcsize("3i")))
    return uid


def unprivileged_max_priority() -> int:
    return int(os.environ.get("MLOS_SHIM_MAX_PRIORITY", abi.PRIO_NORMAL))


class Broker:
    """The server: an accept thread, a thread per connection, a thread per blocking op."""

    def __init__(self, path: str, pool_limit: int, max_queue: int, max_priority: int):
        self.path = path
        self.state = BrokerState(pool_limit, max_queue, max_priority)
        self.conns: set[Conn] = set()
        self._listener: socket.socket | None = None
        self.closed = False

    def start(self) -> "Broker":
        private_dir(os.path.dirname(os.path.abspath(self.path)))
        with open(self.path + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if _alive(self.path):
                raise shim_error(errno.EADDRINUSE, "start_broker", f"a broker already listens on {self.path}")
            tmp = f"{self.path}.{os.getpid()}.{threading.get_native_id()}"
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
            try:
                sock.bind(tmp)
                os.chmod(tmp, 0o600)
                sock.listen(64)
                os.replace(tmp, self.path)       # replaces a stale socket file atomically
            except BaseException:
                sock.close()
                raise
        self._listener = sock
        threading.Thread(target=self._accept, name="mlos-broker", daemon=True).start()
        return self

    def _accept(self) -> None:
        block_signals()
        while not self.closed:
            try:
                s, _ = self._listener.accept()
            except OSError:
                break
            conn = Conn(s)
            self.conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), name="mlos-broker-conn", daemon=True).start()

    def _serve(self, conn: Conn) -> None:
        block_signals()
        st = self.state
        try:
            while True:
                try:
                    msg, fds = recv_frame(conn.sock)
                except (OSError, ValueError):
                    break
                for fd in fds:
                    os.close(fd)
                if msg is None:
                    break
                op, seq = msg.get("op"), msg.get("seq")
                if op == "abort":
                    with st.cv:
                        if msg.get("target") in conn.pending:
                            conn.aborted.add(msg["target"])
                            st.cv.notify_all()
                elif op in ("take", "wait"):
                    conn.pending.add(seq)
                    threading.Thread(target=self._blocking, args=(conn, seq, op, msg), daemon=True).start()
                else:
                    fn = getattr(st, f"op_{op}", None)
                    try:
                        if fn is None:
                            raise OpError(errno.EINVAL, f"unknown op {op!r}")
                        with st.cv:
                            out, fds = fn(conn, msg)
                        conn.reply({"seq": seq, **out}, fds)
                    except OpError as e:
                        conn.reply({"seq": seq, "errno": e.code, "error": e.text})
                    except (KeyError, TypeError, ValueError) as e:
                        conn.reply({"seq": seq, "errno": errno.EINVAL, "error": f"bad {op} frame: {e}"})
                    except OSError as e:
                        conn.reply({"seq": seq, "errno": e.errno or errno.EIO, "error": str(e)})
        finally:
            st.drop_conn(conn)
            self.conns.discard(conn)
            conn.sock.close()

    def _blocking(self, conn: Conn, seq: int, op: str, msg: dict) -> None:
        block_signals()
        try:
            out = self.state.blocking(conn, seq, op, msg)
            conn.reply({"seq": seq, **out})
        except OpError as e:
            conn.reply({"seq": seq, "errno": e.code, "error": e.text})
        except (KeyError, TypeError, ValueError) as e:
            conn.reply({"seq": seq, "errno": errno.EINVAL, "error": f"bad {op} frame: {e}"})

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            if os.stat(self.path).st_ino == os.fstat(self._listener.fileno()).st_ino:
                os.unlink(self.path)
        except OSError:
            pass
        for s in [self._listener] + [c.sock for c in list(self.conns)]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._listener.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _alive(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


_started: dict[str, Broker] = {}
_started_lock = threading.Lock()


def start_broker(path: str | None = None, *, pool_limit: int | None = None,
                 max_queue: int | None = None, max_priority: int | None = None) -> Broker:
    """Start a broker in daemon threads of this process (EADDRINUSE if one already listens)."""
    path = path or socket_path()
    pool_limit = pool_limit or int(os.environ.get("MLOS_SHIM_POOL_LIMIT", DEFAULT_POOL_LIMIT))
    max_queue = max_queue or int(os.environ.get("MLOS_SHIM_MAX_QUEUE", DEFAULT_MAX_QUEUE))
    b = Broker(path, pool_limit, max_queue,
               unprivileged_max_priority() if max_priority is None else max_priority).start()
    with _started_lock:
        _started[path] = b
    return b


def started_here(path: str) -> bool:
    """Whether this process runs the (still open) broker at ``path``."""
    with _started_lock:
        b = _started.get(path)
    return b is not None and not b.closed


from .client import UserspaceDevice  # noqa: E402,F401  (the client half of this backend)
