#!/usr/bin/env python3
"""bench/startup: `draven serve` from exec to /readyz = 200 on a fresh SQLite data dir, and idle
RSS after start, over several runs. Prints medians and their ratio to the SPEC P3 targets
(<= 100 ms to ready, <= 30 MB idle RSS).

Usage: bench/startup [RUNS]   (builds the release binary first)
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "draven")


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def one_run():
    data = tempfile.mkdtemp(prefix="draven-bench-")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRAVEN_")}
    env["DRAVEN_LOG"] = "warn"
    url = f"http://127.0.0.1:{port}/readyz"
    start = time.perf_counter()
    proc = subprocess.Popen([BIN, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    ready = None
    while time.perf_counter() - start < 10:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    ready = time.perf_counter() - start
                    break
        except OSError:
            time.sleep(0.0005)
    time.sleep(1.0)  # idle: let start-up allocations settle
    rss = rss_kb(proc.pid)
    proc.terminate()
    proc.wait(timeout=10)
    subprocess.run(["rm", "-rf", data])
    if ready is None:
        raise SystemExit("draven never became ready")
    return ready * 1000, rss / 1024


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    ready, rss = [], []
    for i in range(runs):
        r, m = one_run()
        ready.append(r)
        rss.append(m)
        print(f"run {i + 1:2}: ready {r:7.1f} ms   idle RSS {m:6.1f} MB", flush=True)
    mr, mm = statistics.median(ready), statistics.median(rss)
    print()
    print(f"median exec->ready: {mr:.1f} ms  (target <= 100 ms: ratio {mr / 100:.2f})")
    print(f"median idle RSS:    {mm:.1f} MB  (target <= 30 MB:  ratio {mm / 30:.2f})")
    print(f"runs: {runs}, fresh SQLite data dir each run, release build")


if __name__ == "__main__":
    main()
