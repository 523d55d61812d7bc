#!/usr/bin/env bash
# Host install for Viper on Debian 12, as root. Idempotent: run it again to update.
#
#   scripts/install.sh            Debian packages, a venv in /opt/viper with the server, agent
#                                 and CLI, and the commands linked into /usr/local/bin.
#   scripts/install.sh --dev      What the tests need instead: Debian packages plus nox and uv in
#                                 ./.venv (nox makes its own venvs per session).
#   scripts/install.sh --dry-run  Print what would be done, change nothing.
#
# Environment: VIPER_PREFIX (default /opt/viper), VIPER_BIN_DIR (default /usr/local/bin).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=${VIPER_PREFIX:-/opt/viper}
BIN_DIR=${VIPER_BIN_DIR:-/usr/local/bin}
PYTHON=${PYTHON:-python3}
DRY_RUN=0
MODE=host

# chromium: the browser; qemu: the microVM runtime; iproute2/nftables: host networking for VMs;
# the rest builds the guest image (build/images) without docker.
APT_PACKAGES=(
  chromium fonts-liberation ca-certificates
  qemu-system-x86 qemu-utils
  iproute2 nftables
  mmdebstrap busybox-static cpio zstd lz4 e2fsprogs gcc libc6-dev
)

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }

for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    --dev) MODE=dev ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf '==> %s\n' "$*"; }
run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '+ %s\n' "$*"
  else
    "$@"
  fi
}

missing_packages() {
  local pkg
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || echo "$pkg"
  done
}

install_debian_packages() {
  local missing
  missing=$(missing_packages | tr '\n' ' ')
  if [ -z "${missing// /}" ]; then
    say "Debian packages already installed"
    return
  fi
  if [ "$(id -u)" != 0 ] && [ "$DRY_RUN" = 0 ]; then
    echo "install.sh: installing Debian packages needs root (missing: $missing)" >&2
    exit 1
  fi
  say "installing Debian packages: $missing"
  run apt-get update -q
  # shellcheck disable=SC2086
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
}

ensure_venv() {
  local venv=$1
  if [ -x "$venv/bin/python" ]; then
    say "venv $venv exists"
  else
    say "creating venv $venv"
    run "$PYTHON" -m venv "$venv"
  fi
  run "$venv/bin/python" -m pip install -q --upgrade pip
}

install_host() {
  ensure_venv "$PREFIX"
  local wheels="$PREFIX/wheels"
  say "building the Viper wheels into $wheels"
  run rm -rf "$wheels"
  run mkdir -p "$wheels"
  run "$PREFIX/bin/python" -m pip wheel -q --no-deps -w "$wheels" \
    "$ROOT/packages/viper-protocol" "$ROOT/packages/viper-agent" \
    "$ROOT/packages/viper-server" "$ROOT/packages/viper-cli"
  say "installing viper-server (with the process runtime's agent) and viper-cli"
  run "$PREFIX/bin/python" -m pip install -q --force-reinstall --no-deps "$wheels"/*.whl
  run "$PREFIX/bin/python" -m pip install -q --find-links "$wheels" \
    "viper-server[process]" viper-cli
  say "copying the image pipeline's sources to $PREFIX/src (for 'viper images build')"
  run rm -rf "$PREFIX/src"
  run mkdir -p "$PREFIX/src/build"
  run cp -r "$ROOT/packages" "$PREFIX/src/packages"
  run cp -r "$ROOT/build/images" "$PREFIX/src/build/images"
  local cmd
  for cmd in viper-server viper-agent viper; do
    run ln -sfn "$PREFIX/bin/$cmd" "$BIN_DIR/$cmd"
  done
  say "done: run 'viper-server' (state in ~/.viper), then 'viper vms create demo';"
  say "for microVMs: 'viper images build' then 'viper setup' (see docs/image-pipeline.md)"
}

install_dev() {
  ensure_venv "$ROOT/.venv"
  say "installing nox and uv into $ROOT/.venv"
  run "$ROOT/.venv/bin/python" -m pip install -q "nox>=2024.4" "uv>=0.4"
  say "done: run '.venv/bin/nox' (nox -l lists the sessions)"
}

install_debian_packages
if [ "$MODE" = dev ]; then
  install_dev
else
  install_host
fi
