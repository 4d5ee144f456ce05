#!/usr/bin/env python3
"""`coffer serve` driven by the clients platforms use: curl and Python
`requests` (through examples/python/coffer_client.py).

Starts the server binary ($COFFER_BIN) with two organisations' tokens on
127.0.0.1, on S3 when AWS_ENDPOINT_URL and S3_BUCKET are set (the
integration test passes its S3 server) and on SQLite otherwise; puts,
gets (with Range), lists, links, deletes and batch-reads with both
clients; checks that no token reaches the log; stops it with SIGTERM.
Exits non-zero on the first failure. Run by `cargo test` (test
`http::python_and_curl_clients`), so by `.ci/run` too.
"""

import hashlib
import io
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "examples", "python"))
from coffer_client import CofferClient, CofferError  # noqa: E402


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}")


def curl(*args, data=None):
    """curl's body and HTTP status."""
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "30", "-w", "\n%{http_code}", *args],
        input=data, capture_output=True, check=True,
    ).stdout
    body, _, status = out.rpartition(b"\n")
    return body, int(status)


def main():
    binary = os.environ["COFFER_BIN"]
    on_s3 = bool(os.environ.get("AWS_ENDPOINT_URL"))
    work = tempfile.mkdtemp(prefix="coffer-clients-")
    tokens = {name: "coffer_" + secrets.token_urlsafe(32) for name in ("acme", "beta")}
    config = os.path.join(work, "coffer.toml")
    with open(config, "w") as f:
        for name, token in tokens.items():
            f.write(
                f'[[server.tokens]]\nname = "{name}-client"\norg = "{name}"\n'
                f'sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n'
                f'scopes = ["read", "write", "delete", "link"]\n'
            )
    env = dict(os.environ, COFFER_CONFIG=config, COFFER_DATABASE_URL=f"sqlite:{work}/coffer.db",
               COFFER_CACHE_DIR=f"{work}/cache", COFFER_LOG="debug", COFFER_LOG_FORMAT="json")
    server = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0"], env=env,
                              stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    log = []
    url = None
    deadline = time.time() + 60
    while url is None and time.time() < deadline:
        line = server.stderr.readline().decode(errors="replace")
        if not line:
            raise SystemExit(f"FAILED: the server exited: {''.join(log)}")
        log.append(line)
        m = re.search(r"listening on (http://\S+)", line)
        if m:
            url = m.group(1)
    check(url is not None, f"the server listens ({url})")
    reader = threading.Thread(target=lambda: log.extend(l.decode(errors="replace") for l in server.stderr))
    reader.start()
    try:
        run(url, tokens, on_s3, work)
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=60)
        reader.join(timeout=10)
    check(code == 0, f"SIGTERM stops the server cleanly (exit {code})")
    text = "".join(log)
    check(all(t not in text for t in tokens.values()), "no token appears in the log")
    access = [json.loads(l) for l in text.splitlines() if '"coffer::access"' in l]
    check(len(access) > 10 and all("status" in a and "route" in a for a in access),
          f"structured access log lines ({len(access)})")
    check(any(a.get("token") == "acme-client" for a in access), "the log names the token, not its secret")


def run(url, tokens, on_s3, work):
    acme = f"{url}/v1/orgs/acme/objects"
    auth = ["-H", f"Authorization: Bearer {tokens['acme']}"]
    scan = os.urandom(300_000)
    sha = hashlib.sha256(scan).hexdigest()

    # --- curl
    path = os.path.join(work, "scan.bin")
    with open(path, "wb") as f:
        f.write(scan)
    body, status = curl("-X", "PUT", "--data-binary", f"@{path}", "-H", "Content-Type: application/json", *auth, acme)
    check(status == 201 and json.loads(body)["sha256"] == sha, "curl PUT stores a file (201)")
    body, status = curl("-X", "PUT", "--data-binary", f"@{path}", *auth, acme)
    check(status == 200 and json.loads(body)["deduplicated"] is True, "curl PUT of the same file: deduplicated")
    body, status = curl(*auth, f"{acme}/{sha}")
    check(status == 200 and body == scan, "curl GET returns the bytes")
    # A digest it has, and a large body curl holds back (Expect: 100-continue): answered, never sent.
    body, status = curl("-X", "PUT", "--data-binary", f"@{path}", "-H", f"x-coffer-sha256: {sha}", *auth, acme)
    check(status == 200 and json.loads(body)["deduplicated"] is True, "curl PUT with the digest: answered at once")
    body, status = curl("-r", "1000-1999", *auth, f"{acme}/{sha}")
    check(status == 206 and body == scan[1000:2000], "curl GET with a Range")
    body, status = curl(*auth, f"{acme}?limit=10")
    check(status == 200 and [o["sha256"] for o in json.loads(body)["objects"]] == [sha], "curl lists")
    body, status = curl(f"{acme}/{sha}")
    check(status == 401 and json.loads(body)["error"] == "unauthorized", "curl without a token: 401")
    body, status = curl("-H", f"Authorization: Bearer {tokens['beta']}", f"{acme}/{sha}")
    check(status == 404, "curl with another organisation's token: 404")
    body, status = curl("-X", "POST", "-H", "Content-Type: application/json", "--data", '{"sha256": ["%s"]}' % sha,
                        *auth, f"{url}/v1/orgs/acme/batch-read")
    with tarfile.open(fileobj=io.BytesIO(body)) as archive:
        names = archive.getnames()
        got = archive.extractfile(sha).read()
    check(status == 200 and names == ["manifest.json", sha] and got == scan, "curl batch read: a tar")
    if on_s3:
        body, status = curl("-X", "POST", *auth, "-H", "Content-Type: application/json",
                            "--data", '{"expires_in": 120, "filename": "scan.json"}', f"{acme}/{sha}/link")
        link = json.loads(body)["url"]
        direct, dstatus = curl(link)
        check(status == 200 and dstatus == 200 and direct == scan, "curl link: the presigned URL serves the file")
        _, status = curl("-o", "/dev/null", *auth, f"{acme}/{sha}?redirect=true")
        check(status == 307, "curl ?redirect=true: 307")
        direct, status = curl("-L", *auth, f"{acme}/{sha}?redirect=true")
        check(status == 200 and direct == scan, "curl -L follows the redirect to S3")
    body, status = curl("-X", "DELETE", *auth, f"{acme}/{sha}")
    check(status == 200, "curl DELETE")
    body, status = curl(*auth, f"{acme}/{sha}")
    check(status == 404 and json.loads(body)["error"] == "not-found", "after DELETE: 404 not-found")

    # --- requests, through the example client
    client = CofferClient(url, token=tokens["acme"])
    files = {os.urandom(8).hex(): os.urandom(n) for n in (0, 1, 5000, 6 << 20)}
    infos = {}
    for name, data in files.items():
        infos[name] = client.put("acme", data, "application/octet-stream")
    check(all(infos[n]["sha256"] == hashlib.sha256(d).hexdigest() for n, d in files.items()), "requests PUT")
    big_name = list(files)[-1]
    again = client.put("acme", files[big_name])
    check(again["deduplicated"] is True, "requests PUT of 6 MiB already stored: deduplicated by its digest")
    with open(os.path.join(work, "big.bin"), "wb") as f:
        f.write(os.urandom(5 << 20))
    with open(os.path.join(work, "big.bin"), "rb") as f:
        streamed = client.put("acme", f, "application/x-big")
    check(streamed["size"] == 5 << 20 and streamed["content_type"] == "application/x-big", "requests PUT from a file, streamed")
    for name, data in files.items():
        check(client.get("acme", infos[name]["sha256"]) == data, f"requests GET {len(data)} bytes")
    big = files[big_name]
    got = client.get("acme", infos[big_name]["sha256"], range=(4_000_000, 4_000_099))
    check(got == big[4_000_000:4_000_100], "requests GET with a Range")
    client.download("acme", infos[big_name]["sha256"], os.path.join(work, "out.bin"))
    with open(os.path.join(work, "out.bin"), "rb") as f:
        check(f.read() == big, "requests streamed download")
    listed = [o["sha256"] for o in client.list("acme", page=2)]
    check(sorted(listed) == listed and len(listed) == len(files) + 1, f"requests list, paged by 2 ({len(listed)})")
    wanted = [i["sha256"] for i in infos.values()] + ["0" * 64]
    missing = []
    got = dict(client.get_many("acme", wanted, missing))
    check(all(got[infos[n]["sha256"]] == d for n, d in files.items()), "requests batch read of every file")
    check([m["sha256"] for m in missing] == ["0" * 64], "the batch says what it could not read")
    if on_s3:
        link = client.link("acme", infos[big_name]["sha256"], expires_in=60, filename="big.bin")
        direct = requests.get(link, timeout=60)
        check(direct.status_code == 200 and direct.content == big, "requests: a presigned link serves the file")
    try:
        client.put("acme", b"x", "not a content type")
        check(False, "a bad content type is refused")
    except CofferError as e:
        check(e.status == 400 and e.kind == "invalid-input", f"a bad content type: {e}")
    for name in files:
        client.delete("acme", infos[name]["sha256"])
    try:
        client.stat("acme", infos[big_name]["sha256"])
        check(False, "deleted means gone")
    except CofferError as e:
        check(e.status == 404 and e.kind == "not-found", "requests: a deleted object is 404 not-found")
    other = CofferClient(url, token=tokens["beta"])
    check(list(other.list("beta")) == [], "another organisation sees none of it")
    health = requests.get(f"{url}/readyz", timeout=10).json()
    check(health["ready"] is True, f"readyz: {health}")
    doc = requests.get(f"{url}/openapi.json", timeout=10).json()
    check(doc["openapi"].startswith("3.1"), "the OpenAPI document")


if __name__ == "__main__":
    main()
