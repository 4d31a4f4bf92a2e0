"""served.py: the driver side of the benchmarks that interleave tessera and PyTorch rounds.

Each side is a process that answers one JSON line per command on stdin ("run N", "profile",
"quit"); the driver alternates their rounds so that the machine's drift hits both alike.
"""
import json
import subprocess


class Served:
    """A process that answers one JSON line per command."""

    def __init__(self, cmd, env):
        self.p = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True)
        self.ready = self.read()

    def read(self):
        while True:
            line = self.p.stdout.readline()
            if not line:
                raise SystemExit(f"{self.p.args[0]} ended early")
            if line.startswith("{"):
                return json.loads(line)

    def ask(self, cmd, until="round"):
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        out = []
        while True:
            o = self.read()
            out.append(o)
            if o["kind"] in (until, "profile_total"):
                return out

    def close(self):
        self.p.stdin.write("quit\n")
        self.p.stdin.flush()
        self.p.wait()
