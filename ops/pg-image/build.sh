#!/usr/bin/env bash
# Builds the PostgreSQL 15 image the testcontainers run of the suite uses,
# without any image registry: Debian bookworm from the Debian mirror that apt is
# configured with on this machine, postgresql-15 from the same mirror, imported
# into Docker and finished with ./Dockerfile.
#
#   tag=$(DOCKER_HOST=unix:///run/pg-governor-docker/docker.sock bash ops/pg-image/build.sh)
#   PG_TEST_IMAGE=$tag ... npm test
#
# Prints the image's tag, pg-governor/postgres:15-<hash>, as its only line on
# stdout (progress goes to stderr). <hash> is taken over this folder's files, so
# an unchanged recipe finds its image already there and returns in about a
# second; a changed one builds anew (about a minute: most of it debootstrap).
# Needs root, debootstrap, a Docker engine (DOCKER_HOST) and the Debian mirror.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SUITE=bookworm # postgresql-15 is bookworm's PostgreSQL
hash=$(cd "$here" && cat build.sh Dockerfile docker-entrypoint.sh | sha256sum | cut -c1-12)
tag="pg-governor/postgres:15-$hash"
base="pg-governor/postgres-base:$SUITE-$hash"

log() { printf '[pg-image] %s\n' "$*" >&2; }

if docker image inspect "$tag" >/dev/null 2>&1; then
  log "$tag is already built"
  echo "$tag"
  exit 0
fi

# The mirror as apt has it configured (sources.list or deb822 .sources alike):
# the site that serves the bookworm release itself (not -updates or -security).
mirror=$(apt-get indextargets --format '$(SITE) $(RELEASE) $(IDENTIFIER)' 2>/dev/null |
  awk -v suite="$SUITE" '$2 == suite && $3 == "Packages" { print $1; exit }')
if [[ -z "$mirror" ]]; then
  log "apt has no source for Debian $SUITE (apt-get indextargets shows none; run apt-get update?)"
  exit 1
fi
# The chroot takes bookworm's updates and security suites too, from wherever apt has them.
sources=$(apt-get indextargets --format '$(SITE) $(RELEASE) $(COMPONENT) $(IDENTIFIER)' 2>/dev/null |
  awk -v suite="$SUITE" '$4 == "Packages" && ($2 == suite || $2 == suite "-updates" || $2 == suite "-security") { print "deb " $1 " " $2 " " $3 }' | sort -u)
log "building $tag from $mirror"

work=$(mktemp -d "${TMPDIR:-/tmp}/pg-image.XXXXXX")
root="$work/root"
cleanup() {
  # Never leave a mount behind inside a folder we are about to delete.
  if mountpoint -q "$root/proc" 2>/dev/null; then umount "$root/proc" || umount -l "$root/proc"; fi
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
trap 'exit 143' TERM INT # so that a timeout still runs cleanup

started=$SECONDS
debootstrap --variant=minbase "$SUITE" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  log "debootstrap failed; the end of its log:"
  tail -n 20 "$work/debootstrap.log" >&2
  exit 1
}
log "debootstrap done in $((SECONDS - started))s"

# Installing postgresql-15 must neither start a server nor create a cluster:
# the entry point makes the one cluster, in PGDATA, on the container's first start.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
mkdir -p "$root/etc/postgresql-common/createcluster.d"
echo 'create_main_cluster = false' >"$root/etc/postgresql-common/createcluster.d/pg-governor.conf"
printf '%s\n' "$sources" >"$root/etc/apt/sources.list"
cp /etc/resolv.conf "$root/etc/resolv.conf"
mount -t proc proc "$root/proc"
chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
  sh -c 'apt-get update -q && apt-get install -y -q --no-install-recommends postgresql-15' >"$work/apt.log" 2>&1 || {
  log "installing postgresql-15 in the chroot failed; the end of its log:"
  tail -n 20 "$work/apt.log" >&2
  exit 1
}
umount "$root/proc"
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root/etc/resolv.conf" "$root"/var/log/*.log "$root"/var/cache/debconf/*-old \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
[[ -x "$root/usr/lib/postgresql/15/bin/postgres" ]] || { log "postgresql-15 did not install a server"; exit 1; }
log "postgresql-15 installed in $((SECONDS - started))s: $(chroot "$root" /usr/lib/postgresql/15/bin/postgres --version)"

tar --numeric-owner -C "$root" -c . | docker import - "$base" >/dev/null
DOCKER_BUILDKIT=0 docker build --quiet --build-arg "BASE=$base" --tag "$tag" "$here" >"$work/build.log" 2>&1 || {
  log "docker build failed:"
  cat "$work/build.log" >&2
  exit 1
}
docker image rm "$base" >/dev/null 2>&1 || true
# Images of earlier recipes are of no more use.
docker image ls --format '{{.Repository}}:{{.Tag}}' 'pg-governor/postgres' | grep -vxF "$tag" | xargs -r docker image rm >/dev/null 2>&1 || true
log "built $tag in $((SECONDS - started))s ($(docker image inspect "$tag" --format '{{.Size}}' | awk '{ printf "%d MB", $1 / 1e6 }'))"
echo "$tag"
