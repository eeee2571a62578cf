#!/usr/bin/env python3
"""bench/registry: SPEC P4, measured side by side in one run.

1. Validate and bundle 200 artifacts (70 DMN decisions, 70 forms, 60 BPMN processes each
   calling a decision and a form): the time of the one release request that validates all 200
   payloads, resolves their dependencies, builds the deterministic tar and publishes them; and,
   as the floor, `tar -cf` over the same 200 payload files.
2. Artifact reads over HTTP with keep-alive: wrk against GET /api/v1/artifacts/{key}, and, as a
   reference, wrk against GET /healthz on the same server (no auth, no database).

Usage: bench/registry [SECONDS]   (bench/registry builds the release binary first)
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "draven")
TOKEN = "bench-admin-token-0123456789"


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def call(base, method, path, body=None, ctype="application/json"):
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + TOKEN)
    if data is not None:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def dmn(i):
    return f'''<?xml version="1.0" encoding="UTF-8"?>
<definitions xmlns="https://www.omg.org/spec/DMN/20191111/MODEL/" id="Defs_{i}" name="D{i}" namespace="http://example.com/d{i}">
  <decision id="decision{i}" name="Decision {i}">
    <decisionTable id="T{i}" hitPolicy="FIRST">
      <input id="I{i}" label="amount"><inputExpression id="E{i}" typeRef="number"><text>amount</text></inputExpression></input>
      <output id="O{i}" name="level" typeRef="string" />
      <rule id="R{i}a"><inputEntry id="R{i}ai"><text>&gt; {i * 100}</text></inputEntry><outputEntry id="R{i}ao"><text>"high"</text></outputEntry></rule>
      <rule id="R{i}b"><inputEntry id="R{i}bi"><text>-</text></inputEntry><outputEntry id="R{i}bo"><text>"low"</text></outputEntry></rule>
    </decisionTable>
  </decision>
</definitions>
'''.encode()


def form(i):
    return json.dumps({"id": f"form{i}", "type": "default", "schemaVersion": 16, "components": [
        {"type": "textfield", "key": f"name{i}", "label": "Name"},
        {"type": "number", "key": "amount", "label": "Amount"}]}).encode()


def bpmn(i, d, f):
    return f'''<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="Defs_p{i}" targetNamespace="http://bpmn.io/schema/bpmn">
  <bpmn:process id="process{i}" isExecutable="true">
    <bpmn:startEvent id="S{i}"><bpmn:outgoing>F{i}a</bpmn:outgoing></bpmn:startEvent>
    <bpmn:businessRuleTask id="B{i}"><bpmn:extensionElements><zeebe:calledDecision decisionId="decision{d}" resultVariable="r" /></bpmn:extensionElements><bpmn:incoming>F{i}a</bpmn:incoming><bpmn:outgoing>F{i}b</bpmn:outgoing></bpmn:businessRuleTask>
    <bpmn:userTask id="U{i}"><bpmn:extensionElements><zeebe:formDefinition formId="form{f}" /></bpmn:extensionElements><bpmn:incoming>F{i}b</bpmn:incoming><bpmn:outgoing>F{i}c</bpmn:outgoing></bpmn:userTask>
    <bpmn:endEvent id="E{i}"><bpmn:incoming>F{i}c</bpmn:incoming></bpmn:endEvent>
    <bpmn:sequenceFlow id="F{i}a" sourceRef="S{i}" targetRef="B{i}" />
    <bpmn:sequenceFlow id="F{i}b" sourceRef="B{i}" targetRef="U{i}" />
    <bpmn:sequenceFlow id="F{i}c" sourceRef="U{i}" targetRef="E{i}" />
  </bpmn:process>
</bpmn:definitions>
'''.encode()


def wrk(url, seconds, auth):
    cmd = ["wrk", "-t2", "-c64", f"-d{seconds}s", "--latency"]
    if auth:
        cmd += ["-H", "Authorization: Bearer " + TOKEN]
    out = subprocess.run(cmd + [url], capture_output=True, text=True).stdout
    rps = next((float(l.split()[1]) for l in out.splitlines() if l.startswith("Requests/sec:")), 0.0)
    p99 = next((l.split()[1] for l in out.splitlines() if l.strip().startswith("99%")), "?")
    non2xx = next((l.strip() for l in out.splitlines() if "Non-2xx" in l), "")
    return rps, p99, non2xx


def main():
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install wrk")
    data = tempfile.mkdtemp(prefix="draven-bench-registry-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRAVEN_")}
    env.update({"DRAVEN_LOG": "warn", "DRAVEN_BOOTSTRAP_TOKEN": TOKEN})
    proc = subprocess.Popen([BIN, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(base + "/readyz", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        payloads = {}
        for i in range(70):
            payloads[(f"dmn-{i}", "dmn")] = dmn(i)
            payloads[(f"form-{i}", "form")] = form(i)
        for i in range(60):
            payloads[(f"bpmn-{i}", "bpmn")] = bpmn(i, i % 70, (i * 7) % 70)
        for (key, kind), body in payloads.items():
            s, b = call(base, "POST", "/api/v1/artifacts", {"key": key, "kind": kind})
            assert s == 201, b
            ctype = "application/xml" if kind in ("bpmn", "dmn") else "application/json"
            s, b = call(base, "POST", f"/api/v1/artifacts/{key}/versions", body, ctype)
            assert s == 201, b
            assert json.loads(b)["errors"] == 0, b
        items = [{"artifact": key, "version": 1} for (key, _) in payloads]
        t0 = time.perf_counter()
        s, b = call(base, "POST", "/api/v1/bundles", {"items": items})
        bundle_s = time.perf_counter() - t0
        assert s == 201, b
        manifest_items = len(json.loads(b)["manifest"]["items"])

        files = os.path.join(data, "payload-files")
        os.makedirs(files)
        for (key, kind), body in payloads.items():
            with open(os.path.join(files, f"{key}.{kind}"), "wb") as f:
                f.write(body)
        t0 = time.perf_counter()
        subprocess.run(["tar", "-cf", os.path.join(data, "floor.tar"), "-C", files, "."], check=True)
        tar_s = time.perf_counter() - t0

        rps, p99, bad = wrk(base + "/api/v1/artifacts/bpmn-7", seconds, True)
        hrps, hp99, hbad = wrk(base + "/healthz", seconds, False)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(data, ignore_errors=True)

    print(f"release of 200 artifacts ({manifest_items} in the manifest): {bundle_s * 1000:8.1f} ms "
          f"(target <= 500 ms: ratio {bundle_s / 0.5:.2f})")
    print(f"tar -cf over the same 200 files (floor):    {tar_s * 1000:8.1f} ms  (release / tar = {bundle_s / tar_s:.1f}x)")
    print(f"GET /api/v1/artifacts/{{key}}: {rps:10.0f} req/s  p99 {p99}  (target >= 20000: ratio {rps / 20000:.2f}) {bad}")
    print(f"GET /healthz (same server):  {hrps:10.0f} req/s  p99 {hp99}  (artifact / healthz = {rps / hrps:.2f}) {hbad}")
    print(f"wrk -t2 -c64 -d{seconds}s, keep-alive, release build, SQLite, local objects; wrk shares the 2 cores")


if __name__ == "__main__":
    main()
