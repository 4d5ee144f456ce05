"""Coffer's tiering policy, in Python (built with componentize-py).

A second policy, deliberately different from the built-in one:

- Tiering: objects smaller than `tier-threshold` bytes (default 1 MiB) stay
  in the database even when S3 is configured; larger ones go to S3.
- Key layout: on S3, keys fan out by the digest's first two hex digits
  (`ORG/ab/abcdef...`), in the one bucket `s3-bucket` (or, per
  organisation, `s3-bucket-prefix` + the organisation, which must then be
  a valid bucket name: this policy never maps names).
- Retention: with `retention-days` N, an object cannot be deleted until it
  is N days old (write-once storage for evidence).
- Size and type rules: `max-size` and `allowed-content-types` as in the
  built-in policy.

It sees digests, sizes and content types; the bytes stay in the host.
"""

import re

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, store, types

DAY = 24 * 3600
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def _setting_int(name, default):
    value = host.setting(name)
    if value is None or value.strip() == "":
        return default
    try:
        number = int(value.strip())
    except ValueError:
        raise Err(types.Error_InvalidConfig(f"{name} must be a whole number, not {value!r}"))
    if number < 0:
        raise Err(types.Error_InvalidConfig(f"{name} must not be negative"))
    return number


def _valid_bucket(name):
    return (
        BUCKET.match(name) is not None
        and ".." not in name
        and not re.match(r"^\d+\.\d+\.\d+\.\d+$", name)
        and not name.startswith(("xn--", "sthree-", "amzn-s3-demo-"))
        and not name.endswith(("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"))
    )


def _bucket(org):
    """The S3 bucket for `org`, or None when S3 is not in use."""
    if types.Backend.S3 not in store.backends():
        return None
    per_org = (host.setting("bucket-per-org") or "").strip().lower() in ("true", "1", "yes")
    if per_org:
        name = (host.setting("s3-bucket-prefix") or "") + org
        if not _valid_bucket(name):
            raise Err(types.Error_InvalidName(
                f"organisation {org!r} gives bucket {name!r}, which is not a valid S3 bucket name "
                "(the tiering policy does not map names)"))
        return name
    bucket = host.setting("s3-bucket")
    if bucket is None or not _valid_bucket(bucket):
        raise Err(types.Error_InvalidConfig(f"S3_BUCKET {bucket!r} is not a valid bucket name"))
    return bucket


def _content_type_allowed(content_type):
    allowed = [t.strip().lower() for t in (host.setting("allowed-content-types") or "").split(",") if t.strip()]
    if not allowed:
        return True
    essence = content_type.split(";")[0].strip().lower()
    major = essence.split("/")[0]
    return any(a in ("*", "*/*") or a == essence or a == major + "/*" for a in allowed)


class Policy(exports.Policy):
    def check_config(self, org):
        _setting_int("tier-threshold", 1 << 20)
        _setting_int("retention-days", 0)
        _setting_int("max-size", 0)
        if types.Backend.S3 in store.backends():
            per_org = (host.setting("bucket-per-org") or "").strip().lower() in ("true", "1", "yes")
            if not per_org:
                _bucket("-")
            elif org is not None:
                _bucket(org)

    def namespaces(self, org):
        database = types.Namespace(backend=types.Backend.DATABASE, container=org, prefix="")
        bucket = _bucket(org)
        if bucket is None:
            return [database]
        per_org = (host.setting("bucket-per-org") or "").strip().lower() in ("true", "1", "yes")
        prefix = "" if per_org else f"{org}/"
        return [types.Namespace(backend=types.Backend.S3, container=bucket, prefix=prefix), database]

    def put(self, org, body):
        info = body.describe()
        max_size = _setting_int("max-size", 0)
        if max_size and info.size > max_size:
            raise Err(types.Error_Denied(f"the file is {info.size} bytes; the limit is {max_size} bytes (max-size)"))
        if not _content_type_allowed(info.content_type):
            raise Err(types.Error_Denied(f"content type {info.content_type!r} is not allowed here"))
        existing = store.lookup(info.sha256)
        if existing is not None:
            return types.PutOutcome(location=existing.location, deduplicated=True)
        bucket = _bucket(org)
        if bucket is not None and info.size >= _setting_int("tier-threshold", 1 << 20):
            key = f"{org}/{info.sha256[:2]}/{info.sha256}"
            at = types.Location(backend=types.Backend.S3, container=bucket, object_name=key)
        else:
            at = types.Location(backend=types.Backend.DATABASE, container=org, object_name=info.sha256)
        size = store.head(at)
        if size == info.size:
            return types.PutOutcome(location=at, deduplicated=True)
        if size is not None:
            raise Err(types.Error_Conflict(f"{at.container}/{at.object_name} holds {size} bytes, not {info.size}"))
        store.ensure_container(at.backend, at.container)
        written = store.write(at, body)
        return types.PutOutcome(location=at, deduplicated=not written)

    def authorize(self, org, op, object):
        if op == types.Operation.DELETE:
            days = _setting_int("retention-days", 0)
            age = host.now() - object.created_at
            if age < days * DAY:
                left = (days * DAY - age + DAY - 1) // DAY
                raise Err(types.Error_Denied(
                    f"retention: {object.sha256} must be kept {days} days; {left} more day(s) (retention-days)"))
