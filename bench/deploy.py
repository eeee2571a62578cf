#!/usr/bin/env python3
"""bench/deploy: SPEC P5. The time from a deploy request (the API call) to the runner starting
deploy/run.sh, for a policy that needs no approval, over N jobs (default 25): real server, real
`draven runner`, real git, both release builds, on this machine.

The repository's deploy/run.sh prints the nanosecond clock as its first line; the request time
is taken just before the API call, on the same clock.

Usage: bench/deploy [JOBS]   (bench/deploy builds the release binary first)
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "draven")
TOKEN = "bench-deploy-admin-token-01"
RUN_SH = """#!/usr/bin/env bash
echo "bench-start $(date +%s%N)"
echo "task $1 for $ENV at $REF"
"""


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def call(base, method, path, body=None, token=TOKEN):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + token)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as r:
        text = r.read()
        return json.loads(text) if text else None


def git(repo, *args):
    env = dict(os.environ, GIT_CONFIG_GLOBAL="/dev/null", GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@x",
               GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@x")
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


def main():
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else 25
    tmp = tempfile.mkdtemp(prefix="draven-bench-deploy-")
    repo = os.path.join(tmp, "app")
    os.makedirs(os.path.join(repo, "deploy"))
    with open(os.path.join(repo, "deploy", "run.sh"), "w") as f:
        f.write(RUN_SH)
    git(repo, "init", "--quiet", "-b", "main")
    git(repo, "add", ".")
    git(repo, "commit", "--quiet", "-m", "bench")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRAVEN_")}
    env.update({"DRAVEN_LOG": "warn", "DRAVEN_BOOTSTRAP_TOKEN": TOKEN})
    server = subprocess.Popen([BIN, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", os.path.join(tmp, "data")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    runner = None
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(base + "/readyz", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        call(base, "POST", "/api/v1/environments", {"name": "demo"})
        call(base, "POST", "/api/v1/projects", {"key": "app", "provider": "local", "repo": repo})
        call(base, "PUT", "/api/v1/projects/app/environments/demo", {})
        call(base, "POST", "/api/v1/users", {"username": "agent"})
        call(base, "POST", "/api/v1/grants", {"user": "agent", "role": "deployer"})
        runner_token = call(base, "POST", "/api/v1/users/agent/tokens", {"name": "r", "scopes": ["runner"]})["token"]
        runner = subprocess.Popen([BIN, "runner", "--server", base, "--token", runner_token, "--name", "bench",
                                   "--work-dir", os.path.join(tmp, "runner")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        latencies = []
        for i in range(jobs + 1):
            t0 = time.time_ns()
            job = call(base, "POST", "/api/v1/projects/app/deploys", {"environment": "demo", "ref": "main"})
            for _ in range(3000):
                state = call(base, "GET", f"/api/v1/deploys/{job['id']}")["state"]
                if state in ("SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED", "REJECTED"):
                    break
                time.sleep(0.01)
            assert state == "SUCCEEDED", state
            log = call(base, "GET", f"/api/v1/deploys/{job['id']}/logs")
            first = next(c["text"] for c in log["chunks"] if c["text"].startswith("bench-start"))
            started = int(first.split()[1])
            if i > 0:  # the first job includes the first fetch of the repository
                latencies.append((started - t0) / 1e6)
        med = statistics.median(latencies)
        p90 = statistics.quantiles(latencies, n=10)[8]
        print(f"request -> deploy/run.sh started: median {med:.1f} ms, p90 {p90:.1f} ms, "
              f"min {min(latencies):.1f} ms, max {max(latencies):.1f} ms over {len(latencies)} jobs")
        print(f"target <= 50 ms (SPEC P5): ratio {med / 50:.2f}")
        print("release build, SQLite, local runner on the same machine, policy without approval; the first job "
              "(first fetch of the repository) is not counted")
    finally:
        if runner:
            runner.terminate()
            runner.wait(timeout=10)
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
