"""What a barman-cloud backup location holds, read with boto3 (bounded: adapters.s3's clients).

Reads one server's `base/*/backup.info` objects and its newest archived WAL segment; logic.backup decides
with them. Errors are adapters.s3's (BucketUnreachable, AccessDenied...), with the server's words.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from datetime import datetime
from typing import Any

from mlflow_operator.adapters.s3 import S3Endpoint, make_client, translated_errors
from mlflow_operator.logic.backup import (
    OWNER_OBJECT,
    BaseBackup,
    LocationOwner,
    StoreContents,
    newest_wal,
    parse_backup_info,
)

MAX_BACKUPS = 1000  # base backups read per pass: years of daily backups inside any recovery window
# A completed backup's backup.info never changes: read once (each pass lists the backups, a month of daily
# ones would otherwise be 30 GETs a minute per TrackingServer). Bounded, least recently used dropped.
MAX_CACHED_INFOS = 4096
_completed: OrderedDict[tuple[str | None, str, str], BaseBackup] = OrderedDict()
_completed_lock = threading.Lock()


def _cached(key: tuple[str | None, str, str]) -> BaseBackup | None:
    with _completed_lock:
        found = _completed.get(key)
        if found is not None:
            _completed.move_to_end(key)
        return found


def _remember(key: tuple[str | None, str, str], info: BaseBackup) -> None:
    if not info.done:
        return
    with _completed_lock:
        _completed[key] = info
        while len(_completed) > MAX_CACHED_INFOS:
            _completed.popitem(last=False)


def _keys(client: Any, bucket: str, prefix: str, delimiter: str | None = None) -> list[dict[str, Any]]:
    """Objects (or, with a delimiter, common prefixes) under prefix, all pages."""
    options: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    if delimiter:
        options["Delimiter"] = delimiter
    found: list[dict[str, Any]] = []
    for page in client.get_paginator("list_objects_v2").paginate(**options):
        found += page.get("CommonPrefixes", []) if delimiter else page.get("Contents", [])
    return found


def _backups(client: Any, bucket: str, key_prefix: str) -> list[BaseBackup]:
    backups = []
    for entry in _keys(client, bucket, f"{key_prefix}base/", "/")[-MAX_BACKUPS:]:
        backup_id = entry["Prefix"].rstrip("/").rsplit("/", 1)[-1]
        key = (client.meta.endpoint_url, bucket, f"{entry['Prefix']}backup.info")
        info = _cached(key)
        if info is None:
            try:
                body = client.get_object(Bucket=bucket, Key=key[2])["Body"].read()
            except client.exceptions.NoSuchKey:
                continue  # a backup still uploading writes its backup.info last
            info = parse_backup_info(backup_id, body.decode(errors="replace"))
            _remember(key, info)
        backups.append(info)
    return backups


def _last_wal_objects(client: Any, bucket: str, key_prefix: str) -> list[tuple[str, datetime]]:
    """The objects of the newest WAL directory (one per timeline and 4 GiB of WAL): segment names sort."""
    directories = sorted(entry["Prefix"] for entry in _keys(client, bucket, f"{key_prefix}wals/", "/"))
    for directory in reversed(directories):
        objects = [(o["Key"], o["LastModified"]) for o in _keys(client, bucket, directory)]
        if newest_wal(objects) is not None:
            return objects
    return []


def read_store(endpoint: S3Endpoint, key_prefix: str) -> StoreContents:
    """One server's base backups and newest archived WAL segment (key_prefix: PREFIX/SERVER/)."""
    client = make_client(endpoint)
    with translated_errors(endpoint.bucket):
        backups = _backups(client, endpoint.bucket, key_prefix)
        last_wal = newest_wal(_last_wal_objects(client, endpoint.bucket, key_prefix))
    return StoreContents(tuple(backups), last_wal)


async def read_store_async(endpoint: S3Endpoint, key_prefix: str) -> StoreContents:
    return await asyncio.to_thread(read_store, endpoint, key_prefix)


def read_owner(endpoint: S3Endpoint, key_prefix: str) -> tuple[LocationOwner | None, bool]:
    """(The location's owner object, whether it holds anything else) for logic.backup.claim_location. An
    owner object that cannot be parsed reads as none beside data: another database's, the safe side."""
    client = make_client(endpoint)
    owner_key = f"{key_prefix}{OWNER_OBJECT}"
    with translated_errors(endpoint.bucket):
        listed = client.list_objects_v2(Bucket=endpoint.bucket, Prefix=key_prefix, MaxKeys=2)
        others = [entry["Key"] for entry in listed.get("Contents", []) if entry["Key"] != owner_key]
        try:
            body = client.get_object(Bucket=endpoint.bucket, Key=owner_key)["Body"].read()
        except client.exceptions.NoSuchKey:
            return None, bool(others)
    owner = LocationOwner.parse(body.decode(errors="replace"))
    return owner, owner is None or bool(others)


def write_owner(endpoint: S3Endpoint, key_prefix: str, owner: LocationOwner) -> None:
    client = make_client(endpoint)
    with translated_errors(endpoint.bucket):
        client.put_object(
            Bucket=endpoint.bucket,
            Key=f"{key_prefix}{OWNER_OBJECT}",
            Body=owner.document().encode(),
            ContentType="application/json",
        )


async def read_owner_async(endpoint: S3Endpoint, key_prefix: str) -> tuple[LocationOwner | None, bool]:
    return await asyncio.to_thread(read_owner, endpoint, key_prefix)


async def write_owner_async(endpoint: S3Endpoint, key_prefix: str, owner: LocationOwner) -> None:
    await asyncio.to_thread(write_owner, endpoint, key_prefix, owner)
