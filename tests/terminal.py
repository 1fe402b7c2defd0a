"""A command run on a real terminal (a pty), for tests of what goalloop prints there: colours, widths."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def on_terminal(code: str, *args: str, cwd: Path, env: dict[str, str], width: int = 120) -> bytes:
    """What `python -c CODE ARGS` writes to a terminal `width` columns wide."""
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, width, 0, 0))
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdin=follower, stdout=follower, stderr=follower,
                            cwd=cwd, env=env)
    os.close(follower)
    seen = b""
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process is done
            break
        if not data:
            break
        seen += data
    os.close(leader)
    proc.wait(timeout=60)
    return seen
