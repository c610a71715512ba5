"""Decode the queue's messages into the S3 objects to load. Pure: no AWS calls.

A message body is one of:
- an S3 event notification (``{"Records": [...]}``), keys URL-encoded with '+' for spaces;
- the same wrapped by SNS (``{"Type": "Notification", "Message": "..."}``);
- ``s3:TestEvent``, sent once when notifications are configured: nothing to load;
- an EventBridge "Object Created" event from S3 (keys not encoded);
- a reconciler message ``{"km2pg": "load", "bucket": ..., "key": ...}`` (keys not encoded).
Only export files (``.../revisions/N.json``) are kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from km2pg.sources import is_revision_key, s3_key_from_event

RECONCILER_MARK: Final = "load"


class MessageError(ValueError):
    """A message that is not any of the shapes above (it is logged and dropped, not retried)."""


@dataclass(frozen=True)
class ObjectRef:
    bucket: str
    key: str
    size: int | None = None
    etag: str | None = None


def objects_in_message(body: str) -> list[ObjectRef]:
    """The export files a queue message announces (often one, possibly none)."""
    try:
        message: Any = json.loads(body)
    except ValueError:
        raise MessageError("message body is not JSON") from None
    if not isinstance(message, dict):
        raise MessageError("message body is not a JSON object")
    if message.get("Type") == "Notification" and isinstance(message.get("Message"), str):
        return objects_in_message(message["Message"])
    if message.get("Event") == "s3:TestEvent":
        return []
    if "Records" in message:
        found = [_from_record(r) for r in message["Records"] or []]
        return [ref for ref in found if ref is not None and is_revision_key(ref.key)]
    if message.get("source") == "aws.s3" and "detail" in message:
        ref = _from_eventbridge(message)
        return [ref] if ref is not None and is_revision_key(ref.key) else []
    if message.get("km2pg") == RECONCILER_MARK:
        ref = ObjectRef(
            str(message["bucket"]), str(message["key"]), message.get("size"), message.get("etag")
        )
        return [ref] if is_revision_key(ref.key) else []
    raise MessageError("message is not an S3 notification, an EventBridge event or ours")


def reconciler_message(ref: ObjectRef) -> str:
    return json.dumps(
        {
            "km2pg": RECONCILER_MARK,
            "bucket": ref.bucket,
            "key": ref.key,
            "size": ref.size,
            "etag": ref.etag,
        }
    )


def _from_record(record: Any) -> ObjectRef | None:
    if not isinstance(record, dict):
        raise MessageError("an S3 notification record is not an object")
    if not str(record.get("eventName", "")).startswith("ObjectCreated:"):
        return None
    try:
        s3 = record["s3"]
        obj = s3["object"]
        return ObjectRef(
            bucket=str(s3["bucket"]["name"]),
            key=s3_key_from_event(str(obj["key"])),
            size=obj.get("size"),
            etag=obj.get("eTag") or obj.get("etag"),
        )
    except (KeyError, TypeError):
        raise MessageError(
            "an S3 notification record lacks s3.bucket.name or s3.object.key"
        ) from None


def _from_eventbridge(message: dict[str, Any]) -> ObjectRef | None:
    if message.get("detail-type") != "Object Created":
        return None
    try:
        detail = message["detail"]
        return ObjectRef(
            bucket=str(detail["bucket"]["name"]),
            key=str(detail["object"]["key"]),
            size=detail["object"].get("size"),
            etag=detail["object"].get("etag"),
        )
    except (KeyError, TypeError):
        raise MessageError(
            "an EventBridge event lacks detail.bucket.name or detail.object.key"
        ) from None
