"""The receiver's certificates: issued for the Service's names, renewed on time, the CA kept while it lasts,
and usable by Python's ssl on both ends."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mlflow_operator.handlers.receiver_tls import load_chain, server_context
from mlflow_operator.logic import certificates as certs

NOW = datetime(2026, 12, 5, tzinfo=UTC)
NAMES = certs.service_names("mlflow-operator-registry-events.ops.svc")


def test_service_names_cover_every_form_of_the_service_host() -> None:
    assert NAMES == [
        "mlflow-operator-registry-events",
        "mlflow-operator-registry-events.ops",
        "mlflow-operator-registry-events.ops.svc",
        "mlflow-operator-registry-events.ops.svc.cluster.local",
    ]
    assert certs.service_names("receiver.example.com") == ["receiver.example.com"]


def test_issued_material_is_good_until_its_renewal_window() -> None:
    material = certs.issue(NAMES, NOW)
    assert certs.renewal_reason(material, NAMES, NOW) is None
    assert certs.renewal_reason(None, NAMES, NOW) == "no certificate yet"
    due = NOW + certs.SERVING_LIFETIME - certs.RENEW_BEFORE
    assert certs.renewal_reason(material, NAMES, due - timedelta(minutes=1)) is None
    assert "renewal window" in (certs.renewal_reason(material, NAMES, due) or "")
    assert "does not name" in (certs.renewal_reason(material, ["elsewhere"], NOW) or "")
    foreign = certs.issue(NAMES, NOW)
    mixed = certs.TlsMaterial(foreign.ca_crt, foreign.ca_key, material.tls_crt, material.tls_key)
    assert certs.renewal_reason(mixed, NAMES, NOW) == "the certificate is not signed by ca.crt"
    garbage = certs.TlsMaterial("not a certificate", "", "nor this", "")
    assert "unreadable" in (certs.renewal_reason(garbage, NAMES, NOW) or "")


def test_a_renewal_keeps_the_ca_until_its_last_year() -> None:
    first = certs.issue(NAMES, NOW)
    renewed = certs.issue(NAMES, NOW + timedelta(days=300), first)
    assert renewed.ca_crt == first.ca_crt and renewed.tls_crt != first.tls_crt
    assert certs.signed_by(renewed.tls_crt, first.ca_crt)
    late = NOW + certs.CA_LIFETIME - certs.CA_RENEW_BEFORE
    assert certs.issue(NAMES, late, first).ca_crt != first.ca_crt
    # cert-manager's Secret carries no CA key: the operator never signs with a CA it does not hold.
    external = certs.TlsMaterial(first.ca_crt, "", first.tls_crt, first.tls_key)
    assert certs.TlsMaterial.from_secret(external.secret_data()) == external
    assert "ca.key" not in external.secret_data()


def test_a_client_trusting_the_ca_verifies_the_served_certificate(tmp_path: Path) -> None:
    material = certs.issue(NAMES, datetime.now(UTC))
    server = server_context(material)
    client = ssl.create_default_context(cadata=material.ca_crt)
    # Handshake in memory: the client checks the chain and the host name against the SAN.
    for name, ok in (("mlflow-operator-registry-events.ops.svc", True), ("other.ops.svc", False)):
        c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
        client_end = client.wrap_bio(c_in, c_out, server_hostname=name)
        server_end = server.wrap_bio(s_in, s_out, server_side=True)
        outcome = None
        for _ in range(10):
            for end in (client_end, server_end):
                try:
                    end.do_handshake()
                    outcome = outcome or (end is client_end)
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLCertVerificationError:
                    outcome = False
            s_in.write(c_out.read())
            c_in.write(s_out.read())
            if outcome is not None:
                break
        assert outcome is ok, name
    renewed = certs.issue(NAMES, datetime.now(UTC), material)
    load_chain(server, renewed)  # a renewed certificate loads into the running context
