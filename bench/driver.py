"""bench/run's measuring half: a Lambda Runtime API stub on 127.0.0.1, the process spawner,
the replayed emulator calls and the table. Run through bench/run, which builds the binaries and
starts and provisions bench/emulator.py first.

Cold start: for each run, a fresh process with AWS_LAMBDA_RUNTIME_API pointing at the stub;
init = spawn -> first GET /next; first invoke = spawn -> POST of the first response (the
function's real calls go to the emulator). Peak RSS is the process's VmHWM, read just before it is killed.
Warm: one process answers --warm grants in a row; handler time = the event's last byte written
-> the response's request line read (the stub's own Python, writing and parsing HTTP, is kept
out of the window as far as it can be). After each warm grant the stub reads the grant's own
requests back from the emulator's request log and sends them again, byte for byte, on a
freshly recreated table over one keep-alive connection with no SDK: the emulator's own time
for the same calls.
Overhead = median over grants of (handler time - that grant's replay time).
"grant (verified token)" is the same binary deciding with a verified rule: every event carries
a fresh RS256 ID token (signed here with a key made for the run, pinned in the generated policy
file, so no key fetch happens: fetches are amortised and counted apart), and the overhead then
includes parsing and verifying it; the calls to AWS stay the same three.
The grants table is recreated before every cold run, every grant and every replay (see Table):
moto's TransactWriteItems slows down as the table grows; the example roles' inline policies
are removed before each cold run and warm session.
"""

import argparse
import datetime as dt
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PREFIX = "/2018-06-01/runtime/"


# ---- tokens: a CI's OIDC issuer, for the verified variant ----------------------------------


class Issuer:
    """An RS256 key made for this run; its public half is pinned in the verified policy file."""

    URL = "https://token.actions.githubusercontent.com"

    def __init__(self):
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        n = self.key.public_key().public_numbers()
        self.jwk = {"kty": "RSA", "kid": "bench-1", "use": "sig", "alg": "RS256",
                    "n": b64(n.n.to_bytes((n.n.bit_length() + 7) // 8, "big")), "e": b64(n.e.to_bytes(3, "big"))}

    def sign(self, claims):
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        head = b64(json.dumps({"alg": "RS256", "kid": "bench-1", "typ": "JWT"}).encode())
        body = b64(json.dumps(claims, separators=(",", ":")).encode())
        sig = self.key.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{head}.{body}.{b64(sig)}"

    def policy(self, claimed_path, out_path):
        """The bench policy with its rule bound to this issuer's verified claims."""
        with open(claimed_path) as f:
            text = f.read()
        issuer = ("issuers:\n  - name: github\n    kind: github\n    url: " + self.URL + "\n"
                  "    audience: latch\n    algorithms: [RS256]\n    max_token_age: 10m\n"
                  "    keys: " + json.dumps({"keys": [self.jwk]}) + "\n\n")
        text = text.replace("permission_sets:", issuer + "permission_sets:", 1)
        text = text.replace("    identity: claimed\n", "    issuer: github\n    claims: {repository: example-org/app-*}\n")
        text = text.replace('    refs: ["refs/heads/main"]\n', "")
        with open(out_path, "w") as f:
            f.write(text)


def b64(raw):
    import base64

    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def digest(fields):
    """latch_core::model::digest: SHA-256 over length-prefixed fields, 32 hex digits."""
    import hashlib

    h = hashlib.sha256()
    for f in fields:
        b = f.encode()
        h.update(len(b).to_bytes(8, "big"))
        h.update(b)
    return h.hexdigest()[:32]


def now_ns():
    return time.monotonic_ns()


class Session:
    """What the stub serves to one process, and what it saw."""

    def __init__(self, events, before_event=None):
        self.events = list(events)  # event dicts, served in order
        self.before_event = before_event  # called (index) before serving event index >= 1
        self.lock = threading.Lock()
        self.served = {}  # request id -> (index, t_served)
        self.first_next = None
        self.responses = []  # (index, t_served, t_answered, ok)
        self.first_response = threading.Event()
        self.all_done = threading.Event()
        self.stopped = threading.Event()
        self.next_index = 0
        self.init_error = None
        self.stub_error = None  # what went wrong on the stub's side (the measurement, not the function)


SESSION = None


class Stub(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def parse_request(self):
        # Called as soon as the request line is read: the request's arrival. Parsing the headers
        # after it (http.client's email.parser) is the stub's own cost, not the function's.
        self.arrived = now_ns()
        return super().parse_request()

    def _reply(self, code, body=b"{}", headers=()):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        t = self.arrived
        s = SESSION
        if self.path != PREFIX + "invocation/next" or s is None:
            return self._reply(404)
        with s.lock:
            if s.first_next is None:
                s.first_next = t
            i = s.next_index
            s.next_index += 1
        if i >= len(s.events):
            s.all_done.set()
            s.stopped.wait(60)  # long poll until the process is killed
            self.close_connection = True
            return None
        if i >= 1 and s.before_event:
            try:
                s.before_event(i)
            except Exception as e:  # the server would swallow it; stop the run and say why
                s.stub_error = f"before event {i}: {type(e).__name__}: {e}"
                s.all_done.set()
                s.first_response.set()
                raise
        rid = str(uuid.uuid4())
        body = json.dumps(s.events[i]).encode()
        deadline = int(time.time() * 1000) + 900_000
        served = [i, None]  # filled in once the event is written, before the function can answer
        with s.lock:
            s.served[rid] = served
        self._reply(200, body, [
            ("Lambda-Runtime-Aws-Request-Id", rid),
            ("Lambda-Runtime-Deadline-Ms", str(deadline)),
            ("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:bench"),
            ("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000;Sampled=0"),
        ])
        served[1] = now_ns()  # the event is handed out when its last byte is written

    def do_POST(self):
        t = self.arrived
        s = SESSION
        n = int(self.headers.get("Content-Length") or 0)
        payload = self.rfile.read(n) if n else b""
        path = self.path[len(PREFIX):] if self.path.startswith(PREFIX) else ""
        if path == "init/error":
            s.init_error = payload.decode(errors="replace")
            s.first_response.set()
            return self._reply(202)
        parts = path.split("/")  # invocation/{id}/response|error
        if len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
            with s.lock:
                i, served = s.served.get(parts[1], (-1, t))
                served = t if served is None else served
                ok = parts[2] == "response"
                s.responses.append((i, served, t, ok, payload[:300]))
            s.first_response.set()
            return self._reply(202)
        self._reply(404)


# ---- events -------------------------------------------------------------------------------


def load(name):
    with open(os.path.join(ROOT, "events", name)) as f:
        return json.load(f)


def fresh_start(template, tag):
    e = json.loads(json.dumps(template))
    e["id"] = str(uuid.uuid4())
    e["time"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    e["detail"]["run_id"] = f"bench-{tag}-{uuid.uuid4().hex[:12]}"
    return e


def verified_start(issuer, template, tag):
    """A fresh start with the ID token GitHub would give its run (claims as the detail says)."""
    e = fresh_start(template, tag)
    d = e["detail"]
    secs = {"PT15M": 900}[d["duration"]]
    now = int(time.time())
    d["token"] = issuer.sign({
        "iss": Issuer.URL, "aud": "latch:" + digest(["start", e["account"], d["role_arn"], d["permission_set"], str(secs)]),
        "sub": "repo:example-org/app-release:ref:refs/heads/main", "jti": str(uuid.uuid4()),
        "iat": now, "nbf": now, "exp": now + 300,
        "repository": "example-org/app-release", "repository_id": "712345678", "repository_owner_id": "91234567",
        "run_id": d["run_id"], "run_attempt": str(d["attempt"]), "ref": d["ref"], "sha": d["commit"],
        "actor": d["actor"], "environment": d["environment"], "event_name": "push",
    })
    return e


# ---- replayed calls: the emulator's own time ---------------------------------------------


class Replay:
    """A grant's requests, read back from bench/emulator.py's request log and sent again as they
    were: one keep-alive connection, a static (unchecked) SigV4-shaped Authorization naming the
    service. Latch's grant is TransactWriteItems (recorded pending), PutRolePolicy,
    TransactWriteItems (confirmed active: active means attached), PutEvents; the Python baseline
    makes the three calls of a grant recorded active before IAM is asked."""

    TWI, PUT, EVENTS = "DynamoDB_20120810.TransactWriteItems", "iam:PutRolePolicy", "AWSEvents.PutEvents"
    GRANTS = ((TWI, PUT, TWI, EVENTS), (TWI, PUT, EVENTS))
    GRANT = {TWI, PUT, EVENTS}

    def __init__(self, endpoint):
        u = urllib.parse.urlparse(endpoint)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        self.samples = {}  # warm event index -> ms for its three requests, replayed
        self.moto = {}  # warm event index -> (moto's ms for the grant's requests, for the replay's)
        self.unmatched = 0  # grants whose log was not exactly a grant's requests (an SDK retry, a role read)

    def _call(self, method, path, body=None, headers=None):
        self.conn.request(method, path, body=body, headers=headers or {})
        r = self.conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(f"replay {method} {path} {headers}: {r.status} {data[:300]!r}")
        return data

    def drain(self):
        """The requests the emulator saw since the last drain."""
        return json.loads(self._call("GET", "/_bench/requests"))

    @staticmethod
    def kind(entry):
        if entry["service"] == "iam":
            return "iam:" + urllib.parse.parse_qs(entry["body"]).get("Action", ["?"])[0]
        return entry["target"]

    def measure(self, index, fresh_table):
        """Replays what event `index`'s grant sent (everything the emulator saw since the last
        drain) on a fresh table, then leaves a fresh table for the next grant."""
        sent = self.drain()
        fresh_table()
        if tuple(self.kind(e) for e in sent) not in self.GRANTS:
            self.unmatched += 1
            self.drain()  # the fresh table's own calls, so the next grant's log starts clean
            return
        auth = ("AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/{}/aws4_request, "
                "SignedHeaders=host;x-amz-date, Signature=0")
        calls = [(e["body"].encode(), {"Content-Type": e["content_type"], "X-Amz-Date": "20260101T000000Z",
                                       "Authorization": auth.format(e["service"]),
                                       **({"X-Amz-Target": e["target"]} if e["target"] else {})})
                 for e in sent]
        t = now_ns()
        for body, headers in calls:
            self._call("POST", "/", body, headers)
        self.samples[index] = (now_ns() - t) / 1e6
        fresh_table()
        replayed = [e for e in self.drain() if self.kind(e) in self.GRANT]
        self.moto[index] = (sum(e["ms"] for e in sent), sum(e["ms"] for e in replayed))


class Table:
    """Deletes and recreates the grants table (same schema, stream and TTL) before each
    measurement. moto deep-copies the whole table, stream records included, once per item of
    a TransactWriteItems, so its time grows with every write; a fresh table keeps every sample
    on the same footing (and a grant and its replay on the same one)."""

    def __init__(self, client, name):
        self.c, self.name = client, name
        t = client.describe_table(TableName=name)["Table"]
        self.spec = {
            "TableName": name,
            "AttributeDefinitions": t["AttributeDefinitions"],
            "KeySchema": t["KeySchema"],
            "BillingMode": "PAY_PER_REQUEST",
            "StreamSpecification": t["StreamSpecification"],
            "GlobalSecondaryIndexes": [
                {"IndexName": g["IndexName"], "KeySchema": g["KeySchema"], "Projection": g["Projection"]}
                for g in t.get("GlobalSecondaryIndexes", [])
            ],
        }
        self.ttl = client.describe_time_to_live(TableName=name)["TimeToLiveDescription"].get("AttributeName")

    def reset(self):
        self.c.delete_table(TableName=self.name)
        self.c.create_table(**self.spec)
        if self.ttl:
            self.c.update_time_to_live(TableName=self.name,
                                       TimeToLiveSpecification={"Enabled": True, "AttributeName": self.ttl})


# ---- spawning -----------------------------------------------------------------------------


def lambda_env(base, api, name, handler, extra):
    env = dict(base)
    env.update({
        "AWS_LAMBDA_RUNTIME_API": api,
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "_HANDLER": handler,
        "LAMBDA_TASK_ROOT": ROOT,
    })
    env.update(extra)
    return env


def run_process(cmd, env, session, log, wait_all):
    """Spawn, wait for the first response (or all events), kill; (t0, maxrss_kb)."""
    global SESSION
    SESSION = session
    t0 = now_ns()
    p = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    done = session.all_done if wait_all else session.first_response
    finished = done.wait(120)
    hwm = vm_hwm_kb(p.pid)  # before the kill: VmHWM of the exec'd image only
    p.kill()  # (a process that already exited is reaped here, or by the wait below)
    p.wait()
    session.stopped.set()
    if not finished:
        raise RuntimeError(f"{cmd[0]}: no {'completion' if wait_all else 'first response'} within 120 s")
    if session.stub_error:
        raise RuntimeError(f"bench: the measurement failed {session.stub_error}")
    if session.init_error:
        raise RuntimeError(f"{cmd[0]}: init error: {session.init_error}")
    return t0, hwm


def emf_lines(path, start):
    """(lines, bytes) of the EMF documents a process wrote to its log after `start`."""
    lines = size = 0
    with open(path, "rb") as f:
        f.seek(start)
        for line in f:
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and "_aws" in doc:
                lines += 1
                size += len(line)
    return lines, size


def vm_hwm_kb(pid):
    """Peak resident set of the process's current image. (wait4's ru_maxrss would not do: after
    fork + exec it keeps the forking Python's own peak.)"""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bins", required=True)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warm", type=int, default=200)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--policy", required=True)
    ap.add_argument("--logs", required=True)
    ap.add_argument("--python", default=sys.executable)
    a = ap.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    server.daemon_threads = True
    server.handle_error = lambda request, address: None  # processes are killed mid-poll
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = f"127.0.0.1:{server.server_address[1]}"

    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    base.update({"AWS_ENDPOINT_URL": a.endpoint, "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
                 "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                 "AWS_EC2_METADATA_DISABLED": "true", "LATCH_TABLE": "latch-grants", "LATCH_BUS": "latch",
                 "LATCH_POLICY_PATH": a.policy})
    start_t = load("pipeline-job-started.json")
    issuer = Issuer()
    verified_policy = os.path.join(a.logs, "policies-verified.yaml")
    issuer.policy(a.policy, verified_policy)
    stream = load("dynamodb-stream-ttl-remove.json")
    sched = load("scheduled-sweep.json")
    import boto3  # to reset the table, and to check that grants really activated

    kw = {"endpoint_url": a.endpoint, "region_name": "us-east-1",
          "aws_access_key_id": "test", "aws_secret_access_key": "test"}
    iam = boto3.client("iam", **kw)
    table = Table(boto3.client("dynamodb", **kw), "latch-grants")
    replay = Replay(a.endpoint)
    table.reset()

    def clean_roles():
        """Removes every inline policy from the example roles (outside any timing), so each
        sample starts from the same IAM state and the sweep finds no drift to repair."""
        for page in iam.get_paginator("list_roles").paginate(PathPrefix="/latch/"):
            for role in page["Roles"]:
                for pp in iam.get_paginator("list_role_policies").paginate(RoleName=role["RoleName"]):
                    for name in pp["PolicyNames"]:
                        iam.delete_role_policy(RoleName=role["RoleName"], PolicyName=name)

    def before_warm(i):
        replay.measure(i - 1, table.reset)

    def policies():
        names, marker = [], None
        while True:
            kw = {"RoleName": "app-deployer", **({"Marker": marker} if marker else {})}
            r = iam.list_role_policies(**kw)
            names += r["PolicyNames"]
            if not r.get("IsTruncated"):
                return len(names)
            marker = r["Marker"]

    py_cmd = [a.python, os.path.join(HERE, "python_baseline", "bootstrap.py")]
    fns = [
        ("grant", [os.path.join(a.bins, "grant")], lambda: fresh_start(start_t, "cold"), "bootstrap"),
        ("grant (verified token)", [os.path.join(a.bins, "grant")],
         lambda: verified_start(issuer, start_t, "cold"), "bootstrap"),
        ("revoke", [os.path.join(a.bins, "revoke")], lambda: stream, "bootstrap"),
        ("sweep", [os.path.join(a.bins, "sweep")], lambda: sched, "bootstrap"),
        ("python+boto3 grant (baseline)", py_cmd, lambda: fresh_start(start_t, "cold"), "handler.handler"),
    ]
    rows = {}
    for name, cmd, make, handler in fns:
        short = name.split()[0].replace("+", "_") + ("-verified" if "verified" in name else "")
        extra = {"LATCH_POLICY_PATH": verified_policy} if "verified" in name else {}
        env = lambda_env(base, api, f"latch-bench-{short}", handler, extra)
        inits, firsts, rss, errors = [], [], [], 0
        with open(os.path.join(a.logs, f"{short}.log"), "ab") as log:
            for _ in range(a.runs):
                table.reset()
                clean_roles()
                s = Session([make()])
                t0, kb = run_process(cmd, env, s, log, wait_all=False)
                _, _, answered, ok, payload = s.responses[0]
                errors += 0 if ok else 1
                if not ok:
                    print(f"bench: {name} answered with an error: {payload!r}", file=sys.stderr)
                inits.append((s.first_next - t0) / 1e6)
                firsts.append((answered - t0) / 1e6)
                rss.append(kb / 1024)
            row = {"init": inits, "first": firsts, "rss": rss, "errors": errors}
            if name.startswith("grant") or name.startswith("python"):
                # event 0 warms the process up (unmeasured); 1..warm are measured; the last one
                # only triggers the replay of the one before it.
                warm_events = [make() for _ in range(a.warm + 2)]
                table.reset()
                clean_roles()
                before = policies()
                replay.samples, replay.moto, replay.unmatched = {}, {}, 0
                replay.drain()
                s = Session(warm_events, before_event=before_warm)
                log.flush()
                log_start = os.path.getsize(log.name)
                _, kb = run_process(cmd, env, s, log, wait_all=True)
                row["emf"] = emf_lines(log.name, log_start)
                handler = {i: (t1 - t) / 1e6 for i, t, t1, ok, _ in s.responses if 1 <= i <= a.warm and ok}
                measured = sorted(i for i in handler if i in replay.samples)
                row["warm"] = [handler[i] for i in measured]
                row["raw"] = [replay.samples[i] for i in measured]
                row["paired"] = [handler[i] - replay.samples[i] for i in measured]
                row["moto_grant"] = [replay.moto[i][0] for i in measured]
                row["moto_replay"] = [replay.moto[i][1] for i in measured]
                row["beside_moto"] = [handler[i] - replay.moto[i][0] for i in measured]
                row["replay_beside_moto"] = [replay.samples[i] - replay.moto[i][1] for i in measured]
                row["steady"] = [b - r for b, r in zip(row["beside_moto"], row["replay_beside_moto"], strict=True)]
                row["unmatched"] = replay.unmatched
                row["warm_rss"] = kb / 1024
                row["warm_errors"] = sum(1 for r in s.responses if not r[3])
                row["activated"] = policies() - before
                row["expected"] = len(warm_events)  # a replay rewrites its grant's policy, adds none
            rows[name] = row
        print(f"bench: {name}: done", file=sys.stderr)
    server.shutdown()
    report(rows, a)


def report(rows, a):
    sizes = {}
    for f in ("grant", "revoke", "sweep"):
        sizes[f] = os.path.getsize(os.path.join(a.bins, f)) / 1e6
    py = rows["python+boto3 grant (baseline)"]
    py_init = statistics.median(py["init"])
    hdr = (f"{'function':<31} {'size MB':>8} {'init med':>9} {'init p90':>9} {'1st inv med':>11} "
           f"{'1st inv p90':>11} {'peak RSS MB':>11} {'warm med':>9} {'emu med':>8} {'overhead':>9}")
    print()
    print(f"Cold starts: {a.runs} fresh processes per function; warm: {a.warm} grants in one process,")
    print("each followed by its own three requests replayed raw to the emulator (emu). Times in ms.")
    print("overhead = median over grants of (handler time - its replay's time).")
    print()
    print(hdr)
    print("-" * len(hdr))
    for name, r in rows.items():
        size = f"{sizes[name.split()[0]]:.2f}" if name.split()[0] in sizes else "-"
        rss_cold = max(r["rss"])
        rss = f"{max(rss_cold, r.get('warm_rss', 0)):.1f}"
        if "warm" in r:
            w, e = statistics.median(r["warm"]), statistics.median(r["raw"])
            warm, emu, over = f"{w:.2f}", f"{e:.2f}", f"{statistics.median(r['paired']):+.2f}"
        else:
            warm = emu = over = "-"
        print(f"{name:<31} {size:>8} {statistics.median(r['init']):>9.2f} {pct(r['init'], .9):>9.2f} "
              f"{statistics.median(r['first']):>11.2f} {pct(r['first'], .9):>11.2f} {rss:>11} "
              f"{warm:>9} {emu:>8} {over:>9}")
    print()
    for name, r in rows.items():
        notes = []
        if r["errors"]:
            notes.append(f"{r['errors']} of {a.runs} first invokes answered with an error")
        if "warm" in r:
            notes.append(f"warm grants activated {r['activated']}/{r['expected']} "
                         f"(new inline policies on the role), {r['warm_errors']} errors, "
                         f"{r['unmatched']} not replayed (not exactly a grant's calls: the first grant also resolves the role); "
                         f"overhead p25 {pct(r['paired'], .25):+.2f}, p75 {pct(r['paired'], .75):+.2f} ms")
            if r["moto_grant"]:
                med = statistics.median
                notes.append(f"cross-check against moto's own clock (time inside its WSGI app): the grant's "
                             f"requests {med(r['moto_grant']):.2f} ms, the replay's {med(r['moto_replay']):.2f}; "
                             f"handler - its requests' moto time {med(r['beside_moto']):+.2f} ms (an upper bound "
                             f"on the overhead: it also counts the HTTP server, loopback and the runtime stub), "
                             f"replay - its moto time {med(r['replay_beside_moto']):+.2f} ms (the same for the raw client); "
                             f"per grant, the first less the second {med(r['steady']):+.2f} ms (the overhead with "
                             f"moto's own jitter taken out)")
        if notes:
            print(f"  {name}: " + ";\n    ".join(notes))
    g = rows["grant"]
    v = rows["grant (verified token)"]
    if "emf" in g:
        lines, size = g["emf"]
        n = g["expected"]
        print()
        print(f"Metrics (EMF log lines) per warm grant: {lines / n:.1f} lines, {size / n:.0f} bytes "
              f"(CloudWatch Logs ingests them at its per-GB price: {size / n * 1e6 / 2**30:.2f} GB per million grants); "
              f"their CPU share of the overhead: see metrics_cost below")
    print()
    print(f"Token verification per grant (verified minus claimed overhead, medians): "
          f"{statistics.median(v['paired']) - statistics.median(g['paired']):+.2f} ms; "
          f"calls to AWS per grant the same with and without a token (TransactWriteItems, PutRolePolicy, "
          f"TransactWriteItems, PutEvents; {v['unmatched']} verified grants were not exactly those, the first "
          f"resolving the role); issuer key fetches: 0 "
          f"(keys pinned; a fetching function pays one discovery + JWKS round per container and issuer)")
    ratio = max(statistics.median(rows[f]["init"]) for f in ("grant", "revoke", "sweep")) / py_init
    over = statistics.median(g["paired"])
    rss = max(max(rows[f]["rss"] + [rows[f].get("warm_rss", 0)]) for f in ("grant", "revoke", "sweep"))
    big = max(sizes.values())

    def verdict(ok):
        return "met" if ok else "NOT met"

    print()
    print("Targets (measured in this run):")
    print(f"  init median <= 0.2 x Python baseline   worst function {ratio:.3f} x   {verdict(ratio <= 0.2)}")
    print(f"  handler overhead <= 1 ms per grant     {over:+.2f} ms          {verdict(over <= 1.0)}")
    print(f"  stripped size <= 8 MB per function     largest {big:.2f} MB     {verdict(big <= 8.0)}")
    print(f"  peak RSS <= 30 MB                      largest {rss:.1f} MB     {verdict(rss <= 30.0)}")


if __name__ == "__main__":
    main()
