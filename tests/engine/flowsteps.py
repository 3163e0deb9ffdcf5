"""Step functions used by the engine's tests (copied next to each test's workflow file)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def mark(folder: str, name: str) -> None:
    """Leave a trace that a task body ran (one file per run of it)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    Path(folder, f"{name}.{os.getpid()}.{time.time_ns()}").touch()


def count(folder: str, name: str) -> int:
    return len(list(Path(folder).glob(f"{name}.*"))) if Path(folder).exists() else 0


def numbers(n: int, marks: str = "") -> list[int]:
    if marks:
        mark(marks, "numbers")
    return list(range(1, n + 1))


def square(x: int, delay: float = 0.0, marks: str = "", fail_on: list | None = None) -> dict:
    started = time.time()
    if marks:
        mark(marks, f"square-{x}")
    time.sleep(delay)
    if fail_on and x in fail_on:
        raise ValueError(f"cannot square {x}")
    return {"x": x, "y": x * x, "pid": os.getpid(), "started": started, "ended": time.time()}


def total(values: list, marks: str = "") -> dict:
    if marks:
        mark(marks, "total")
    return {"sum": sum(v["y"] for v in values), "xs": [v["x"] for v in values]}


def big_array(mb: int) -> dict:
    return {"array": np.full(mb * 2**20 // 8, 1.5, dtype=np.float64), "note": "made once"}


def read_array(data: dict, index: int) -> dict:
    array = data["array"]
    return {"memmap": isinstance(array, np.memmap), "writeable": bool(array.flags.writeable),
            "file": str(getattr(array, "filename", "")), "sum": float(array.sum()), "index": index}


def hang_with_child(pid_file: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)"])
    Path(pid_file).write_text(str(child.pid))
    time.sleep(1000)


def flaky(marker: str, succeed_on: int = 2) -> int:
    path = Path(marker)
    attempt = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(attempt))
    if attempt < succeed_on:
        raise RuntimeError(f"transient failure on attempt {attempt}")
    return attempt


def fail_unless(flag: str, x: int = 0) -> int:
    if not Path(flag).exists():
        raise RuntimeError(f"{flag} is missing")
    return x


def slow(seconds: float, x: int = 0) -> int:
    time.sleep(seconds)
    return x


def where() -> dict:
    import threading

    return {"pid": os.getpid(), "thread": threading.current_thread().name}


def talk(text: str) -> str:
    print(f"out: {text}", flush=True)
    print(f"err: {text}", file=sys.stderr, flush=True)
    subprocess.run(["echo", f"child: {text}"], check=True)
    return text


def bad_output():
    return object()


def http_service(name: str) -> None:
    """A tiny real HTTP service: answers its name and pid."""
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from fanflow import runtime

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"name": name, "pid": os.getpid()}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", runtime.service_port()), Handler)
    server.daemon_threads = True
    runtime.announce({"url": f"http://127.0.0.1:{server.server_address[1]}", "name": name})
    server.serve_forever()


def ask(endpoints: list) -> list:
    import json
    import urllib.request

    return [json.loads(urllib.request.urlopen(e["url"], timeout=5).read()) for e in endpoints]


def kill_and_ask_again(endpoints: list) -> dict:
    """Kill the first service, then wait until it answers again at the same address."""
    import json
    import signal as signals
    import urllib.request

    first = json.loads(urllib.request.urlopen(endpoints[0]["url"], timeout=5).read())
    os.kill(first["pid"], signals.SIGKILL)
    killed = time.time()
    while True:
        try:
            again = json.loads(urllib.request.urlopen(endpoints[0]["url"], timeout=1).read())
            if again["pid"] != first["pid"]:
                return {"old": first["pid"], "new": again["pid"], "back_after_s": time.time() - killed}
        except OSError:
            pass
        if time.time() - killed > 30:
            raise RuntimeError("the service did not come back")
        time.sleep(0.05)


def crash_on_start() -> None:
    raise RuntimeError("cannot bind")


def tiny(x: int, crash_on: int = -1, fail_on: int = -1, crash_marker: str = "") -> int:
    """A no-op sized task; can kill its own worker process once (crash_marker) or fail."""
    if x == crash_on and crash_marker and not Path(crash_marker).exists():
        Path(crash_marker).touch()
        os._exit(3)
    if x == fail_on:
        raise ValueError(f"tiny {x} failed")
    return x


def scratch_note(x: int) -> dict:
    """Write a file in the task's scratch folder, wait so that sibling tasks overlap, return it."""
    from fanflow import runtime

    folder = runtime.scratch_dir()
    time.sleep(0.05)
    path = Path(folder, "note.txt")
    path.write_text(f"{runtime.task_name()} {x}")
    return {"file": path, "task": runtime.task_name(), "cpus": runtime.cpus()}


def interrupted():
    raise KeyboardInterrupt("the step gave up")
