"""The `mlflow-operator` command: run the operator, or print what it generates (CRDs, API reference, the
objects for a file of resources)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from mlflow_operator import __version__

if TYPE_CHECKING:
    from mlflow_operator.builders.images import Images
    from mlflow_operator.handlers.receiver_tls import TlsSettings

DEFAULT_METRICS_ADDRESS = "0.0.0.0:9090"
OFF = ("", "off", "none", "0")


def parse_address(text: str) -> tuple[str, int] | None:
    """HOST:PORT (IPv6 as [::1]:9090; an empty host is 0.0.0.0), or None for off/empty."""
    text = text.strip()
    if text.lower() in OFF:
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT or 'off', got {text!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def serve_metrics(address: tuple[str, int] | None) -> Callable[[], None]:
    """Serve the operator's registry on http://HOST:PORT/metrics from a daemon thread; returns a stopper."""
    if address is None:
        return lambda: None
    from prometheus_client import start_http_server  # noqa: PLC0415

    from mlflow_operator.metrics import REGISTRY  # noqa: PLC0415

    server, thread = start_http_server(address[1], address[0], registry=REGISTRY)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop


def _run(args: argparse.Namespace) -> int:
    # Imported here: `crds` (used at build time) should not pay for loading kopf and the handlers.
    import kopf  # noqa: PLC0415

    from mlflow_operator import handlers  # noqa: PLC0415 - importing registers the handlers

    images = images_from(args, "run")
    if images is None:
        return 2
    if (args.registry_events_address is None) != (args.registry_events_url is None):
        print(
            "mlflow-operator run: give both --registry-events-address and --registry-events-url, or neither",
            file=sys.stderr,
        )
        return 2
    events_tls, problem = receiver_tls_settings(args)
    if problem:
        print(f"mlflow-operator run: {problem}", file=sys.stderr)
        return 2
    handlers.configure(
        resync_seconds=args.resync_seconds,
        prometheus_address=args.prometheus_address,
        images=images,
        events_listen=args.registry_events_address,
        events_url=args.registry_events_url,
        events_tls=events_tls,
    )

    if not args.all_namespaces and not args.namespace:
        print("mlflow-operator run: give --namespace NS (repeatable) or --all-namespaces", file=sys.stderr)
        return 2
    try:
        stop_metrics = serve_metrics(args.metrics_address)
    except OSError as error:
        print(f"mlflow-operator run: cannot serve metrics on --metrics-address: {error}", file=sys.stderr)
        return 2
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL,
        log_prefix=True,
        log_refkey="object",
    )
    for noisy in ("aiohttp.access", "httpx", "httpx2", "httpcore", "httpcore2", "botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # kopf installs SIGTERM/SIGINT handlers and finishes in-flight handlers before exiting.
    try:
        asyncio.run(
            kopf.operator(
                clusterwide=args.all_namespaces,
                namespaces=args.namespace or [],
                standalone=True,  # peering is not leader election: run one replica (strategy Recreate)
                liveness_endpoint=args.liveness,
            )
        )
    finally:
        stop_metrics()
    return 0


def receiver_tls_settings(args: argparse.Namespace) -> tuple[TlsSettings | None, str | None]:
    """The receiver's TLS from --registry-events-tls-secret and --registry-events-tls-issuer, or why not."""
    from mlflow_operator.handlers.receiver_tls import TlsSettings  # noqa: PLC0415 - loads kopf's handlers
    from mlflow_operator.logic.certificates import service_names  # noqa: PLC0415

    if args.registry_events_tls_secret is None:
        return None, None
    namespace, sep, name = args.registry_events_tls_secret.partition("/")
    url = urlsplit(args.registry_events_url or "")
    if not sep or not namespace or not name:
        return None, "--registry-events-tls-secret: expected NAMESPACE/NAME"
    if url.scheme != "https" or not url.hostname:
        return (
            None,
            "--registry-events-tls-secret needs an https:// --registry-events-url (the certificate names its host)",
        )
    issue = args.registry_events_tls_issuer == "operator"
    return TlsSettings(namespace, name, tuple(service_names(url.hostname)), issue=issue), None


def _crds(args: argparse.Namespace) -> int:
    from mlflow_operator.api.crd import crd_files  # noqa: PLC0415

    files = crd_files()
    if args.output is None:
        sys.stdout.write("---\n".join(files.values()))
        return 0
    args.output.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.output / name).write_text(text)
    return 0


def _render(args: argparse.Namespace) -> int:
    import yaml  # noqa: PLC0415

    from mlflow_operator.render import RenderError, render_documents, to_yaml  # noqa: PLC0415

    try:
        text = sys.stdin.read() if str(args.file) == "-" else args.file.read_text()
        documents = list(yaml.safe_load_all(text))
    except (OSError, yaml.YAMLError) as error:
        print(f"mlflow-operator render: {error}", file=sys.stderr)
        return 2
    images = images_from(args, "render")
    if images is None:
        return 2
    try:
        rendered = render_documents(
            documents, namespace=args.namespace, model_version=args.model_version, images=images
        )
    except RenderError as error:
        print(f"mlflow-operator render: {error}", file=sys.stderr)
        return 2
    for note in rendered.notes:
        print(f"# {note}", file=sys.stderr)
    sys.stdout.write(to_yaml(rendered.objects))
    return 0


def _docs(args: argparse.Namespace) -> int:
    from mlflow_operator.api.docs import api_reference  # noqa: PLC0415

    text = api_reference()
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
    return 0


def _image_setting(text: str) -> tuple[str, str]:
    key, sep, reference = text.partition("=")
    if not sep or not key or not reference:
        raise argparse.ArgumentTypeError(f"expected KEY=REFERENCE, got {text!r}")
    return key, reference


def add_image_arguments(parser: argparse.ArgumentParser) -> None:
    from mlflow_operator.builders.images import IMAGE_KEYS  # noqa: PLC0415

    parser.add_argument(
        "--image-registry",
        metavar="HOST[:PORT][/PATH]",
        help="pull every default image from this registry (a mirror): the registry host of each is replaced",
    )
    parser.add_argument(
        "--image",
        type=_image_setting,
        action="append",
        default=[],
        metavar="KEY=REFERENCE",
        help=f"replace one default image (repeatable); KEY is one of {', '.join(IMAGE_KEYS)}. A resource's own "
        "image field still wins",
    )


def images_from(args: argparse.Namespace, command: str) -> Images | None:
    """The operator-wide images, or None after printing which setting is wrong."""
    from mlflow_operator.builders.images import ImageSettingError, operator_images  # noqa: PLC0415

    try:
        return operator_images(args.image_registry, dict(args.image))
    except ImageSettingError as error:
        print(f"mlflow-operator {command}: {error}", file=sys.stderr)
        return None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("a model version is 1 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlflow-operator", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mlflow-operator {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the operator against the cluster in $KUBECONFIG or in-cluster")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", help="watch this namespace (repeatable)")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    run.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="liveness probe endpoint URL")
    run.add_argument("--log-format", choices=["json", "text"], default="json", help="log line format")
    run.add_argument("--verbose", action="store_true", help="debug logging")
    run.add_argument(
        "--resync-seconds",
        type=float,
        default=60.0,
        help="how often TrackingServers and ModelDeployments are compared with the cluster when nothing changed; "
        "RegisteredModels follow their spec.resyncInterval",
    )
    run.add_argument(
        "--metrics-address",
        type=parse_address,
        default=parse_address(DEFAULT_METRICS_ADDRESS),
        metavar="HOST:PORT",
        help=f"serve Prometheus metrics on http://HOST:PORT/metrics, or 'off' (default {DEFAULT_METRICS_ADDRESS})",
    )
    run.add_argument(
        "--prometheus-address",
        default=None,
        metavar="URL",
        help="the Prometheus a ModelDeployment's analysis queries when its spec.analysis.prometheusAddress is unset",
    )
    run.add_argument(
        "--registry-events-address",
        type=parse_address,
        default=None,
        metavar="HOST:PORT",
        help="serve the registry-events receiver (MLflow webhooks) on HOST:PORT; off by default",
    )
    run.add_argument(
        "--registry-events-url",
        default=None,
        metavar="URL",
        help="the receiver's base URL as tracking servers reach it, e.g. "
        "https://mlflow-operator-registry-events.mlflow-operator.svc:8443 (the operator's Service)",
    )
    run.add_argument(
        "--registry-events-tls-secret",
        default=None,
        metavar="NAMESPACE/NAME",
        help="serve the receiver over HTTPS with the certificate in this Secret (ca.crt, tls.crt, tls.key); without "
        "it the receiver speaks plain HTTP",
    )
    run.add_argument(
        "--registry-events-tls-issuer",
        choices=["operator", "cert-manager"],
        default="operator",
        help="who writes that Secret: the operator (a private CA, renewed before expiry) or cert-manager",
    )
    add_image_arguments(run)
    run.set_defaults(func=_run)

    render = commands.add_parser(
        "render",
        help="print every object the operator would create for the resources in a file, without a cluster",
        description="Print (YAML, --- separated) every object the operator would create for the TrackingServers, "
        "RegisteredModels and ModelDeployments in a file, computed offline by the operator's own builders: for "
        "pull-request review and GitOps diffs. Owner references are added by the operator when it applies "
        "objects, so rendered objects carry none. Generated credentials (and every Secret value derived from "
        "them) are rendered as '<generated at runtime>', config hashes as '<computed at runtime>'. A model alias "
        "is resolved by the registry at runtime: pass --model-version to render as if it resolved to that "
        "version. Notes go to stderr; an invalid resource exits with code 2 and names the field.",
    )
    render.add_argument("--file", "-f", type=Path, required=True, help="a YAML file (multi-document), or - for stdin")
    render.add_argument(
        "--namespace", "-n", default="default", help="namespace for resources without metadata.namespace"
    )
    render.add_argument(
        "--model-version", type=_positive, metavar="N", help="render ModelDeployments that follow an alias at version N"
    )
    add_image_arguments(render)
    render.set_defaults(func=_render)

    docs = commands.add_parser("docs", help="print the API reference (Markdown), or write it to a file")
    docs.add_argument("--output", "-o", type=Path, help="file to write, e.g. docs/api.md")
    docs.set_defaults(func=_docs)

    crds = commands.add_parser("crds", help="print the CustomResourceDefinitions, or write them to a folder")
    crds.add_argument("--output", "-o", type=Path, help="folder to write one YAML file per CRD into")
    crds.set_defaults(func=_crds)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
