#!/usr/bin/env bash
# Host set-up for edr on Debian 12: bcc from apt, kernel headers bcc can
# compile against, tracefs.  Idempotent: every step checks before it acts.
# Needs root.  Prints what it does; a failure names the missing piece.
set -euo pipefail

log() { printf 'setup_host: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  log "must run as root (apt packages, kernel headers, tracefs)"; exit 1
fi

# rsyslog and prometheus: the sink and metrics tests run the real servers (started by the tests themselves);
# minisign: the rule pack tests check py-minisign's signatures against the reference tool
pkgs=(python3-bpfcc python3-venv python3-dev build-essential linux-headers-amd64 libyara-dev rsyslog prometheus
      minisign)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The running kernel may have no matching headers package (custom or cloud
# kernels).  bcc only needs *a* header tree for tracepoint programs, whose
# record layouts it reads from tracefs at load time, so link the distro's.
kver=$(uname -r)
moddir=/lib/modules/$kver
if [ ! -e "$moddir/build/include" ]; then
  hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$hdr" ]; then
    log "no /usr/src/linux-headers-*-amd64 after installing linux-headers-amd64"; exit 1
  fi
  common=${hdr%-amd64}-common
  mkdir -p "$moddir"
  ln -sfn "$hdr" "$moddir/build"
  [ -d "$common" ] && ln -sfn "$common" "$moddir/source"
  log "linked $moddir/build -> $hdr"
fi

if [ ! -e /sys/kernel/tracing/events ]; then
  mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || log "could not mount tracefs at /sys/kernel/tracing"
fi
if [ ! -e /sys/kernel/debug/tracing ] && [ -d /sys/kernel/debug ]; then
  mount -t debugfs nodev /sys/kernel/debug 2>/dev/null || true
fi
log "host ready (kernel $kver)"
