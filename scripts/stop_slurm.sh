#!/usr/bin/env bash
# Stop the single-node test cluster of scripts/start_slurm.sh: slurmd, slurmctld, and munged if
# that script started it. Only the daemons whose pid files it wrote are signalled.
# Environment: SLURM_STATE_DIR (default /var/lib/virnucpro-slurm).
set -uo pipefail

state="${SLURM_STATE_DIR:-/var/lib/virnucpro-slurm}"
log() { printf '[stop_slurm] %s\n' "$*" >&2; }

stop_pidfile() {  # name pidfile: signal the pid only while it is still that daemon
    local pid
    [ -f "$2" ] || return 0
    pid="$(cat "$2")"
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]; then
        kill "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
        log "stopped $1 (pid $pid)"
    fi
    rm -f "$2"
}

stop_pidfile slurmd "$state/run/slurmd.pid"
stop_pidfile slurmctld "$state/run/slurmctld.pid"
if [ -f "$state/run/munged.started-by-us" ]; then
    stop_pidfile munged /run/munge/munged.pid
    rm -f "$state/run/munged.started-by-us"
fi
exit 0
