"""The vla_controller binary in a child process, as `ros2 run` or `ros2 launch` would
start it: the one way tests, benchmarks and the demo start the node under test."""

from __future__ import annotations

import signal
import subprocess
import tempfile
import time
from pathlib import Path

#: The repository this package was installed from (editable install).
ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "target" / "release" / "vla_controller"
PARAMS = ROOT / "config" / "controller.yaml"
DEMO_POLICY = ROOT / "policy" / "demo_policy.pt"
#: The same task as a flow-matching policy (contract version 2, `kind: flow`).
FLOW_DEMO_POLICY = ROOT / "policy" / "flow_demo_policy.pt"


def node_command(*ros_args: str, params_file: Path | None = PARAMS, policy: Path | None = DEMO_POLICY,
                 executable: Path = BIN) -> list[str]:
    """The node's command line: the parameters file, then the policy (absolute, so the
    working directory does not matter), then `ros_args` (later `-p` win)."""
    args = [str(executable), "--ros-args"]
    if params_file is not None:
        args += ["--params-file", str(params_file)]
    if policy is not None:
        args += ["-p", f"policy_path:={policy}"]
    return args + list(ros_args)


def wait_for(cond, timeout: float, what: str, every: float = 0.02):
    """Polls `cond` until it returns a truthy value, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class NodeProcess:
    """A node process started from `command`, its output in a log file (a temporary
    one unless `log` names one)."""

    def __init__(self, command: list[str], log: Path | None = None, cwd: Path = ROOT, env: dict | None = None):
        assert Path(command[0]).exists() or not command[0].startswith("/"), f"{command[0]} is missing: run `make build`"
        if log is None:
            f = tempfile.NamedTemporaryFile(prefix="vla_controller-", suffix=".log", delete=False)
            log = Path(f.name)
            f.close()
        self.log_path = Path(log)
        self.args = command
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(command, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    @classmethod
    def node(cls, *ros_args: str, params_file: Path | None = PARAMS, log: Path | None = None, **kw) -> "NodeProcess":
        """The vla_controller node with the demo policy, `params_file` and `ros_args`."""
        return cls(node_command(*ros_args, params_file=params_file), log=log, **kw)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait_exit(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGINT, as Ctrl-C or `ros2 launch` on shutdown; SIGKILL if it does not exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode
