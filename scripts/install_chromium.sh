#!/bin/sh
# `make browser`: Chromium for tests/browser, from the system's Debian/Ubuntu packages (Playwright's
# own browser download is never used). Quick when Chromium is already there. Where it cannot be
# installed (no apt-get, not root and no password-less sudo, no network) it says so loudly and
# exits 0: the browser tests are then skipped with a banner, and everything else still runs.
set -u

warn() {
    echo "################################################################################" >&2
    echo "# Chromium NOT installed: $1" >&2
    echo "# The browser tests (tests/browser) will be SKIPPED." >&2
    echo "# Install it by hand: apt-get install -y chromium (or set DIFFUSION_CHROMIUM)." >&2
    echo "################################################################################" >&2
    exit 0
}

if [ -n "${DIFFUSION_CHROMIUM:-}" ] && [ -x "${DIFFUSION_CHROMIUM}" ]; then
    exit 0
fi
for name in chromium chromium-browser google-chrome; do
    command -v "$name" >/dev/null 2>&1 && exit 0
done

command -v apt-get >/dev/null 2>&1 || warn "no apt-get on this machine"
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    warn "installing packages needs root or password-less sudo"
fi

echo "make browser: installing chromium from the system's packages (about a minute)..." >&2
$SUDO apt-get update -qq >/dev/null || warn "apt-get update failed"
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core \
    >/dev/null || warn "apt-get install chromium failed"
command -v chromium >/dev/null 2>&1 || warn "chromium is still not on the PATH"
echo "make browser: $(chromium --version 2>/dev/null)" >&2
