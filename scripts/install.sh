#!/usr/bin/env bash
# Installs companion on Debian 12 / Raspberry Pi OS bookworm and starts `companion run`.
#   ./scripts/install.sh                 install, then run the daemon with the default config
#   ./scripts/install.sh --no-run        install only
#   ./scripts/install.sh -- ARGS...      install, then `companion run ARGS...`
# Idempotent: running it again only installs what is missing.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
venv=${COMPANION_VENV:-$here/.venv}
run=1
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-run) run=0 ;;
    --) shift; args=("$@"); break ;;
    *) args+=("$1") ;;
  esac
  shift
done

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)

need=()
for pkg in libopus0 libportaudio2 python3-venv python3-pip; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
# miniaudio has no aarch64 wheel: it builds from source there.
if [ "$(uname -m)" != "x86_64" ]; then
  for pkg in gcc python3-dev; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
  done
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing system packages: ${need[*]}"
  apt_log=$(mktemp)
  # apt and dpkg print a line per unpacked package even with -qq: keep them in a log, shown on failure.
  if ! { "${sudo_cmd[@]}" apt-get update -qq &&
         DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${need[@]}"; } >"$apt_log" 2>&1; then
    cat "$apt_log" >&2
    echo "install.sh: installing ${need[*]} failed (see above)" >&2
    exit 1
  fi
  rm -f "$apt_log"
fi

python=${PYTHON:-python3}
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q "$here"

# Put `companion` on the PATH, so that the README's commands run as written: /usr/local/bin for root,
# ~/.local/bin (on the PATH of Debian's default login shell once it exists) for anyone else.
if [ "$(id -u)" -eq 0 ]; then bindir=/usr/local/bin; else bindir=$HOME/.local/bin; fi
mkdir -p "$bindir"
ln -sf "$venv/bin/companion" "$bindir/companion"
echo "installed: $("$venv/bin/companion" --version)  ($bindir/companion -> $venv/bin/companion)"
case ":$PATH:" in
  *":$bindir:"*) ;;
  *) echo "note: $bindir is not on your PATH yet; open a new login shell, or run $bindir/companion" ;;
esac

if [ "$run" -eq 1 ]; then
  exec "$venv/bin/companion" run "${args[@]}"
fi
