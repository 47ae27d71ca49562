#!/usr/bin/env bash
# Installs everything the tests need (system packages, a virtualenv with the test extras) and runs
# the whole suite. Extra arguments go to pytest, e.g. ./scripts/test.sh -k endpointer
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
venv=${COMPANION_VENV:-$here/.venv}

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)

# Runtime libraries, a private PulseAudio with null sinks (a real sound card for the tests), speech
# synthesis and sox for test audio, socat for serial pty pairs, mosquitto as the MQTT broker, and
# systemd for `systemd-analyze verify`, and jackd2 for a sound device that takes only 48 kHz.
pkgs=(libopus0 libportaudio2 python3-venv python3-pip pulseaudio pulseaudio-utils libasound2-plugins
      espeak-ng sox socat mosquitto systemd jackd2)
need=()
for pkg in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing system packages: ${need[*]}"
  apt_log=$(mktemp)
  # apt and dpkg print a line per unpacked package even with -qq: keep them in a log, shown on failure.
  if ! { "${sudo_cmd[@]}" apt-get update -qq &&
         DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
           "${need[@]}"; } >"$apt_log" 2>&1; then
    cat "$apt_log" >&2
    echo "test.sh: installing ${need[*]} failed (see above)" >&2
    exit 1
  fi
  rm -f "$apt_log"
fi

python=${PYTHON:-python3}
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
# An editable install, so that the tests' `python -m companion` runs this tree; setuptools' warning about
# editable installs (a package folder beside the project file) says nothing we do not mean.
PYTHONWARNINGS="ignore:Editable installation" "$venv/bin/pip" install -q -e "$here[test]"

"$venv/bin/ruff" check companion firmware_bridge tests bench
"$venv/bin/mypy"  # the files are set in pyproject.toml: companion, firmware_bridge, tests and bench
exec "$venv/bin/pytest" -q "$@"
