# Sourced by scripts/test and scripts/example: one venv in .venv with the project installed.
# Installs Debian packages named in $FINCONN_APT (only those missing) when running as root.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

apt_missing=()
for pkg in ${FINCONN_APT:-}; do
  case "$pkg" in
    chromium) command -v chromium >/dev/null 2>&1 || apt_missing+=(chromium) ;;
    postgresql) compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || apt_missing+=(postgresql) ;;
    redis-server) command -v redis-server >/dev/null 2>&1 || apt_missing+=(redis-server) ;;
    *) apt_missing+=("$pkg") ;;
  esac
done
if ((${#apt_missing[@]})); then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "Installing Debian packages: ${apt_missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${apt_missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# One stamp per set of extras: ./scripts/example installing [postgres] must not let
# ./scripts/test skip installing [test] (pytest, Playwright) afterwards.
stamp=".venv/.finconn-installed-${FINCONN_EXTRAS:-test}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q -U pip
  .venv/bin/python -m pip install -q -e ".[${FINCONN_EXTRAS:-test}]"
  touch "$stamp"
fi
