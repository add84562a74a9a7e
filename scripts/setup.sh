# Shared set-up for `make run` and `make test` (sourced, not executed).
# Creates the virtualenv, installs the pinned packages, and makes sure the
# services are there: Redis always; nginx and Chromium for the tests.
# Installs Debian packages with apt-get when something is missing and we can
# (root, or passwordless sudo); otherwise says exactly what to install.

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
VENV="$ROOT/.venv"
RUN_DIR="$ROOT/.run"
mkdir -p "$RUN_DIR"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"
    else return 1
    fi
}

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null || die "missing $*: install it with your package manager"
    say "installing Debian packages: $*"
    if [ "$APT_UPDATED" = 0 ]; then
        as_root apt-get update -qq || die "cannot run apt-get (need root or sudo) to install: $*"
        APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null \
        || die "apt-get could not install: $*"
}

pick_python() {
    for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3.10 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
            echo "$candidate"; return
        fi
    done
    die "Python 3.10 or newer is required (set PYTHON=/path/to/python3)"
}

pick_python_312() {  # a working Python >= 3.12 (for Django 6.x), if any
    for candidate in python3.13 python3.12 "$HOME"/.pyenv/versions/3.1[2-9]*/bin/python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
            echo "$candidate"; return 0
        fi
    done
    return 1
}

ensure_venv() {  # $1: requirements file
    local requirements="$1" stamp="$VENV/.installed-$(basename "$1")"
    if [ ! -x "$VENV/bin/python" ]; then
        local python; python="$(pick_python)"
        say "creating virtualenv with $python"
        if ! "$python" -m venv "$VENV" 2>/dev/null; then
            rm -rf "$VENV"
            apt_install python3-venv
            "$python" -m venv "$VENV"
        fi
    fi
    local wanted; wanted="$(cat requirements*.txt | sha256sum | cut -c1-16)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
        say "installing $requirements"
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q -r "$requirements"
        echo "$wanted" > "$stamp"
    fi
}

redis_up() {  # $1: URL (any form EVENTS["REDIS_URL"] accepts, Sentinel and TLS included)
    "$VENV/bin/python" - "$1" <<'PY' 2>/dev/null
import sys
sys.path.insert(0, ".")
from events.backends.redis_url import parse, sync_client
sync_client(parse(sys.argv[1]), socket_connect_timeout=1).ping()
PY
}

ensure_redis_binary() {
    command -v redis-server >/dev/null || apt_install redis-server
}

ensure_redis() {  # starts a local Redis for REDIS_URL if none answers
    local url="${REDIS_URL:-redis://127.0.0.1:6379/0}"
    ensure_redis_binary
    if redis_up "$url"; then return; fi
    local port
    port="$("$VENV/bin/python" -c 'import sys; from urllib.parse import urlsplit; u = urlsplit(sys.argv[1]); print(u.port or 6379) if u.scheme == "redis" and u.hostname in ("127.0.0.1", "localhost") else print("")' "$url" 2>/dev/null || true)"
    # Never print the URL itself: it may hold a password.
    [ -n "$port" ] || die "Redis at REDIS_URL does not answer, and it is not a plain local redis:// URL, so it cannot be started here"
    say "starting a local redis-server on port $port (data in .run/, not persisted)"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
        --dir "$RUN_DIR" --logfile "$RUN_DIR/redis-$port.log" --pidfile "$RUN_DIR/redis-$port.pid"
    for _ in $(seq 50); do redis_up "$url" && return; sleep 0.1; done
    die "redis-server did not come up on port $port (see .run/redis-$port.log)"
}

ensure_test_services() {
    command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || apt_install nginx
    # The TLS tests make a throw-away CA and certificates with openssl.
    command -v openssl >/dev/null || apt_install openssl
    [ -x /usr/bin/chromium ] || apt_install chromium
    # Fonts, so screenshots show text. Nice to have, so never fatal.
    have_fonts || install_fonts
    ensure_htmx
}

have_fonts() {
    # Not `fc-list | grep -q .`: under pipefail, grep -q exits at the first line,
    # fc-list then dies of SIGPIPE and the pipeline reports "no fonts".
    [ -n "$(fc-list 2>/dev/null || true)" ]
}

install_fonts() {
    if command -v apt-get >/dev/null && { [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; then
        apt_install fonts-dejavu-core
    else
        say "no fonts found (fc-list): browser screenshots will show boxes; install fonts-dejavu-core to fix"
    fi
}

HTMX_VERSION="2.0.11"
ensure_htmx() {  # htmx 2 from npm, for the browser tests only (never shipped): .run/npm/
    [ -f "$RUN_DIR/npm/node_modules/htmx.org/dist/htmx.min.js" ] && return
    command -v npm >/dev/null || apt_install npm
    say "installing htmx.org@$HTMX_VERSION from npm (browser tests only)"
    npm install --silent --no-audit --no-fund --prefix "$RUN_DIR/npm" "htmx.org@$HTMX_VERSION" >/dev/null \
        || die "npm could not install htmx.org@$HTMX_VERSION"
}
