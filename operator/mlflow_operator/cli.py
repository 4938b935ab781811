"""The `mlflow-operator` command: run the operator, or print what it generates."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from mlflow_operator import __version__


def _run(args: argparse.Namespace) -> int:
    # Imported here: `crds` (used at build time) should not pay for loading kopf and the handlers.
    import kopf  # noqa: PLC0415

    from mlflow_operator import handlers  # noqa: PLC0415 - importing registers the handlers

    handlers.configure(resync_seconds=args.resync_seconds)

    if not args.all_namespaces and not args.namespace:
        print("mlflow-operator run: give --namespace NS (repeatable) or --all-namespaces", file=sys.stderr)
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
    asyncio.run(
        kopf.operator(
            clusterwide=args.all_namespaces,
            namespaces=args.namespace or [],
            standalone=True,  # peering is not leader election: run one replica (strategy Recreate)
            liveness_endpoint=args.liveness,
        )
    )
    return 0


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
    run.set_defaults(func=_run)

    crds = commands.add_parser("crds", help="print the CustomResourceDefinitions, or write them to a folder")
    crds.add_argument("--output", "-o", type=Path, help="folder to write one YAML file per CRD into")
    crds.set_defaults(func=_crds)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
