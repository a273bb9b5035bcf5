"""Process and port helpers shared by the Python test drivers (tests/stripe_sdk/run.py,
tests/dashboard/run.py): standard library only, every child stopped by its own pid."""

import socket
import subprocess
import urllib.request
from pathlib import Path

STOP_WAIT_S = 10  # after SIGTERM, before SIGKILL
TAIL_LINES = 40

# Loopback traffic never goes through an HTTP proxy from the environment.
NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class SetupError(Exception):
    """Something other than a test failed; the message says what and what to do."""


def free_ports(n: int):
    """n distinct free TCP ports on 127.0.0.1 (each bound to port 0 at the same time)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Process:
    """A child process with its stdout and stderr in files under the log dir; `log` prints the
    driver's progress lines (start, stop)."""

    def __init__(self, name: str, argv, logs: Path, env: dict, cwd: Path, log=print):
        self.name = name
        self.log = log
        self.stdout_path = logs / f"{name}.stdout.log"
        self.stderr_path = logs / f"{name}.stderr.log"
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        try:
            self.popen = subprocess.Popen(
                [str(a) for a in argv],
                stdin=subprocess.DEVNULL,
                stdout=self._out,
                stderr=self._err,
                env=env,
                cwd=str(cwd),
                start_new_session=True,  # a Ctrl-C reaches only the driver, which stops it
            )
        except OSError as e:
            self._out.close()
            self._err.close()
            raise SetupError(f"cannot start {name} ({argv[0]}): {e}") from None
        log(f"started {name} (pid {self.popen.pid})")

    def exited(self):
        return self.popen.poll()

    def tail(self, which: str = "stderr", lines: int = TAIL_LINES) -> str:
        path = self.stderr_path if which == "stderr" else self.stdout_path
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def died_message(self) -> str:
        tail = self.tail() or "(empty)"
        return f"{self.name} exited with code {self.popen.returncode}; last lines of its stderr:\n{tail}"

    def stop(self) -> None:
        """SIGTERM, wait, then SIGKILL: only this process, by its pid."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                self.log(f"{self.name} (pid {self.popen.pid}) ignored SIGTERM for {STOP_WAIT_S} s: killing it")
                self.popen.kill()
                self.popen.wait(STOP_WAIT_S)
            self.log(f"stopped {self.name} (pid {self.popen.pid})")
        self._out.close()
        self._err.close()
