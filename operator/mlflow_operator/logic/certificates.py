"""The registry-events receiver's TLS: a private CA and a serving certificate for the receiver's Service names,
kept in one Secret (ca.crt, ca.key, tls.crt, tls.key), issued and renewed by the operator, or by cert-manager.

Named, pure decisions with the clock passed in (the way cert-manager decides when to renew); generating keys
and certificates is computation, not I/O: the handler reads and writes the Secret.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CA_LIFETIME = timedelta(days=3650)
SERVING_LIFETIME = timedelta(days=365)
# Renew when a third of the serving certificate's life is left (cert-manager's default ratio): a renewal that
# fails is retried for months before anything expires.
RENEW_BEFORE = SERVING_LIFETIME / 3
CA_RENEW_BEFORE = timedelta(days=365)  # a new CA rolls every tracking server: rarely, and long before it expires
CLOCK_SKEW = timedelta(minutes=5)  # certificates are valid from a little before now: clocks in a cluster differ

CA_CRT, CA_KEY, TLS_CRT, TLS_KEY = "ca.crt", "ca.key", "tls.crt", "tls.key"


@dataclass(frozen=True)
class TlsMaterial:
    ca_crt: str
    ca_key: str  # empty when cert-manager issues (the operator never sees its CA's key)
    tls_crt: str
    tls_key: str

    def secret_data(self) -> dict[str, str]:
        data = {CA_CRT: self.ca_crt, TLS_CRT: self.tls_crt, TLS_KEY: self.tls_key}
        return data | ({CA_KEY: self.ca_key} if self.ca_key else {})

    @classmethod
    def from_secret(cls, data: Mapping[str, str]) -> TlsMaterial | None:
        if not all(data.get(key) for key in (CA_CRT, TLS_CRT, TLS_KEY)):
            return None
        return cls(data[CA_CRT], data.get(CA_KEY, ""), data[TLS_CRT], data[TLS_KEY])


def service_names(host: str) -> list[str]:
    """The DNS names a certificate for an in-cluster Service needs: every form a client may use for
    NAME.NAMESPACE.svc[.cluster.local]; any other host as given."""
    parts = host.split(".")
    if len(parts) >= 3 and parts[2] == "svc":
        name, namespace = parts[0], parts[1]
        return [name, f"{name}.{namespace}", f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]
    return [host]


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    now: datetime,
    lifetime: timedelta,
    names: Sequence[str] = (),
) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is None:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
    else:
        usage = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False)
    builder = builder.add_extension(usage, critical=True)
    return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def issue(names: Sequence[str], now: datetime, previous: TlsMaterial | None = None) -> TlsMaterial:
    """A serving certificate for `names`, signed by the previous CA while it has life left, else by a new one."""
    if previous is not None and previous.ca_key and not expiring(previous.ca_crt, now, CA_RENEW_BEFORE):
        ca_crt, ca_key_pem = previous.ca_crt, previous.ca_key
    else:
        new_ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_crt = _certificate("mlflow-operator registry-events CA", new_ca_key, None, new_ca_key, now, CA_LIFETIME)
        ca_key_pem = _key_pem(new_ca_key)
    ca_key = serialization.load_pem_private_key(ca_key_pem.encode(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    ca = x509.load_pem_x509_certificate(ca_crt.encode())
    tls_crt = _certificate(names[0], key, ca, ca_key, now, SERVING_LIFETIME, names)
    return TlsMaterial(ca_crt, ca_key_pem, tls_crt, _key_pem(key))


def expiring(certificate_pem: str, now: datetime, before: timedelta) -> bool:
    return x509.load_pem_x509_certificate(certificate_pem.encode()).not_valid_after_utc - before <= now


def covers(certificate_pem: str, names: Sequence[str]) -> bool:
    certificate = x509.load_pem_x509_certificate(certificate_pem.encode())
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return set(names) <= set(san.get_values_for_type(x509.DNSName))


def signed_by(certificate_pem: str, ca_pem: str) -> bool:
    certificate = x509.load_pem_x509_certificate(certificate_pem.encode())
    ca = x509.load_pem_x509_certificate(ca_pem.encode())
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def renewal_reason(material: TlsMaterial | None, names: Sequence[str], now: datetime) -> str | None:
    """Why the operator must issue a new certificate now (None: the Secret's is good). A Secret it cannot read
    as certificates counts as missing rather than stopping the receiver."""
    if material is None:
        return "no certificate yet"
    try:
        if expiring(material.tls_crt, now, RENEW_BEFORE):
            return "the serving certificate expires within its renewal window"
        if material.ca_key and expiring(material.ca_crt, now, CA_RENEW_BEFORE):
            return "the CA expires within a year"
        if not covers(material.tls_crt, names):
            return f"the certificate does not name {', '.join(names)}"
        if not signed_by(material.tls_crt, material.ca_crt):
            return "the certificate is not signed by ca.crt"
    except ValueError as unreadable:
        return f"the Secret's certificates are unreadable ({unreadable})"
    return None
