#!/usr/bin/env bash
# A private Docker engine for the testcontainers run of the test suite, and the
# way to take it down again leaving the machine's network as it was found.
#
#   bash ops/docker-engine.sh up      # start dockerd; prints DOCKER_HOST=... on its last line
#   bash ops/docker-engine.sh down    # stop it by its pid, remove its containers, restore the network
#   bash ops/docker-engine.sh status  # prints whether it runs
#
# Why it is private: dockerd listens on its own socket (not /var/run/docker.sock)
# with its own data and exec roots, so nothing else on the machine discovers it
# (another test run that finds a Docker engine would try to pull an image from a
# registry), and everything it holds is ours to remove.
#
# Why these flags: --iptables=false, --ip-forward=false and --ip-masq=false keep
# dockerd off the machine's firewall and forwarding (a plain dockerd leaves nft
# tables with FORWARD set to DROP and ip_forward set to 1 behind it); with them a
# container reaches nothing beyond its own bridge network. --ip=127.0.0.1 binds
# published ports on the loopback only; docker-proxy carries 127.0.0.1:<port> to
# the container. `down` still compares the nft ruleset, ip_forward and the docker0
# bridge with what `up` recorded, and puts back whatever differs.
#
# Why a cgroup of its own (cgroup v1 machines): all of a container's processes
# share one cgroup, and with the cpu controller of cgroup v1 a cgroup weighs as
# much as ONE process outside it (cpu.shares 1024 each). On a busy machine (other
# test suites, embedded servers) the containerized PostgreSQL then gets a sliver
# of the CPU and timing-sensitive tests see connects and queries slowed several
# times. Containers go under CGROUP (--cgroup-parent), whose cpu.shares is set
# to DOCKER_ENGINE_CPU_SHARES (8192: as much as eight busy processes outside);
# `down` removes that cgroup again.
#
# Knobs: DOCKER_ENGINE_WAIT (seconds to wait for the engine to answer, 30),
#        DOCKER_ENGINE_CPU_SHARES (8192).
set -euo pipefail

STATE=/run/pg-governor-docker
SOCKET="$STATE/docker.sock"
DATA_ROOT=/var/lib/pg-governor-docker
PIDFILE="$STATE/dockerd.pid"
LOG="$STATE/dockerd.log"
SAVED="$STATE/network-before"
CGROUP=pg-governor-docker
CGROUP_V1_CPU=/sys/fs/cgroup/cpu

docker_cli() { DOCKER_HOST="unix://$SOCKET" docker "$@"; }

answers() { [[ -S "$SOCKET" ]] && docker_cli version --format '{{.Server.Version}}' >/dev/null 2>&1; }

running_pid() {
  local pid
  [[ -s "$PIDFILE" ]] || return 1
  pid=$(<"$PIDFILE")
  [[ -d "/proc/$pid" ]] && grep -q dockerd "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

# What `down` puts back: the nft ruleset, forwarding switches, whether docker0 existed.
record_network() {
  mkdir -p "$SAVED"
  if command -v nft >/dev/null 2>&1; then nft list ruleset >"$SAVED/nft.ruleset"; fi
  cat /proc/sys/net/ipv4/ip_forward >"$SAVED/ipv4_forward"
  cat /proc/sys/net/ipv6/conf/all/forwarding >"$SAVED/ipv6_forward" 2>/dev/null || true
  if ip link show docker0 >/dev/null 2>&1; then echo yes; else echo no; fi >"$SAVED/docker0"
}

restore_network() {
  [[ -d "$SAVED" ]] || { echo "no record of the network before the engine started; nothing restored"; return 0; }
  local changed=()
  if [[ -f "$SAVED/nft.ruleset" ]] && ! nft list ruleset | cmp -s - "$SAVED/nft.ruleset"; then
    # Put back exactly what was there (an empty file flushes to nothing).
    { echo 'flush ruleset'; cat "$SAVED/nft.ruleset"; } | nft -f -
    changed+=('nft ruleset')
  fi
  if [[ "$(cat /proc/sys/net/ipv4/ip_forward)" != "$(cat "$SAVED/ipv4_forward")" ]]; then
    cat "$SAVED/ipv4_forward" >/proc/sys/net/ipv4/ip_forward
    changed+=('net.ipv4.ip_forward')
  fi
  if [[ -s "$SAVED/ipv6_forward" && "$(cat /proc/sys/net/ipv6/conf/all/forwarding)" != "$(cat "$SAVED/ipv6_forward")" ]]; then
    cat "$SAVED/ipv6_forward" >/proc/sys/net/ipv6/conf/all/forwarding
    changed+=('net.ipv6.conf.all.forwarding')
  fi
  if [[ "$(cat "$SAVED/docker0")" == no ]] && ip link show docker0 >/dev/null 2>&1; then
    ip link delete docker0
    changed+=('docker0 bridge removed')
  fi
  # Check, not hope: say what is still different.
  local left=()
  if [[ -f "$SAVED/nft.ruleset" ]] && ! nft list ruleset | cmp -s - "$SAVED/nft.ruleset"; then left+=('nft ruleset'); fi
  [[ "$(cat /proc/sys/net/ipv4/ip_forward)" == "$(cat "$SAVED/ipv4_forward")" ]] || left+=('ip_forward')
  if [[ "$(cat "$SAVED/docker0")" == no ]] && ip link show docker0 >/dev/null 2>&1; then left+=('docker0'); fi
  if ((${#changed[@]})); then echo "network put back: ${changed[*]}"; else echo "network unchanged by the engine"; fi
  if ((${#left[@]})); then
    echo "!!! network NOT as before: ${left[*]}" >&2
    return 1
  fi
  rm -rf "$SAVED"
}

up() {
  if pid=$(running_pid) && answers; then
    echo "engine already running (pid $pid)"
    echo "DOCKER_HOST=unix://$SOCKET"
    return 0
  fi
  command -v dockerd >/dev/null 2>&1 || { echo "dockerd is not installed (apt-get install docker.io)" >&2; return 1; }
  mkdir -p "$STATE" "$DATA_ROOT"
  rm -f "$SOCKET" "$PIDFILE"
  record_network
  local cgroup_flag=()
  if [[ -f "$CGROUP_V1_CPU/cpu.shares" ]]; then
    mkdir -p "$CGROUP_V1_CPU/$CGROUP"
    echo "${DOCKER_ENGINE_CPU_SHARES:-8192}" >"$CGROUP_V1_CPU/$CGROUP/cpu.shares"
    cgroup_flag=(--cgroup-parent "/$CGROUP")
  fi
  # setsid: the engine must not die with the shell that started it, nor take a terminal's signals.
  setsid dockerd \
    --host "unix://$SOCKET" \
    --data-root "$DATA_ROOT" \
    --exec-root "$STATE/exec" \
    --pidfile "$PIDFILE" \
    --iptables=false --ip-forward=false --ip-masq=false \
    --ip=127.0.0.1 \
    "${cgroup_flag[@]}" \
    --log-level=warn \
    </dev/null >"$LOG" 2>&1 &
  local started=$SECONDS wait="${DOCKER_ENGINE_WAIT:-30}"
  until answers; do
    if ! kill -0 $! 2>/dev/null; then
      echo "dockerd exited while starting; its log:" >&2
      tail -n 20 "$LOG" >&2
      restore_network >&2 || true
      return 1
    fi
    if ((SECONDS - started >= wait)); then
      echo "dockerd did not answer within ${wait}s; its log:" >&2
      tail -n 20 "$LOG" >&2
      down >&2 || true
      return 1
    fi
    sleep 0.5
  done
  echo "engine up in $((SECONDS - started))s: Docker $(docker_cli version --format '{{.Server.Version}}'), pid $(<"$PIDFILE"), storage $(docker_cli info --format '{{.Driver}}')"
  echo "DOCKER_HOST=unix://$SOCKET"
}

down() {
  local pid status=0
  if pid=$(running_pid); then
    # Containers first (the reaper is off in our runs, so a crashed run can leave one); all of them are ours.
    local containers
    containers=$(docker_cli ps -aq 2>/dev/null || true)
    if [[ -n "$containers" ]]; then
      # shellcheck disable=SC2086
      docker_cli rm -f $containers >/dev/null || true
    fi
    local containerd_pid=''
    [[ -s "$STATE/exec/containerd/containerd.pid" ]] && containerd_pid=$(<"$STATE/exec/containerd/containerd.pid")
    kill -TERM "$pid"
    for _ in $(seq 1 60); do
      [[ -d "/proc/$pid" ]] || break
      sleep 0.5
    done
    if [[ -d "/proc/$pid" ]]; then
      echo "dockerd (pid $pid) did not stop in 30s; killing it" >&2
      kill -KILL "$pid" || true
    fi
    # dockerd stops the containerd it started; if it could not, stop that one too, by its pid.
    if [[ -n "$containerd_pid" && -d "/proc/$containerd_pid" ]] && grep -q containerd "/proc/$containerd_pid/cmdline" 2>/dev/null; then
      kill -TERM "$containerd_pid" || true
    fi
    echo "engine stopped (pid $pid)"
  else
    echo "engine not running"
  fi
  rm -f "$SOCKET" "$PIDFILE"
  # The containers' cgroups (in every controller's hierarchy); empty once the containers are gone.
  local group
  for group in /sys/fs/cgroup/*/"$CGROUP"; do
    [[ -d "$group" ]] || continue
    find "$group" -depth -type d -exec rmdir {} + 2>/dev/null || echo "could not remove the cgroup $group (still in use?)" >&2
  done
  restore_network || status=$?
  return "$status"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) if pid=$(running_pid) && answers; then echo "running (pid $pid), DOCKER_HOST=unix://$SOCKET"; else echo "not running"; exit 1; fi ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
