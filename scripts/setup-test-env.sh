#!/usr/bin/env bash
# Installs and starts what racklift's tests need on a fresh Debian machine of
# this project's kind, and does nothing that is already done. Run as root.
#
# Today: a PostgreSQL server on 127.0.0.1:5432 that accepts the `postgres` user
# without a password (the PostgreSQL pass of the test suite uses it);
# OpenIPMI's `ipmi_sim` with `ipmitool` (the IPMI driver's tests and benchmark
# start their own simulated BMCs on loopback; nothing runs as a service); and
# the TFTP peers of tests/tftp.rs and benches/tftp.rs (atftp, curl, tftpd-hpa;
# the tftpd-hpa service is not started: the bench runs in.tftpd itself); the
# DHCP clients and peer servers of tests/dhcp.rs and benches/dhcp.rs (udhcpc,
# dhclient, dnsmasq, Kea and perfdhcp; no service is started) and Debian's
# iPXE binaries; and sushy-tools from PyPI in the virtualenv
# /opt/racklift-peers (its `sushy-emulator --fake` is the Redfish BMC of
# tests/redfish.rs, started by each test on a port of its own); and for
# tests/qemu_agent.rs, QEMU with SeaBIOS and OVMF plus the inventory ramdisk
# built by boot-assets/build-ramdisk.sh (cached: a re-run with nothing changed
# takes seconds).
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }

apt_updated=0
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  if ((apt_updated == 0)); then
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt_updated=1
  fi
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# --- IPMI: a simulated BMC and a reference client ---------------------------
apt_install openipmi ipmitool

# --- TFTP clients and the peer server ---------------------------------------
apt_install atftp curl tftpd-hpa

# --- DHCP: real clients, peer servers, the benchmark, iPXE boot files -------
# Never run these on the machine's own interface: the tests use network
# namespaces and give every client a script and resolv.conf of its own.
apt_install udhcpc isc-dhcp-client dnsmasq-base kea-dhcp4-server kea-admin ipxe iproute2
# IPv6 router discovery as a host does it (rdisc6), for the router advertisements.
apt_install ndisc6
# A machine that really network-boots: QEMU with its iPXE option ROMs.
apt_install qemu-system-x86 ipxe-qemu
# The reference HTTP server of benches/http.rs (not started as a service).
apt_install nginx-light

# --- Redfish: sushy-tools' emulator in a virtualenv ---------------------------
peers=/opt/racklift-peers
sushy_version=2.2.0
apt_install python3-venv
if ! "$peers/bin/sushy-emulator" --help >/dev/null 2>&1 ||
  [ "$("$peers/bin/pip" show sushy-tools 2>/dev/null | sed -n 's/^Version: //p')" != "$sushy_version" ]; then
  log "installing sushy-tools $sushy_version into $peers"
  /usr/bin/python3 -m venv "$peers"
  "$peers/bin/pip" install -q --disable-pip-version-check "sushy-tools==$sushy_version"
fi

# --- QEMU and the inventory ramdisk ----------------------------------------
# (qemu-utils is left out on purpose: it conflicts with a backport some
# machines carry; the tests use sparse raw disks.)
apt_install ovmf busybox-static cpio zstd kmod binutils
if ! apt-cache policy linux-image-amd64 | grep -q 'Candidate: [0-9]'; then
  apt-get update -qq
fi
log "building the inventory ramdisk"
bash "$(dirname "$0")/../boot-assets/build-ramdisk.sh"

# --- PostgreSQL ------------------------------------------------------------
if ! command -v pg_lsclusters >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
  apt_install postgresql postgresql-client
fi
ver=$(ls /etc/postgresql | sort -V | tail -n1)
hba=/etc/postgresql/$ver/main/pg_hba.conf
# Tests connect as postgres over TCP without a password: trust loopback only.
if [ -f "$hba" ] && ! grep -Eq '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$hba"; then
  log "allowing passwordless loopback connections in $hba"
  sed -i -E 's/^(host\s+all\s+all\s+127\.0\.0\.1\/32\s+)\S+/\1trust/' "$hba"
  grep -Eq '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$hba" || echo "host all all 127.0.0.1/32 trust" >> "$hba"
  pg_ctlcluster --skip-systemctl-redirect "$ver" main reload 2>/dev/null || true
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  log "starting PostgreSQL $ver"
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start
fi
for _ in $(seq 1 60); do
  pg_isready -q -h 127.0.0.1 -p 5432 && break
  sleep 0.5
done
pg_isready -h 127.0.0.1 -p 5432 >/dev/null || { log "PostgreSQL did not come up"; exit 1; }
# Databases left by an interrupted earlier run.
psql -h 127.0.0.1 -U postgres -d postgres -Atqc \
  "SELECT datname FROM pg_database WHERE datname LIKE 'rl\_test\_%'" 2>/dev/null |
  while read -r db; do psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; done
# schemathesis (scripts/schemathesis.sh) in a virtualenv of its own, pinned.
if ! /opt/racklift-schemathesis/bin/schemathesis --version 2>/dev/null | grep -q '4\.32\.5'; then
  log "installing schemathesis 4.32.5 into /opt/racklift-schemathesis"
  python3 -m venv /opt/racklift-schemathesis
  /opt/racklift-schemathesis/bin/pip install -q 'schemathesis==4.32.5'
fi
log "ready"
