#!/usr/bin/env bash
# Builds racklift's inventory ramdisk: vmlinuz (Debian's linux-image-amd64)
# and initrd.img (busybox-static, the drivers of common NICs and disks with
# their dependencies, and a static racklift-agent started by /init).
#
#   boot-assets/build-ramdisk.sh [--out DIR] [--agent FILE]
#
# Packages come from the machine's configured Debian mirror (apt-get
# download), nothing from elsewhere. The output is reproducible: fixed mtimes
# (SOURCE_DATE_EPOCH), sorted cpio entries, owner 0:0, single-threaded zstd.
# Downloads are kept in $RAMDISK_CACHE (default ~/.cache/racklift-ramdisk);
# when nothing changed since the last build the outputs are left as they are.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
out="$here/ramdisk"
agent=""
while (($#)); do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --agent) agent=$2; shift 2 ;;
    *) echo "usage: $0 [--out DIR] [--agent FILE]" >&2; exit 2 ;;
  esac
done
cache=${RAMDISK_CACHE:-${HOME:-/root}/.cache/racklift-ramdisk}
mkdir -p "$cache" "$out"
log() { printf 'ramdisk: %s\n' "$*" >&2; }

# Drivers to include (their dependencies are added from modules.dep).
modules=(
  virtio_pci virtio_net virtio_blk virtio_scsi
  e1000 e1000e igb ixgbe i40e ice mlx5_core bnxt_en tg3
  ahci nvme megaraid_sas mpt3sas sd_mod
  crc64_rocksoft_generic crct10dif_generic
  bonding efivarfs ipmi_si ipmi_devintf
)

# --- the agent ----------------------------------------------------------------
if [ -z "$agent" ]; then
  log "building racklift-agent (static)"
  (cd "$repo" && cargo rustc --locked --quiet --no-default-features --bin racklift-agent -- -C target-feature=+crt-static)
  agent="${CARGO_TARGET_DIR:-$repo/target}/debug/racklift-agent"
fi
# Packed from a copy taken now: a later ordinary build of the same target
# directory replaces the binary with a dynamically linked one.
agent_copy=$(mktemp)
trap 'rm -f "$agent_copy"' EXIT
cp "$agent" "$agent_copy"
agent=$agent_copy
if readelf -d "$agent" 2>/dev/null | grep -q NEEDED || readelf -l "$agent" 2>/dev/null | grep -q INTERP; then
  echo "ramdisk: $agent is dynamically linked; it must be static" >&2
  exit 1
fi

# --- packages -----------------------------------------------------------------
kpkg=$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n1)
[ -n "$kpkg" ] || { echo "ramdisk: cannot resolve linux-image-amd64 (apt-get update?)" >&2; exit 1; }
fetch() { # package -> path of its .deb in the cache
  local p=$1 v deb
  v=$(apt-cache policy "$p" | sed -n 's/^ *Candidate: //p')
  deb=$(ls "$cache"/"${p}"_*"${v#*:}"_amd64.deb 2>/dev/null | head -n1 || true)
  if [ -z "$deb" ]; then
    log "downloading $p $v"
    (cd "$cache" && apt-get download -q "$p=$v" 2>/dev/null >&2)
    deb=$(ls "$cache"/"${p}"_*"${v#*:}"_amd64.deb | head -n1)
  fi
  echo "$deb"
}
kdeb=$(fetch "$kpkg")
bdeb=$(fetch busybox-static)

stamp=$( (sha256sum "$0" "$agent" "$kdeb" "$bdeb"; echo "${SOURCE_DATE_EPOCH:-}") | sha256sum | cut -c1-16)
if [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$stamp" ] && [ -f "$out/initrd.img" ] && [ -f "$out/vmlinuz" ]; then
  log "up to date in $out"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work" "$agent_copy"' EXIT
dpkg-deb -x "$kdeb" "$work/k"
dpkg-deb -x "$bdeb" "$work/b"
kver=$(ls "$work/k/lib/modules" | head -n1)
depmod -b "$work/k" "$kver"
# Default time stamp: the kernel image's own (fixed by its package).
epoch=${SOURCE_DATE_EPOCH:-$(stat -c %Y "$work/k/boot/vmlinuz-$kver")}

# --- the tree -----------------------------------------------------------------
r="$work/root"
mkdir -p "$r"/{bin,sbin,etc,proc,sys,dev,run,tmp,lib/modules,usr/share/udhcpc}
cp "$work/b/bin/busybox" "$r/bin/busybox"
for a in $("$r/bin/busybox" --list); do
  [ "$a" = busybox ] || ln -s busybox "$r/bin/$a"
done
install -m 0755 "$agent" "$r/bin/racklift-agent"
strip "$r/bin/racklift-agent"

# Modules in load order: each one's dependencies first.
mdir="$work/k/lib/modules/$kver"
declare -A seen=()
order=()
add() { # relative path of a module
  local rel=$1 deps d
  [ -n "${seen[$rel]:-}" ] && return 0
  seen[$rel]=1
  deps=$(grep -E "^$rel:" "$mdir/modules.dep" | cut -d: -f2)
  # modules.dep lists dependencies so that the last is loaded first.
  for d in $(echo $deps | tr ' ' '\n' | tac); do add "$d"; done
  order+=("$rel")
}
for m in "${modules[@]}"; do
  rel=$(grep -E "(^|/)${m//_/[_-]}\.ko:" "$mdir/modules.dep" | cut -d: -f1 | head -n1)
  if [ -z "$rel" ]; then
    grep -qE "/${m//_/[_-]}\.ko$" "$mdir/modules.builtin" && continue
    echo "ramdisk: module $m not found in $kver" >&2; exit 1
  fi
  add "$rel"
done
# The chosen modules, with modules.dep and modules.alias made for just them,
# so /init loads only what the machine's devices ask for.
sub="$work/sub/lib/modules/$kver"
mkdir -p "$sub"
cp "$mdir"/modules.builtin "$mdir"/modules.builtin.modinfo "$sub/"
for rel in "${order[@]}"; do
  mkdir -p "$sub/$(dirname "$rel")"
  cp "$mdir/$rel" "$sub/$rel"
done
printf '%s\n' "${order[@]}" > "$sub/modules.order"
depmod -b "$work/sub" "$kver"
mkdir -p "$r/lib/modules"
cp -a "$sub" "$r/lib/modules/"
rm -f "$r/lib/modules/$kver"/*.bin "$r/lib/modules/$kver"/modules.builtin.modinfo

cat > "$r/usr/share/udhcpc/default.script" <<'SCRIPT'
#!/bin/sh
# udhcpc's hook: configure the address, the default route and DNS.
case "$1" in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    for r in $router; do ip route replace default via "$r" dev "$interface"; break; done
    : > /etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
    ;;
esac
exit 0
SCRIPT
chmod 0755 "$r/usr/share/udhcpc/default.script"

cat > "$r/init" <<'SCRIPT'
#!/bin/sh
# racklift ramdisk: mount the kernel's file systems, load the drivers, bring
# up the boot NIC with DHCP, then run racklift-agent.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
uptime_s() { cut -d' ' -f1 /proc/uptime; }
echo "racklift-ramdisk: init started (uptime $(uptime_s) s)"
# Drivers for the devices present: each bus device's modalias, twice (the
# first pass brings buses such as virtio whose devices then ask in turn);
# then SCSI disks (found asynchronously), efivarfs and the IPMI device.
for _ in 1 2; do
  cat /sys/bus/*/devices/*/modalias 2>/dev/null | sort -u | xargs -r modprobe -qab 2>/dev/null
done
modprobe -qa sd_mod efivarfs ipmi_si ipmi_devintf 2>/dev/null
echo "racklift-ramdisk: drivers loaded (uptime $(uptime_s) s)"
[ -d /sys/firmware/efi/efivars ] && mount -t efivarfs efivarfs /sys/firmware/efi/efivars 2>/dev/null
mdev -s 2>/dev/null
ip link set lo up
bootif=$(sed -n 's/.*BOOTIF=01-\([0-9a-fA-F-]*\).*/\1/p' /proc/cmdline | tr 'A-F-' 'a-f:')
# NICs show up asynchronously: wait up to 10 s for the boot one (or any).
for _ in $(seq 40); do
  found=0
  for n in /sys/class/net/*; do
    [ -e "$n/device" ] || continue
    if [ -z "$bootif" ] || [ "$(cat "$n/address")" = "$bootif" ]; then found=1; fi
  done
  [ "$found" = 1 ] && break
  sleep 0.25
done
nics=""
for n in /sys/class/net/*; do
  [ -e "$n/device" ] || continue
  ip link set "${n##*/}" up
  if [ "$(cat "$n/address")" = "$bootif" ]; then nics="${n##*/} $nics"; else nics="$nics ${n##*/}"; fi
done
up=""
for n in $nics; do
  if udhcpc -i "$n" -n -q -t 4 -T 2 -s /usr/share/udhcpc/default.script >/dev/null 2>&1; then up=$n; break; fi
done
echo "racklift-ramdisk: network ${up:-not configured} ($(ip -4 -o addr show dev "${up:-lo}" | awk '{print $4}'), uptime $(uptime_s) s)"
if grep -qw racklift.capture /proc/cmdline; then
  # Fixture capture: every file the agent reads, as a base64 tar.gz on the console.
  racklift-agent --capture /tmp/capture --print > /dev/null
  echo "racklift-capture-begin"
  tar -C /tmp/capture -cz . | base64
  echo "racklift-capture-end"
  poweroff -f
fi
racklift-agent
rc=$?
echo "racklift-ramdisk: racklift-agent ended with status $rc"
echo "racklift-ramdisk: a shell is on the console; the machine stays up"
exec setsid cttyhack sh
SCRIPT
chmod 0755 "$r/init"

# --- pack -----------------------------------------------------------------------
find "$r" -exec touch -h -d "@$epoch" {} +
(cd "$r" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc --reproducible -R 0:0) |
  zstd -q -19 -T1 > "$work/initrd.img"
cp "$work/k/boot/vmlinuz-$kver" "$work/vmlinuz"
touch -d "@$epoch" "$work/vmlinuz" "$work/initrd.img"
mv "$work/vmlinuz" "$work/initrd.img" "$out/"
(cd "$out" && sha256sum vmlinuz initrd.img > SHA256SUMS)
echo "$stamp" > "$out/.stamp"
kb=$(stat -c %s "$out/vmlinuz"); ib=$(stat -c %s "$out/initrd.img")
log "kernel $kver, ${#order[@]} modules"
log "vmlinuz $((kb / 1024)) KiB, initrd.img $((ib / 1024)) KiB, together $(((kb + ib) / 1048576)) MiB, in $out"
