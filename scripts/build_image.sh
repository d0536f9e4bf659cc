#!/usr/bin/env bash
# Build the pipeline's image from containers/Dockerfile with podman, on a machine that reaches no container
# registry: the base (Debian bookworm, the Dockerfile's default base) is bootstrapped from Debian's package
# mirror with debootstrap and imported once. Re-running is cached (seconds).
#
#   bash scripts/build_image.sh            build virnucpro-extract:<version> (podman's local storage)
#   bash scripts/build_image.sh --save     also write containers/virnucpro-extract_<version>.tar (docker-archive),
#                                          which containers/virnucpro-extract.def converts for Apptainer
#
# Needs podman, runc and debootstrap (Debian: apt-get install podman runc debootstrap) and root for debootstrap.
# Where a registry is reachable, plain `podman build --format docker -f containers/Dockerfile .` does the same
# from the Dockerfile's own base.
#
# Podman settings for machines like CI's (a containers.conf of the project's, not /etc's): runc, since crun
# cannot set rlimits under these cgroups, and no default ulimits for it to set.
# The host's extra CA certificates (those update-ca-certificates adds from /usr/local/share/ca-certificates)
# are copied into the bootstrapped base, with a pip.conf naming the bundle, so that apt and pip inside the
# build reach the mirrors as the host does; images built from a registry's base do not get them.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="$(sed -n 's/^VERSION = "\(.*\)"$/\1/p' "$repo/bin/virnucpro_extract/defaults.py")"
image="virnucpro-extract:${version}"
base="localhost/virnucpro-extract-base:bookworm"
save=false
[[ "${1:-}" == "--save" ]] && save=true

for tool in podman runc debootstrap; do
    if ! command -v "$tool" >/dev/null; then
        echo "error: $tool: -: not installed — apt-get install podman runc debootstrap (Debian/Ubuntu)" >&2
        exit 1
    fi
done

export CONTAINERS_CONF="$repo/containers/containers.conf"

if ! podman image exists "$base"; then
    if [[ "$(id -u)" != 0 ]]; then
        echo "error: $base: -: debootstrap needs root — run this script as root once (the base is kept), or build with a registry's base: podman build --format docker -f containers/Dockerfile ." >&2
        exit 1
    fi
    rootfs="$(mktemp -d /tmp/virnucpro-base.XXXXXX)"
    trap 'rm -rf "$rootfs"' EXIT
    echo "build_image: bootstrapping Debian bookworm (minbase) into $rootfs" >&2
    debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
    cat > "$rootfs/etc/apt/sources.list" <<'SOURCES'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SOURCES
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        mkdir -p "$rootfs/usr/local/share/ca-certificates" "$rootfs/etc/ssl/certs"
        cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
        cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
        printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$rootfs/etc/pip.conf"
    fi
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$base" >/dev/null
    echo "build_image: base image $base" >&2
fi

started=$SECONDS
podman build --format docker --build-arg "BASE_IMAGE=$base" -t "$image" -f "$repo/containers/Dockerfile" "$repo"
echo "build_image: $image built in $((SECONDS - started)) s ($(podman image inspect --format '{{.Size}}' "$image") bytes)" >&2

if $save; then
    archive="$repo/containers/virnucpro-extract_${version}.tar"
    rm -f "$archive"
    podman save --format docker-archive -o "$archive" "$image"
    echo "build_image: $archive" >&2
fi
