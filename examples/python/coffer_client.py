"""A small client for `coffer serve`, with `requests`.

Drop-in for the raw-file calls of a platform like OpenKAT's Bytes: files
go up as raw streamed bodies (no base64 inside JSON), come back verified,
and many come back in one request.

    client = CofferClient("http://127.0.0.1:8080", token="coffer_…")
    info = client.put("acme", b"raw scan output", "text/plain")
    assert client.get("acme", info["sha256"]) == b"raw scan output"
    for sha256, data in client.get_many("acme", [info["sha256"]]):
        ...

Errors raise CofferError with the server's `error` kind ("not-found",
"too-large", "unavailable", ...) and message.
"""

import base64
import hashlib
import json
import tarfile

import requests


class CofferError(Exception):
    def __init__(self, status, kind, message):
        super().__init__(f"{status} {kind}: {message}")
        self.status, self.kind, self.message = status, kind, message


class CofferClient:
    def __init__(self, url, token=None, timeout=60):
        self.url = url.rstrip("/")
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout

    def _objects(self, org, *rest):
        return "/".join([self.url, "v1", "orgs", requests.utils.quote(org, safe=""), "objects", *rest])

    def _check(self, r):
        if r.status_code >= 400:
            try:
                body = r.json()
                raise CofferError(r.status_code, body.get("error"), body.get("message"))
            except ValueError:
                raise CofferError(r.status_code, "http", r.text[:200]) from None
        return r

    def put(self, org, data, content_type="application/octet-stream"):
        """Store `data` (bytes, or a file opened in binary mode, streamed).

        Bytes are hashed first and the digest sent along: content the
        organisation already has is answered without uploading it again.
        Returns the record: sha256, size, content_type, backend, ...
        """
        headers = {"Content-Type": content_type}
        if isinstance(data, (bytes, bytearray, memoryview)):
            digest = hashlib.sha256(data).digest()
            headers["Repr-Digest"] = "sha-256=:" + base64.b64encode(digest).decode() + ":"
        r = self.session.put(self._objects(org), data=data, headers=headers, timeout=self.timeout)
        return self._check(r).json()

    def get(self, org, sha256, range=None):
        """The bytes (or bytes `range[0]..=range[1]`), verified by the server."""
        headers = {"Range": f"bytes={range[0]}-{range[1]}"} if range else {}
        r = self._check(self.session.get(self._objects(org, sha256), headers=headers, timeout=self.timeout))
        return r.content

    def download(self, org, sha256, path, chunk=1 << 20):
        """Stream the object to a file; a corrupt object raises, never completes."""
        with self.session.get(self._objects(org, sha256), stream=True, timeout=self.timeout) as r:
            self._check(r)
            with open(path, "wb") as f:
                for piece in r.iter_content(chunk):
                    f.write(piece)

    def stat(self, org, sha256):
        return self._check(self.session.get(self._objects(org, sha256, "meta"), timeout=self.timeout)).json()

    def list(self, org, page=1000):
        """Every record of the organisation, in digest order."""
        after = ""
        while True:
            params = {"limit": page, "after": after}
            body = self._check(self.session.get(self._objects(org), params=params, timeout=self.timeout)).json()
            yield from body["objects"]
            after = body.get("next")
            if not after:
                return

    def link(self, org, sha256, expires_in=3600, filename=None):
        """A presigned S3 link (objects on S3 only)."""
        body = {"expires_in": expires_in}
        if filename:
            body["filename"] = filename
        r = self.session.post(self._objects(org, sha256, "link"), json=body, timeout=self.timeout)
        return self._check(r).json()["url"]

    def delete(self, org, sha256):
        return self._check(self.session.delete(self._objects(org, sha256), timeout=self.timeout)).json()

    def get_many(self, org, digests):
        """Yield (sha256, bytes) for the digests the organisation has, read
        in one streamed request; `self.missing` holds the rest, with why."""
        url = f"{self.url}/v1/orgs/{requests.utils.quote(org, safe='')}/batch-read"
        with self.session.post(url, json={"sha256": list(digests)}, stream=True, timeout=self.timeout) as r:
            self._check(r)
            r.raw.decode_content = True
            with tarfile.open(fileobj=r.raw, mode="r|") as archive:
                for member in archive:
                    data = archive.extractfile(member).read()
                    if member.name == "manifest.json":
                        self.missing = json.loads(data)["errors"]
                    else:
                        yield member.name, data
