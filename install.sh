#!/bin/sh
# Installs stackdump from this directory for root, with the system Python, on Debian or
# Ubuntu (whose python3 refuses `pip install` outside a virtualenv: PEP 668):
#   - a virtualenv in $STACKDUMP_PREFIX (default /opt/stackdump), made by $PYTHON
#     (default /usr/bin/python3; Debian's python3-venv is installed first if missing);
#   - a symlink $STACKDUMP_BINDIR/stackdump (default /usr/local/bin), on root's PATH and on
#     sudo's secure_path, so `stackdump` and `sudo stackdump` both work.
# It replaces nothing that it did not make: an existing stackdump command or prefix that is
# not this installation's stops it with a message.
set -eu
cd "$(dirname "$0")"
PYTHON="${PYTHON:-/usr/bin/python3}"
PREFIX="${STACKDUMP_PREFIX:-/opt/stackdump}"
BINDIR="${STACKDUMP_BINDIR:-/usr/local/bin}"
link="$BINDIR/stackdump"

say() { echo "install.sh: $*" >&2; }

if [ -e "$link" ] || [ -L "$link" ]; then
    if [ "$(readlink "$link" || true)" != "$PREFIX/bin/stackdump" ]; then
        say "$link exists and is not this installation's link; remove it or set STACKDUMP_BINDIR"
        exit 1
    fi
fi
if [ -e "$PREFIX" ] && [ ! -e "$PREFIX/pyvenv.cfg" ]; then
    say "$PREFIX exists and is not a virtualenv; remove it or set STACKDUMP_PREFIX"
    exit 1
fi
if ! { [ -x "$PYTHON" ] && "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; }; then
    if command -v apt-get >/dev/null 2>&1; then
        say "installing python3 and python3-venv with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null
    else
        say "$PYTHON cannot make a virtualenv (no venv or ensurepip module); set PYTHON"
        exit 1
    fi
fi
"$PYTHON" -m venv "$PREFIX"
"$PREFIX/bin/python" -m pip install -q --disable-pip-version-check .
mkdir -p "$BINDIR"
ln -sfn "$PREFIX/bin/stackdump" "$link"
say "installed $link -> $PREFIX/bin/stackdump"
