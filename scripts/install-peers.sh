#!/usr/bin/env bash
# Install the real iSCSI peers the interop tests drive (tests/interop, tools/interop):
#   libiscsi-bin  iscsi-ls, iscsi-inq, iscsi-readcapacity16, iscsi-perf, iscsi-test-cu
#   tgt           tgtd + tgtadm (the reference target our initiator is checked against)
#   tshark        decodes our captures and reports malformed packets / expert errors
# Debian 12, run as root (or with sudo available). Idempotent: installed packages are skipped.
# Never fails the caller because a peer is missing: it prints what is missing and exits 0, so
# the interop tests can skip with that reason. Exit status 2 only if it was asked to be strict:
#   DATAMOVER_PEERS_STRICT=1   exit 2 when any peer binary is still missing at the end
set -uo pipefail

packages=(libiscsi-bin tgt tshark)
# binary -> package, checked after the install: what the tests actually need
binaries=(
    "iscsi-ls:libiscsi-bin" "iscsi-inq:libiscsi-bin" "iscsi-readcapacity16:libiscsi-bin"
    "iscsi-perf:libiscsi-bin" "iscsi-test-cu:libiscsi-bin"
    "tgtd:tgt" "tgtadm:tgt" "tshark:tshark"
)

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@";
    elif command -v sudo >/dev/null 2>&1; then sudo -n "$@";
    else echo "install-peers: not root and no sudo; cannot run: $*" >&2; return 1; fi
}

missing_pkgs=()
for pkg in "${packages[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing_pkgs+=("$pkg")
done

if [ ${#missing_pkgs[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        echo "install-peers: installing ${missing_pkgs[*]}"
        # tshark's postinst asks whether non-root users may capture: answer "no" beforehand.
        echo "wireshark-common wireshark-common/install-setuid boolean false" \
            | as_root debconf-set-selections 2>/dev/null || true
        as_root apt-get update -qq || echo "install-peers: apt-get update failed" >&2
        # One package at a time so that one unavailable package does not block the others.
        for pkg in "${missing_pkgs[@]}"; do
            as_root apt-get install -y -qq --no-install-recommends \
                -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$pkg" >/dev/null \
                || echo "install-peers: apt-get install $pkg failed" >&2
        done
    else
        echo "install-peers: no apt-get on this machine; cannot install ${missing_pkgs[*]}" >&2
    fi
fi

# The tgt package starts a system tgtd on 3260 via systemd where systemd runs; the tests start
# their own tgtd on other ports and another control port, so a system one does no harm.

missing=()
for entry in "${binaries[@]}"; do
    bin=${entry%%:*}; pkg=${entry#*:}
    if command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ]; then
        :
    else
        missing+=("$bin (package $pkg)")
    fi
done

if [ ${#missing[@]} -gt 0 ]; then
    echo "install-peers: still missing: ${missing[*]}" >&2
    echo "install-peers: the interop tests that need them will skip and say so" >&2
    [ "${DATAMOVER_PEERS_STRICT:-0}" = 1 ] && exit 2
    exit 0
fi
echo "install-peers: all peers present (libiscsi-bin, tgt, tshark)"
