#!/usr/bin/env python3
"""bench/functions: SPEC P1-P3 for functions, measured side by side in one run.

1. P1 gateway overhead: wrk (keep-alive, POST, empty payload) against
   a. the example function `hello` called directly (its own process on PORT),
   b. the same function through Draven's sync gateway (POST /api/v1/functions/hello/invoke,
      token auth, rate/queue/schema admission, the warm pool, one warm instance),
   c. nginx `proxy_pass` (upstream keep-alive) to the direct process.
   Throughput, p50/p99, and the ratios.
2. P2 async: wrk against POST .../invoke-async of a no-op function (accept rate), then the
   end-to-end drain rate: invocations accepted and completed / time from the first accept
   until the queue is empty.
3. P3 cold start: a fresh warm-pool instance of `hello` per invocation (the definition is
   re-put, which retires the pool); Draven's own spawn→answer measure (`cold_start_ms`) and
   the sync call's latency as the client sees it; plus the process-per-invocation mode.

Usage: bench/functions [SECONDS]   (bench/functions builds the release binaries first)
"""
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(ROOT, "target", "release")
BIN = os.path.join(REL, "draven")
HELLO = os.path.join(REL, "hello")
TOKEN = "bench-admin-token-0123456789"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def call(base, method, path, body=None, ctype="application/json", headers=None):
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + TOKEN)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    if data is not None:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def wait_http(url):
    for _ in range(400):
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.025)
    raise SystemExit(f"{url} did not come up")


def wrk(url, seconds, auth, lua, conns=64):
    cmd = ["wrk", "-t2", f"-c{conns}", f"-d{seconds}s", "--latency"] + (["-s", lua] if lua else [])
    if auth:
        cmd += ["-H", "Authorization: Bearer " + TOKEN]
    out = subprocess.run(cmd + [url], capture_output=True, text=True).stdout
    rps = next((float(l.split()[1]) for l in out.splitlines() if l.startswith("Requests/sec:")), 0.0)

    def pct(p):
        v = next((l.split()[1] for l in out.splitlines() if l.strip().startswith(p)), "0us")
        for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
            if v.endswith(unit):
                return float(v[: -len(unit)]) * f
        return float("nan")

    non2xx = next((int(l.split()[-1]) for l in out.splitlines() if "Non-2xx" in l), 0)
    total = next((int(l.split()[0]) for l in out.splitlines() if "requests in" in l), 0)
    return {"rps": rps, "p50": pct("50%"), "p99": pct("99%"), "non2xx": non2xx, "total": total}


def metric(base, name, labels):
    _, body, _ = call(base, "GET", "/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def main():
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool) and not os.path.exists("/usr/sbin/" + tool):
            raise SystemExit(f"{tool} is missing (bench/functions installs it with apt-get)")
    work = tempfile.mkdtemp(prefix="draven-bench-functions-")
    lua = os.path.join(work, "post.lua")
    with open(lua, "w") as f:
        f.write('wrk.method = "POST"\nwrk.body = ""\nwrk.headers["Content-Type"] = "application/json"\n')
    procs = []
    try:
        # a. the function alone
        direct_port = free_port()
        env = dict(os.environ, PORT=str(direct_port), DRAVEN_FUNCTION="hello")
        procs.append(subprocess.Popen([HELLO], env=env, stderr=subprocess.DEVNULL))
        wait_http(f"http://127.0.0.1:{direct_port}/healthz")

        # c. nginx in front of it
        nginx_port = free_port()
        conf = os.path.join(work, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""worker_processes 2;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
daemon off;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  upstream fn {{ server 127.0.0.1:{direct_port}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{nginx_port};
    location / {{ proxy_pass http://fn; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
  client_body_temp_path {work}/nginx-body; proxy_temp_path {work}/nginx-proxy;
}}
""")
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        procs.append(subprocess.Popen([nginx, "-c", conf, "-p", work], stderr=subprocess.DEVNULL))
        wait_http(f"http://127.0.0.1:{nginx_port}/healthz")

        # b. Draven
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        denv = {k: v for k, v in os.environ.items() if not k.startswith("DRAVEN_")}
        denv.update({"DRAVEN_LOG": "warn", "DRAVEN_BOOTSTRAP_TOKEN": TOKEN,
                     "DRAVEN_INVOCATION_RETENTION": "200000"})
        draven = subprocess.Popen([BIN, "serve", "--listen", f"127.0.0.1:{port}",
                                   "--data-dir", os.path.join(work, "data")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=denv)
        procs.append(draven)
        wait_http(base + "/readyz")
        pool = {"instance_concurrency": 64}
        s, b, _ = call(base, "PUT", "/api/v1/functions/hello", {
            "runtime": {"kind": "process", "command": HELLO, "pool": pool},
            "max_concurrency": 64, "queue_capacity": 10000})
        assert s in (200, 201), b
        s, b, _ = call(base, "POST", "/api/v1/functions/hello/invoke", b"")
        assert s == 200, b

        # P1 — the three, one after the other, same load generator and settings.
        direct = wrk(f"http://127.0.0.1:{direct_port}/invoke", seconds, False, lua)
        gateway = wrk(base + "/api/v1/functions/hello/invoke", seconds, True, lua)
        proxied = wrk(f"http://127.0.0.1:{nginx_port}/invoke", seconds, False, lua)
        # The ceiling of Draven's HTTP stack: a GET answered without proxying or auth.
        healthz = wrk(base + "/healthz", seconds, False, None)

        # P2 — async accept, then drain.
        for name in ("accept", "drain"):
            s, b, _ = call(base, "PUT", f"/api/v1/functions/{name}", {
                "runtime": {"kind": "process", "command": HELLO, "pool": pool},
                "max_concurrency": 64, "queue_capacity": 1000000})
            assert s in (200, 201), b
            call(base, "POST", f"/api/v1/functions/{name}/invoke", b"")
        accept_s = min(seconds, 5)
        accept = wrk(base + "/api/v1/functions/accept/invoke-async", accept_s, True, lua)
        # Let the accept run's queue empty before the drain run.
        while json.loads(call(base, "GET", "/api/v1/functions/accept")[1])["live"]["queued"] > 0:
            time.sleep(0.1)
        t0 = time.perf_counter()
        submit = wrk(base + "/api/v1/functions/drain/invoke-async", 2, True, lua)
        while True:
            live = json.loads(call(base, "GET", "/api/v1/functions/drain")[1])["live"]
            if live["queued"] == 0 and live["running"] == 0 and live["retrying"] == 0:
                break
            time.sleep(0.005)
        drain_s = time.perf_counter() - t0
        done = metric(base, "draven_function_invocations_total", {"function": "drain", "outcome": "succeeded"})
        accepted_drain = submit["total"] - submit["non2xx"]

        # P3 — cold starts: a new pool per invocation (re-putting the definition retires it).
        colds, cold_calls = [], []
        for i in range(15):
            s, b, _ = call(base, "PUT", "/api/v1/functions/cold", {
                "runtime": {"kind": "process", "command": HELLO}, "description": f"run {i}"})
            assert s in (200, 201), b
            t = time.perf_counter()
            s, b, h = call(base, "POST", "/api/v1/functions/cold/invoke", b"")
            cold_calls.append((time.perf_counter() - t) * 1000)
            assert s == 200, b
            inv = json.loads(call(base, "GET", f"/api/v1/invocations/{h['x-invocation-id']}")[1])
            colds.append(inv["cold_start_ms"])
        s, b, _ = call(base, "PUT", "/api/v1/functions/per-call", {
            "runtime": {"kind": "process", "command": "/bin/cat", "mode": "process"}})
        per_call = []
        for _ in range(15):
            t = time.perf_counter()
            s, b, _ = call(base, "POST", "/api/v1/functions/per-call/invoke", b"{}")
            per_call.append((time.perf_counter() - t) * 1000)
        rss_kb = int(open(f"/proc/{draven.pid}/status").read().split("VmRSS:")[1].split()[0])
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)

    def row(name, r):
        return f"  {name:<34} {r['rps']:>9.0f} req/s   p50 {r['p50']:6.2f} ms   p99 {r['p99']:6.2f} ms   non-2xx {r['non2xx']}"

    print(f"P1 sync invoke of the warm example function (wrk -t2 -c64 -d{seconds}s, keep-alive, POST, empty payload)")
    print(row("direct (the function's own port)", direct))
    print(row("Draven gateway", gateway))
    print(row("nginx proxy_pass (keep-alive)", proxied))
    print(row("Draven GET /healthz (stack ceiling)", healthz))
    print(f"  gateway / direct throughput  {gateway['rps'] / direct['rps']:.2f}   (target >= 0.80)")
    print(f"  gateway / nginx throughput   {gateway['rps'] / proxied['rps']:.2f}   (target >= 1.00)")
    print(f"  added p99 (gateway - direct) {gateway['p99'] - direct['p99']:.2f} ms   (target <= 1 ms)")
    print(f"  added p99 (nginx - direct)   {proxied['p99'] - direct['p99']:.2f} ms   (reference)")
    print(f"  gateway / Draven's own /healthz  {gateway['rps'] / healthz['rps']:.2f}   (what the invocation costs on top of Draven's HTTP stack)")
    print(f"P2 async (no-op function, max_concurrency 64, one warm instance)")
    print(f"  accept: {accept['rps']:.0f} req/s (202) over {accept_s}s, p99 {accept['p99']:.2f} ms, non-2xx {accept['non2xx']}   (target >= 50000: ratio {accept['rps'] / 50000:.2f})")
    print(f"  drain: {accepted_drain} accepted in 2 s, {done:.0f} completed, first accept -> queue empty {drain_s:.2f} s = {done / drain_s:.0f}/s   (target >= 20000: ratio {done / drain_s / 20000:.2f})")
    print(f"P3 cold start of the example function (local executor, warm-pool instance, socket hand-off), 15 runs")
    print(f"  spawn -> first answer (Draven's cold_start_ms): median {statistics.median(colds):.2f} ms, max {max(colds):.2f} ms   (target <= 10 ms: ratio {statistics.median(colds) / 10:.2f})")
    print(f"  sync call including the cold start (client side): median {statistics.median(cold_calls):.2f} ms")
    print(f"  process-per-invocation mode (/bin/cat), sync call: median {statistics.median(per_call):.2f} ms")
    print(f"Draven RSS after the run: {rss_kb / 1024:.1f} MB. Release build, SQLite; wrk, Draven, nginx and the function share the 2 cores.")


if __name__ == "__main__":
    main()
