"""A warm interpreter that runs stage scripts, each in a forked child: ``python
helpers/stage_server.py`` reads one JSON request per line on stdin (the script, its arguments, the
working directory, the files for the child's stdout and stderr, a timeout) and answers with the
child's exit status on stdout.

The child is a new process as ``python stages/<stage>.py`` would be (its own working directory,
``sys.argv``, file descriptors 1 and 2 and exit status; an uncaught exception prints its traceback
and exits 1, ``sys.exit(n)`` exits n), started from an interpreter that has already imported torch:
what costs a new interpreter most is paid once per server, not once per stage run. The server
runs nothing of torch before forking (no thread pools to inherit)."""
from __future__ import annotations

import json
import os
import runpy
import signal
import sys
import time
import traceback

import torch  # noqa: F401  (imported for the children)


def child(req: dict) -> int:
    os.chdir(req["cwd"])
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # not the server's requests
    for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    sys.argv = [req["script"], *req["args"]]
    try:
        runpy.run_path(req["script"], run_name="__main__")
        code = 0
    except SystemExit as e:  # as the interpreter exits: None is 0, an int itself, anything else printed and 1
        code = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
        if not isinstance(e.code, (int, type(None))):
            print(e.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def wait(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -signal.SIGKILL
        time.sleep(0.005)


def main() -> None:
    for line in sys.stdin:
        req = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = child(req)
            finally:
                os._exit(code)
        print(json.dumps({"returncode": wait(pid, req["timeout"])}), flush=True)


if __name__ == "__main__":
    main()
