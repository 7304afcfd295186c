#!/usr/bin/env bash
# Images for the real single-node cluster, built here without a registry (nothing can be pulled):
#   localhost/safehold-test/debian:bookworm  Debian bookworm minbase, debootstrap'd from the
#                                            machine's own Debian mirror (/etc/apt/sources.list*)
#   localhost/safehold-test/pause:1          the sandbox image: images/pause/pause.c, static
# Both live in buildah's storage; the runner image is built FROM the first one by the test
# fixture (tests/infra/images.py), because it changes with the source.
#
# Cached in the machine-wide cache ($SAFEHOLD_MACHINE_CACHE, default ~/.cache/safehold/images),
# keyed by a hash of their inputs (mirror, suite, variant, pause.c): the rootfs tarball
# (debian-<key>.tar) and the pause image archive (pause-<key>.oci.tar). A machine with them
# imports in seconds; a changed input builds anew. Idempotent: a no-op when both images are in
# buildah's storage with the current key (kept in the image label dev.safehold.input).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${SAFEHOLD_MACHINE_CACHE:-$HOME/.cache/safehold}/images"
BASE_REF="localhost/safehold-test/debian:bookworm"
PAUSE_REF="localhost/safehold-test/pause:1"
SUITE=bookworm
VARIANT=minbase

for tool in buildah debootstrap gcc; do
  command -v "$tool" >/dev/null || { echo "60-node-images: $tool missing (scripts/infra/50-node-packages.sh)" >&2; exit 1; }
done
mkdir -p "$cache"
sha() { sha256sum | cut -c1-16; }
label_of() {  # the input key an image in buildah's storage was built from, or nothing
  buildah inspect --type image --format '{{index .OCIv1.Config.Labels "dev.safehold.input"}}' "$1" 2>/dev/null || true
}

# --- the machine's Debian mirror: first deb822 URIs (or one-line `deb`) entry serving $SUITE ---
mirror=""
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  mirror="$(awk -v s="$SUITE" '/^URIs:/{u=$2} /^Suites:/{for(i=2;i<=NF;i++) if($i==s){print u; exit}}' "$f")"
  [ -n "$mirror" ] && break
done
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror="$(awk -v s="$SUITE" '$1=="deb" && $3==s {print $2; exit}' /etc/apt/sources.list)"
fi
[ -n "$mirror" ] || { echo "60-node-images: no Debian $SUITE mirror in /etc/apt/sources.list*" >&2; exit 1; }

# --- base image: debootstrap (~2 min, once per machine) -> rootfs tarball -> buildah image ---
base_key="$(printf '%s\n' "v1" "$SUITE" "$VARIANT" "$mirror" | sha)"
if [ "$(label_of "$BASE_REF")" != "$base_key" ]; then
  tarball="$cache/debian-$SUITE-$VARIANT-$base_key.tar"
  if [ ! -s "$tarball" ]; then
    echo "60-node-images: debootstrap $SUITE ($VARIANT) from $mirror (~2 min, once per machine)" >&2
    work="$(mktemp -d /tmp/safehold-debootstrap.XXXXXX)"
    trap 'rm -rf "$work"' EXIT
    debootstrap --variant="$VARIANT" "$SUITE" "$work/rootfs" "$mirror" >"$work/log" 2>&1 ||
      { tail -30 "$work/log" >&2; exit 1; }
    # the same mirror (and updates) for apt inside image builds; the mirror may be a snapshot
    printf 'deb %s %s main\ndeb %s %s-updates main\n' "$mirror" "$SUITE" "$mirror" "$SUITE" \
      > "$work/rootfs/etc/apt/sources.list"
    printf 'Acquire::Check-Valid-Until "false";\n' > "$work/rootfs/etc/apt/apt.conf.d/99safehold"
    rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
    tar --numeric-owner -C "$work/rootfs" -cf "$tarball.tmp.$$" .
    mv -f "$tarball.tmp.$$" "$tarball"
    rm -rf "$work"
    trap - EXIT
  fi
  echo "60-node-images: importing $tarball as $BASE_REF" >&2
  ctr="$(buildah from scratch)"
  buildah add --quiet "$ctr" "$tarball" / >/dev/null
  buildah config --cmd '["/bin/bash"]' --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --label "dev.safehold.input=$base_key" "$ctr"
  buildah commit --quiet --rm "$ctr" "$BASE_REF" >/dev/null
fi

# --- pause image: the pod sandbox's init (reaps zombies, exits on SIGTERM) ---
pause_src="$root/images/pause/pause.c"
pause_key="$( (echo v1; cat "$pause_src") | sha)"
if [ "$(label_of "$PAUSE_REF")" != "$pause_key" ]; then
  archive="$cache/pause-$pause_key.oci.tar"
  if [ ! -s "$archive" ]; then
    work="$(mktemp -d /tmp/safehold-pause.XXXXXX)"
    trap 'rm -rf "$work"' EXIT
    gcc -static -Os -o "$work/pause" "$pause_src"
    strip "$work/pause"
    ctr="$(buildah from scratch)"
    buildah copy --quiet "$ctr" "$work/pause" /pause >/dev/null
    buildah config --entrypoint '["/pause"]' --label "dev.safehold.input=$pause_key" "$ctr"
    buildah commit --quiet --rm "$ctr" "$PAUSE_REF" >/dev/null
    buildah push --quiet "$PAUSE_REF" "oci-archive:$archive.tmp.$$:$PAUSE_REF"
    mv -f "$archive.tmp.$$" "$archive"
    rm -rf "$work"
    trap - EXIT
  else
    buildah pull --quiet "oci-archive:$archive" >/dev/null
    buildah tag "$(buildah images --quiet --filter "label=dev.safehold.input=$pause_key" | head -1)" "$PAUSE_REF"
  fi
fi
