#!/usr/bin/env bash
# Container images for the real node of hack/localcluster.py, built without a registry or a base image:
# umoci (Debian) packs a root filesystem into an OCI layout, archived as a tarball.
#
# Interface (the same as hack/build-images.py's for the application images, so a node imports both):
#   * An archive is an OCI image layout as a tar (`tar -C layout -cf X.oci.tar .`) whose index.json names the
#     image by its TAG (org.opencontainers.image.ref.name, as `umoci new --image layout:TAG` writes it).
#   * A manifest lists archives, one per line: `<archive path>\t<image reference>`. This script keeps
#     $CACHE/images/node-manifest.tsv; hack/build-images.py keeps $CACHE/images/manifest.tsv.
#   * `localcluster.py up` (and `localcluster.py load-images`) import every line of every $CACHE/images/*.tsv
#     with `ctr -n k8s.io images import --base-name <reference without its tag> <archive>`, so the CRI sees
#     exactly the reference, e.g. localhost/pause:3.10.2. Pods use it with imagePullPolicy Never or
#     IfNotPresent: there is no registry to pull from.
#   * Archives are cached by content: $CACHE/images/<name>-<hash of this script and the inputs>.oci.tar, so a
#     changed input gives a new file and an unchanged one is never rebuilt. Not covered by the hash: the
#     apt mirror's state (Debian packages are not pinned by version); delete the archive to rebuild.
#
# Usage: hack/node-images.sh node   # localhost/pause:<PAUSE_VERSION>, localhost/coredns:<COREDNS_VERSION>,
#                                   # localhost/traefik:<TRAEFIK_VERSION> (the cluster's Gateway)
#        hack/node-images.sh test   # localhost/test/python:1 (Debian's python3, for the e2e tests' pods)
#        hack/node-images.sh minio  # localhost/minio:<MINIO_VERSION> (the examples' S3 server, for `make run`),
#                                   # listed in $CACHE/images/run-manifest.tsv, not the node's: test clusters
#                                   # started with --node-images-only then do not import its 110 MB
#        hack/node-images.sh prometheus  # localhost/prometheus:debian (Debian trixie's package, scraping the
#                                   # examples' pods for canary analysis), also in run-manifest.tsv
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
CACHE=${MLFLOW_OPERATOR_CACHE:-$HOME/.cache/mlflow-operator}
IMAGES="$CACHE/images"
MANIFEST="$IMAGES/node-manifest.tsv"  # `minio` sets its own
SUITE=bookworm   # the host's Debian: mmdebstrap then takes the host's apt sources, no mirror argument

log() { echo "[node-images] $*" >&2; }

# One run at a time: two would rewrite the manifest concurrently.
mkdir -p "$IMAGES"
exec 9>"$IMAGES/.node-images.lock"
flock 9

content_key() {  # stdin: the inputs; prints a short hash of them and of this script
  { cat "$0"; cat; } | sha256sum | cut -c1-16
}

# Lists ARCHIVE under REF in the manifest, replacing an older line for REF (renamed into place: a reader
# never sees half a manifest).
register() {
  local ref=$1 archive=$2
  { [ -f "$MANIFEST" ] && awk -F'\t' -v ref="$ref" '$2 != ref' "$MANIFEST"
    printf '%s\t%s\n' "$archive" "$ref"; } > "$MANIFEST.partial"
  mv "$MANIFEST.partial" "$MANIFEST"
}

# Packs LAYOUT (an OCI layout holding REF) into ARCHIVE atomically: a half-written archive is never cached.
archive_layout() {
  local layout=$1 archive=$2
  umoci gc --layout "$layout"
  tar -C "$layout" -cf "$archive.tmp" .
  mv "$archive.tmp" "$archive"
}

# A 1-layer image holding one static binary as its entrypoint.
binary_image() {
  local ref=$1 binary=$2 user=$3 name key archive work
  name=$(basename "$binary")
  key=$( { printf '%s %s\n' "$ref" "$user"; sha256sum < "$binary"; } | content_key)
  archive="$IMAGES/$name-$key.oci.tar"
  if [ ! -s "$archive" ]; then
    log "building $ref"
    mkdir -p "$IMAGES"
    work=$(mktemp -d); trap 'rm -rf "$work"; trap - RETURN' RETURN
    umoci init --layout "$work/oci"
    umoci new --image "$work/oci:${ref##*:}"
    # insert adds a path as a new layer without unpacking a bundle (no rootless/unpack step needed).
    umoci insert --image "$work/oci:${ref##*:}" "$binary" "/$name"
    umoci config --image "$work/oci:${ref##*:}" --architecture amd64 --os linux \
      --config.entrypoint "/$name" --config.user "$user"
    archive_layout "$work/oci" "$archive"
  fi
  register "$ref" "$archive"
  log "$ref: $archive"
}

# A 1-layer image of Debian packages (mmdebstrap's "essential" variant plus PACKAGES, no apt, no docs):
# the rootfs tarball becomes the layer as is (umoci raw add-layer), nothing is unpacked.
debian_image() {
  local ref=$1 packages=$2 suite=${3:-$SUITE} key archive work mirrors=()
  # Another suite than the host's comes from the same mirror as the host's (deb.debian.org).
  if [ "$suite" != "$SUITE" ]; then
    mirrors=("deb http://deb.debian.org/debian $suite main" "deb http://deb.debian.org/debian $suite-updates main"
             "deb http://deb.debian.org/debian-security $suite-security main")
  fi
  key=$(printf '%s %s %s\n' "$ref" "$packages" "$suite" | content_key)
  archive="$IMAGES/$(basename "${ref%%:*}")-$key.oci.tar"
  if [ ! -s "$archive" ]; then
    log "building $ref from Debian $suite packages: $packages (~1 min)"
    mkdir -p "$IMAGES"
    work=$(mktemp -d); trap 'rm -rf "$work"; trap - RETURN' RETURN
    nice -n 19 mmdebstrap --quiet --variant=essential --include="$packages" --format=tar \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
      --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
      "$suite" "$work/rootfs.tar" "${mirrors[@]}"
    umoci init --layout "$work/oci"
    umoci new --image "$work/oci:${ref##*:}"
    umoci raw add-layer --image "$work/oci:${ref##*:}" "$work/rootfs.tar"
    umoci config --image "$work/oci:${ref##*:}" --architecture amd64 --os linux \
      --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --config.env LANG=C.UTF-8
    archive_layout "$work/oci" "$archive"
  fi
  register "$ref" "$archive"
  log "$ref: $archive"
}

node_images() {
  local pause="$CACHE/bin/pause-$PAUSE_VERSION/pause" coredns="$CACHE/bin/coredns-$COREDNS_VERSION/coredns"
  local traefik="$CACHE/bin/traefik-$TRAEFIK_VERSION/traefik"
  [ -x "$pause" ] || "$here/build-binaries.sh" pause
  [ -x "$coredns" ] || "$here/build-binaries.sh" coredns
  [ -x "$traefik" ] || "$here/build-binaries.sh" traefik
  # 65535 and 65532 are the users of upstream's pause, CoreDNS and Traefik images (all run as non-root).
  binary_image "localhost/pause:$PAUSE_VERSION" "$pause" 65535:65535
  binary_image "localhost/coredns:${COREDNS_VERSION#v}" "$coredns" 65532:65532
  binary_image "localhost/traefik:${TRAEFIK_VERSION#v}" "$traefik" 65532:65532
}

minio_image() {
  local minio="$CACHE/bin/minio-$MINIO_VERSION/minio"
  [ -x "$minio" ] || "$here/build-binaries.sh" minio
  MANIFEST="$IMAGES/run-manifest.tsv"
  # MinIO's binary is static (CGO off): it needs no root filesystem; 10001 like the project's other images.
  binary_image "localhost/minio:$MINIO_VERSION" "$minio" 10001:10001
}

case "${1:-node}" in
  node) node_images ;;
  minio) minio_image ;;
  test) debian_image localhost/test/python:1 python3,ca-certificates ;;
  # Debian's Prometheus from trixie (2.53): bookworm's 2.42 is built without Kubernetes service discovery.
  # Its binary links glibc, so the image is a Debian root filesystem rather than the binary alone.
  prometheus) MANIFEST="$IMAGES/run-manifest.tsv"; debian_image localhost/prometheus:debian prometheus trixie ;;
  *) echo "usage: $0 [node|test|minio|prometheus]" >&2; exit 2 ;;
esac
