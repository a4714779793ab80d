# Sourced by scripts/test, scripts/example and scripts/screenshots: one venv in .venv with the
# project installed, after checking Python and installing what is missing with apt.
#
#   FINCONN_APT     Debian packages the caller needs (chromium, postgresql, redis-server)
#   FINCONN_EXTRAS  the project's extras to install (default: test)
#   FINCONN_PYTHON  the interpreter that builds .venv (default: python3)
#
# Exports FINCONN_CHROMIUM (the browser the tests and screenshots drive) when chromium is
# asked for. Nothing here leaves a half-made .venv behind: a failed build is removed, and a
# .venv built from another pyproject.toml or Python is rebuilt, never reused silently.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

_say() { echo "==> $*" >&2; }
_die() { echo "error: $*" >&2; exit 1; }

# 1. Python 3.11+, said in one line when missing or older.
python=${FINCONN_PYTHON:-python3}
command -v "$python" >/dev/null 2>&1 ||
  _die "Python 3.11+ is needed and '$python' is not on PATH; install python3 (apt-get install python3) or set FINCONN_PYTHON."
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  _die "Flask-FinConn needs Python 3.11 or newer; '$python' is $("$python" -V 2>&1). Install a newer one and set FINCONN_PYTHON=/path/to/python3.11 (or newer)."
pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

# apt-get as root, or through sudo otherwise; its progress stays visible (a slow mirror is
# not a hang).
_apt_install() {
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 ||
      _die "Installing $* needs root: run this as root, install sudo, or install them yourself."
    sudo=(sudo)
  fi
  command -v apt-get >/dev/null 2>&1 ||
    _die "$* must be installed, and this is not a Debian or Ubuntu system (no apt-get): install them with your package manager."
  _say "Installing with apt-get: $* (${sudo[*]:-as root})"
  "${sudo[@]}" apt-get update
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "$@"
}

# A chromium that runs headless: Ubuntu's chromium package is only a shim that starts the
# snap, and snaps do not run in containers.
_chromium_works() {
  local exe=$1
  [ -x "$exe" ] || return 1
  case "$(readlink -f "$exe")" in /snap/*) return 1 ;; esac
  if grep -Iqs "/snap/\|snap run\|snap install" "$exe"; then return 1; fi
  timeout 60 "$exe" --headless --no-sandbox --version >/dev/null 2>&1
}
_is_ubuntu() { grep -qs '^ID=ubuntu\|^ID_LIKE=.*ubuntu' /etc/os-release; }

# 2. Debian packages the caller asked for, only those missing.
apt_missing=()
chromium_fallback=""
for pkg in ${FINCONN_APT:-}; do
  case "$pkg" in
    chromium)
      if [ -n "${FINCONN_CHROMIUM:-}" ]; then
        _chromium_works "$FINCONN_CHROMIUM" ||
          _die "FINCONN_CHROMIUM=$FINCONN_CHROMIUM does not run headless (try '$FINCONN_CHROMIUM --headless --version'); unset it or point it at a working Chromium."
      elif command -v chromium >/dev/null 2>&1; then
        if ! _chromium_works "$(command -v chromium)"; then
          _say "$(command -v chromium) does not run headless here (Ubuntu's snap shim does not run in a container); using Playwright's own Chromium instead."
          chromium_fallback=1
        fi
      elif _is_ubuntu; then
        _say "Ubuntu's chromium package is a snap shim that does not run headless in a container; using Playwright's own Chromium instead."
        chromium_fallback=1
      else
        apt_missing+=(chromium)
      fi
      ;;
    postgresql) compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || apt_missing+=(postgresql) ;;
    redis-server) command -v redis-server >/dev/null 2>&1 || apt_missing+=(redis-server) ;;
    *) apt_missing+=("$pkg") ;;
  esac
done
if ((${#apt_missing[@]})); then
  _apt_install "${apt_missing[@]}"
fi
if [[ " ${apt_missing[*]} " == *" chromium "* ]] && ! _chromium_works "$(command -v chromium)"; then
  _say "The chromium apt installed does not run headless here; using Playwright's own Chromium instead."
  chromium_fallback=1
fi

# 3. The venv. Its stamp is a hash of pyproject.toml and the exact Python: when either
# changed since .venv was built, it is rebuilt from scratch (removed dependencies go too).
want=$({ cat pyproject.toml; "$python" -VV; readlink -f "$(command -v "$python")"; } | sha256sum | cut -c1-16)
if [ -d .venv ]; then
  have=$(cat .venv/.finconn-stamp 2>/dev/null || true)
  if [ "$have" != "$want" ]; then
    if [ -z "$have" ]; then
      _say "Removing .venv: an unfinished build or one made by hand."
    else
      _say "Rebuilding .venv: pyproject.toml or Python changed since it was built."
    fi
    rm -rf .venv
  fi
fi
_make_venv() {
  # pip comes from ensurepip; check it answers, since a venv without it is useless.
  "$python" -m venv .venv >&2 && .venv/bin/python -m pip --version >/dev/null 2>&1
}
if [ ! -d .venv ]; then
  _say "Creating .venv with $("$python" -V 2>&1)"
  if ! _make_venv; then
    rm -rf .venv
    # Debian and Ubuntu ship venv and ensurepip in their own packages.
    _say "'$python -m venv' failed (Debian and Ubuntu ship it separately); installing python3-venv."
    _apt_install python3-venv "python$pyver-venv"
    if ! _make_venv; then
      rm -rf .venv
      _die "'$python -m venv .venv' still fails after installing python3-venv; run it by hand to see why."
    fi
  fi
  _say "Installing pip"
  .venv/bin/python -m pip install -q -U pip || { rm -rf .venv; _die "Could not upgrade pip in .venv (network?); run again."; }
  echo "$want" >.venv/.finconn-stamp
fi
# One stamp per set of extras: ./scripts/example installing [postgres] must not let
# ./scripts/test skip installing [test] (pytest, Playwright) afterwards. The project itself
# is built into .venv once: a later set of extras only adds its own requirements, which pip
# finds already satisfied (silently) when an earlier set brought them ([test] holds
# [postgres]). A stamp is written only after pip succeeded, so an interrupted install is
# retried on the next run.
extras=${FINCONN_EXTRAS:-test}
stamp=".venv/.finconn-installed-$extras"
if [ ! -f "$stamp" ]; then
  if compgen -G ".venv/.finconn-installed-*" >/dev/null; then
    mapfile -t wanted < <(.venv/bin/python -c '
import sys, tomllib
with open("pyproject.toml", "rb") as fh:
    optional = tomllib.load(fh)["project"]["optional-dependencies"]
for extra in sys.argv[1].split(","):
    print("\n".join(optional[extra]))
' "$extras")
    _say "Adding what extras [$extras] need to .venv (the project is installed already)"
    .venv/bin/python -m pip install -q "${wanted[@]}"
  else
    _say "Installing the project with extras [$extras] into .venv"
    .venv/bin/python -m pip install -q -e ".[$extras]"
  fi
  touch "$stamp"
fi

# 4. Playwright's own Chromium when the system one cannot run headless. It downloads from
# Playwright's CDN; the system libraries it needs come from apt (as root or with sudo).
if [ -n "$chromium_fallback" ]; then
  .venv/bin/python -c 'import playwright' 2>/dev/null || .venv/bin/python -m pip install -q playwright
  deps=()
  if [ "$(id -u)" = 0 ] || command -v sudo >/dev/null 2>&1; then deps=(--with-deps); fi
  _say "Downloading Playwright's Chromium (python -m playwright install ${deps[*]} chromium)"
  .venv/bin/python -m playwright install "${deps[@]}" chromium ||
    _die "Could not download Playwright's Chromium; install a Chromium that runs headless and set FINCONN_CHROMIUM=/path/to/it."
  FINCONN_CHROMIUM=$(.venv/bin/python -c 'from playwright.sync_api import sync_playwright
with sync_playwright() as p: print(p.chromium.executable_path)')
  _say "Browser tests use $FINCONN_CHROMIUM (FINCONN_CHROMIUM)"
fi
if [[ " ${FINCONN_APT:-} " == *" chromium "* ]]; then
  export FINCONN_CHROMIUM=${FINCONN_CHROMIUM:-$(command -v chromium)}
fi
