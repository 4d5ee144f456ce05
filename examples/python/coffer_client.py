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
import os
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

        For bytes, the digest is sent first with an empty body: content the
        organisation already has is answered without uploading it again
        (the server answers 422, storing nothing, when it is new). Returns
        the record: sha256, size, content_type, backend, deduplicated, ...
        """
        headers = {"Content-Type": content_type}
        if isinstance(data, (bytes, bytearray, memoryview)):
            digest = hashlib.sha256(data).digest()
            headers["Repr-Digest"] = "sha-256=:" + base64.b64encode(digest).decode() + ":"
            probe = self.session.put(self._objects(org), data=b"", headers=headers, timeout=self.timeout)
            if probe.status_code in (200, 201):
                return probe.json()
            if probe.status_code != 422:
                self._check(probe)
        r = self.session.put(self._objects(org), data=data, headers=headers, timeout=self.timeout)
        return self._check(r).json()

    def get(self, org, sha256, range=None):
        """The bytes (or bytes `range[0]..=range[1]`). The server verifies
        them as they stream and cuts the response off if they are wrong; a
        whole object is checked here again, so a response cut short can
        never pass for the file."""
        headers = {"Range": f"bytes={range[0]}-{range[1]}"} if range else {}
        r = self._check(self.session.get(self._objects(org, sha256), headers=headers, timeout=self.timeout))
        data = r.content
        expected = int(r.headers.get("Content-Length", len(data)))
        if len(data) != expected or (range is None and hashlib.sha256(data).hexdigest() != sha256):
            raise CofferError(r.status_code, "integrity", f"{sha256}: the response was cut short or is not the file")
        return data

    def download(self, org, sha256, path, chunk=1 << 20):
        """Stream the object into `path`: written beside it and renamed into
        place only once its digest is checked, so `path` never holds a
        partial or wrong file."""
        tmp = f"{path}.partial-{os.getpid()}"
        hasher = hashlib.sha256()
        try:
            with self.session.get(self._objects(org, sha256), stream=True, timeout=self.timeout) as r:
                self._check(r)
                with open(tmp, "wb") as f:
                    for piece in r.iter_content(chunk):
                        hasher.update(piece)
                        f.write(piece)
            if hasher.hexdigest() != sha256:
                raise CofferError(r.status_code, "integrity", f"{sha256}: the download is not the file")
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

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

    def get_many(self, org, digests, missing=None):
        """Yield (sha256, bytes) for the digests the organisation has, read
        in one streamed request, each checked against its digest; what
        could not be read is appended to `missing` (a list), with why."""
        url = f"{self.url}/v1/orgs/{requests.utils.quote(org, safe='')}/batch-read"
        with self.session.post(url, json={"sha256": list(digests)}, stream=True, timeout=self.timeout) as r:
            self._check(r)
            r.raw.decode_content = True
            with tarfile.open(fileobj=r.raw, mode="r|") as archive:
                for member in archive:
                    data = archive.extractfile(member).read()
                    if member.name == "manifest.json":
                        if missing is not None:
                            missing.extend(json.loads(data)["errors"])
                    elif hashlib.sha256(data).hexdigest() != member.name:
                        raise CofferError(r.status_code, "integrity", f"{member.name}: not the file")
                    else:
                        yield member.name, data
