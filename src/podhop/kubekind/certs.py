"""The cluster's PKI: one CA, one front-proxy CA, and a certificate per identity.

Why: TLS everywhere, and every component authenticates with a client
certificate whose subject *is* its Kubernetes identity (``CN`` = user, ``O`` =
groups): the kubelets as ``system:node:<name>`` in ``system:nodes`` (so the Node
authorizer and NodeRestriction apply), the API server's kubelet client as
``kube-apiserver-kubelet-client`` (bound to a role that includes
``nodes/checkpoint``), the admin in ``system:masters``. The aggregation layer
(metrics-server) needs its own CA for request headers, as kubeadm does.

What to issue is a pure plan (:func:`plan`); :func:`write_pki` makes the keys
once and never overwrites an existing pair, so re-running create is idempotent.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 3650
CA = "ca"
FRONT_PROXY_CA = "front-proxy-ca"


@dataclass(frozen=True)
class CertSpec:
    """One certificate to issue: file stem, subject, SANs, usage, issuing CA."""

    name: str
    cn: str
    orgs: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    server: bool = False
    client: bool = False
    ca: str = CA


@dataclass(frozen=True)
class PkiPlan:
    certs: tuple[CertSpec, ...]
    cas: tuple[str, ...] = field(default=(CA, FRONT_PROXY_CA))


def plan(api_ips: list[str], nodes: list[tuple[str, str]]) -> PkiPlan:
    """Certificates for a cluster whose API server answers on ``api_ips`` with ``nodes`` (name, IP)."""
    api_dns = (
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "localhost",
    )
    specs = [
        CertSpec("apiserver", "kube-apiserver", dns=api_dns, ips=(*api_ips, "127.0.0.1"), server=True),
        CertSpec("apiserver-kubelet-client", "kube-apiserver-kubelet-client", client=True),
        CertSpec("apiserver-etcd-client", "kube-apiserver-etcd-client", client=True),
        CertSpec("etcd", "etcd", dns=("localhost",), ips=(api_ips[0], "127.0.0.1"), server=True, client=True),
        CertSpec("admin", "kubernetes-admin", orgs=("system:masters",), client=True),
        CertSpec("controller-manager", "system:kube-controller-manager", client=True),
        CertSpec("scheduler", "system:kube-scheduler", client=True),
        CertSpec("kube-proxy", "system:kube-proxy", orgs=("system:node-proxier",), client=True),
        CertSpec(
            "metrics-server",
            "system:metrics-server",
            dns=("metrics-server.kube-system.svc", "localhost"),
            ips=(api_ips[0],),
            server=True,
            client=True,
        ),
        CertSpec("lb-controller", "podhop:lb-controller", client=True),
        CertSpec("front-proxy-client", "front-proxy-client", client=True, ca=FRONT_PROXY_CA),
    ]
    for name, ip in nodes:
        specs.append(CertSpec(f"kubelet-{name}", f"system:node:{name}", orgs=("system:nodes",), client=True))
        specs.append(CertSpec(f"kubelet-{name}-serving", name, dns=(name,), ips=(ip,), server=True))
    return PkiPlan(tuple(specs))


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def _ca(pki: Path, name: str, cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    crt, keyf = pki / f"{name}.crt", pki / f"{name}.key"
    if crt.exists() and keyf.exists():
        return x509.load_pem_x509_certificate(crt.read_bytes()), _load_key(keyf)
    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(keyf, _key_pem(key))
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _issue(pki: Path, spec: CertSpec, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey) -> None:
    crt, keyf = pki / f"{spec.name}.crt", pki / f"{spec.name}.key"
    if crt.exists() and keyf.exists():
        return
    key = _new_key()
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in spec.orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, spec.cn))
    usages = []
    if spec.server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if spec.client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in spec.dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in spec.ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_private(keyf, _key_pem(key))
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def write_pki(pki: Path, the_plan: PkiPlan) -> None:
    """Create the CAs, the service-account key and every certificate of ``the_plan`` that is missing."""
    pki.mkdir(parents=True, exist_ok=True)
    pki.chmod(0o700)
    cas = {
        CA: _ca(pki, CA, "podhop-kubernetes-ca"),
        FRONT_PROXY_CA: _ca(pki, FRONT_PROXY_CA, "podhop-front-proxy-ca"),
    }
    for spec in the_plan.certs:
        ca_cert, ca_key = cas[spec.ca]
        _issue(pki, spec, ca_cert, ca_key)
    sa_key, sa_pub = pki / "sa.key", pki / "sa.pub"
    if not (sa_key.exists() and sa_pub.exists()):
        key = _new_key()
        _write_private(sa_key, _key_pem(key))
        sa_pub.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
