"""Integration fixtures shared by the modules: one MinIO and one moto server for the session.

Tests only create buckets in them (each its own, by a unique name). A test that stops a shared server
restarts it before it returns (tests/integration/test_gc.py does, in a `finally`); modules that stop their
S3 server in ways a later module could notice keep a private one (tests/integration/test_backup_restore.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.s3_servers import S3Server, minio_server, moto_server


@pytest.fixture(scope="session")
def minio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with minio_server(tmp_path_factory.mktemp("minio")) as server:
        yield server


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield server
