"""The chaos suite's inventory of the operator's children, on objects as the API server lists them."""

from typing import Any

from tests.e2e.chaos import inventory


def obj(kind: str, name: str, *owners: tuple[str, str]) -> dict[str, Any]:
    refs = [{"kind": owner_kind, "name": owner_kind.lower(), "uid": uid} for owner_kind, uid in owners]
    return {"kind": kind, "metadata": {"name": name, "ownerReferences": refs}}


def test_a_job_the_gc_cronjob_started_is_not_an_operator_child() -> None:
    items = [obj("CronJob", "ts-gc", ("TrackingServer", "ts")), obj("Job", "ts-gc-29942100", ("CronJob", "cj"))]
    names, orphans = inventory(items, {"ts", "cj"}, set())
    assert (names, orphans) == ({"CronJob/ts-gc"}, [])


def test_a_cronjob_job_whose_cronjob_is_gone_is_still_an_orphan() -> None:
    names, orphans = inventory([obj("Job", "ts-gc-1", ("CronJob", "cj"))], set(), set())
    assert (names, orphans) == (set(), ["Job/ts-gc-1 (owner CronJob/cronjob gone)"])


def test_an_ownerless_child_is_an_orphan_unless_retained() -> None:
    items = [obj("Secret", "ts-db"), obj("Secret", "ts-admin")]
    names, orphans = inventory(items, set(), {"Secret/ts-db"})
    assert (names, orphans) == ({"Secret/ts-db", "Secret/ts-admin"}, ["Secret/ts-admin (no owner)"])
