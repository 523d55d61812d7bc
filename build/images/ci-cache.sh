#!/bin/sh
# CI cache of the Viper guest image: build once per input hash, reuse everywhere after.
#
#   build/images/ci-cache.sh [--cache-root DIR] [--link-to DIR]
#
# The key is `build.py --print-key`: a hash over every stage's inputs (kernel package version,
# package list and trims, viper-init.c, the viper-agent and viper-protocol sources, the recipe).
# A hit at <cache-root>/<key>/manifest.json (default /var/cache/viper-images, outside the clone)
# is reused as is; a miss builds with build.py (its work dir also lives under the cache root, so a
# partial change, e.g. only the agent, rebuilds only the stages it touches) and installs there.
# The ready directory is printed on the last line of stdout and linked to --link-to (default
# build/artifacts), so tests find the image where they always look. Old keys beyond the newest
# three are pruned.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache_root=${VIPER_IMAGE_CACHE:-/var/cache/viper-images}
link_to=$repo/build/artifacts
python=${PYTHON:-python3}

while [ $# -gt 0 ]; do
    case $1 in
        --cache-root) cache_root=$2; shift 2 ;;
        --link-to) link_to=$2; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "ci-cache.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

key=$("$python" "$here/build.py" --print-key)
dest=$cache_root/$key
mkdir -p "$cache_root"

if [ -f "$dest/manifest.json" ] && (cd "$dest" && sha256sum --quiet -c SHA256SUMS); then
    echo "ci-cache: hit $key" >&2
else
    echo "ci-cache: miss $key: building" >&2
    # One builder at a time per cache root; a second CI job waits and then hits.
    exec 9>"$cache_root/.lock"
    flock 9
    if ! { [ -f "$dest/manifest.json" ] && (cd "$dest" && sha256sum --quiet -c SHA256SUMS); }; then
        rm -rf "$dest" "$dest.tmp"
        "$python" "$here/build.py" --work "$cache_root/work" --artifacts "$dest.tmp"
        rm -rf "$dest"
        mv "$dest.tmp" "$dest"
    fi
    flock -u 9
    # Keep the newest three complete images.
    ls -1dt "$cache_root"/*/ 2>/dev/null | grep -v '/work/$' | tail -n +4 | while read -r old; do
        rm -rf "$old"
    done
fi

if [ -n "$link_to" ]; then
    mkdir -p "$link_to"
    # Big files as hard links (same file system) or sparse copies; the small ones copied, so
    # nothing written into the link directory later can change the cache.
    for f in vmlinuz vmlinux-x86_64 initrd.img rootfs.ext4; do
        rm -f "$link_to/$f"
        ln "$dest/$f" "$link_to/$f" 2>/dev/null || cp --sparse=always "$dest/$f" "$link_to/$f"
    done
    for f in SHA256SUMS manifest.json; do
        rm -f "$link_to/$f"
        cp "$dest/$f" "$link_to/$f"
    done
fi
echo "$dest"
