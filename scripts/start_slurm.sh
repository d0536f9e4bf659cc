#!/usr/bin/env bash
# Start a real single-node Slurm cluster on this host, for tests (CI runs it as root).
#
#   sudo scripts/start_slurm.sh      # idempotent: quick when the cluster already answers
#   scripts/stop_slurm.sh            # stops what this script started
#
# Installs Debian's slurm-wlm and munge when they are missing, writes /etc/slurm/slurm.conf with
# this host's name, CPUs and memory (from `slurmd -C`), starts munged, slurmctld and slurmd, and
# waits until the node is idle and `srun hostname` answers.
#
# The cluster has two partitions over the one node: `debug` (the default) and `gpu`. The node
# advertises SLURM_FAKE_GPUS (1, the default, or 0) GPU backed by /dev/null, so that jobs
# asking `--gres=gpu:1` are scheduled; what runs in them must not need a real GPU (stub runs).
# Completed jobs are logged one per line in $SLURM_STATE_DIR/jobcomp.log (jobcomp/filetxt):
# there is no slurmdbd, so `sacct` has nothing to show.
#
# Environment: SLURM_STATE_DIR (default /var/lib/virnucpro-slurm), SLURM_FAKE_GPUS (default 1),
#              SLURM_START_TIMEOUT seconds (default 60).
set -euo pipefail

state="${SLURM_STATE_DIR:-/var/lib/virnucpro-slurm}"
fake_gpus="${SLURM_FAKE_GPUS:-1}"
timeout_s="${SLURM_START_TIMEOUT:-60}"
conf_dir=/etc/slurm
marker="# written by virnucpro-extract scripts/start_slurm.sh"
started=$SECONDS

log() { printf '[start_slurm] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; for f in "$state"/log/*.log; do [ -f "$f" ] && { log "--- $f"; tail -n 20 "$f" >&2; }; done; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts daemons)"

cluster_answers() {
    timeout 10 sinfo -h -o '%T' 2>/dev/null | grep -qx 'idle\|mixed\|allocated' &&
        timeout 20 srun -N1 -t 1 hostname >/dev/null 2>&1
}

# Already up (a second call, or the cluster this script wrote is still running): nothing to do.
if command -v sinfo >/dev/null && grep -qxF "$marker" "$conf_dir/slurm.conf" 2>/dev/null && cluster_answers; then
    log "already running ($(sinfo -h -o '%P %T %N' | tr '\n' ' '))"
    exit 0
fi

# --- packages -----------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
    || ! command -v munged >/dev/null; then
    log "installing slurm-wlm and munge (Debian packages)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >&2
fi

# --- munge --------------------------------------------------------------------------------------
mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key; else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none; fi
fi
chown munge:munge /etc/munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
chmod 0700 /etc/munge && chmod 0400 /etc/munge/munge.key && chmod 0755 /run/munge
mkdir -p "$state/log" "$state/run" "$state/ctld" "$state/d"
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "munged already running"
else
    rm -f /run/munge/munged.pid /run/munge/munge.socket.2
    runuser -u munge -- /usr/sbin/munged
    touch "$state/run/munged.started-by-us"
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n | unmunge >/dev/null || die "munged does not answer"
    log "munged started"
fi

# --- slurm.conf ---------------------------------------------------------------------------------
if [ -f "$conf_dir/slurm.conf" ] && ! grep -qxF "$marker" "$conf_dir/slurm.conf"; then
    die "$conf_dir/slurm.conf exists and was not written by this script; refusing to overwrite a real cluster's configuration"
fi
host="$(hostname -s)"
# `slurmd -C` prints this node as slurmd sees it: NodeName=<host> CPUs=.. Boards=.. ... RealMemory=..
node_line="$(slurmd -C | head -n 1)"
case "$node_line" in NodeName=*) ;; *) die "unexpected output of slurmd -C: $node_line" ;; esac
gres_conf=""
gres_node=""
gres_types=""
case "$fake_gpus" in
    0) ;;
    1)  # Slurm drops a GPU without a device file; /dev/null stands in for it.
        gres_types="GresTypes=gpu"
        gres_node="Gres=gpu:1"
        gres_conf="NodeName=$host Name=gpu File=/dev/null Count=1" ;;
    *) die "SLURM_FAKE_GPUS must be 0 or 1, not $fake_gpus" ;;
esac
mkdir -p "$conf_dir"
cat > "$conf_dir/slurm.conf.new" <<EOF
$marker
# A single-node test cluster: controller and compute node on this host.
ClusterName=virnucpro-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d
SlurmctldPidFile=$state/run/slurmctld.pid
SlurmdPidFile=$state/run/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
# No cgroups in containers: track job processes by their parent ids, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$state/jobcomp.log
$gres_types
$node_line NodeAddr=127.0.0.1 $gres_node State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$host Default=NO MaxTime=INFINITE State=UP
EOF
mv "$conf_dir/slurm.conf.new" "$conf_dir/slurm.conf"
printf '%s\n%s\n' "$marker" "$gres_conf" > "$conf_dir/gres.conf"
# slurmd loads a cgroup plugin even with the plugins above; on a cgroup v2 host without systemd it
# must not ask systemd for a scope.
[ -f "$conf_dir/cgroup.conf" ] || printf '%s\nCgroupPlugin=autodetect\nIgnoreSystemd=yes\n' "$marker" > "$conf_dir/cgroup.conf"

# --- daemons ------------------------------------------------------------------------------------
running() {  # pidfile daemon: the pid file names a live process of that daemon (not a reused pid)
    [ -f "$1" ] && [ "$(cat "/proc/$(cat "$1")/comm" 2>/dev/null)" = "$2" ]
}
if running "$state/run/slurmctld.pid" slurmctld; then
    scontrol reconfigure >/dev/null 2>&1 || true
    log "slurmctld already running"
else
    slurmctld -i || die "slurmctld did not start"
    log "slurmctld started"
fi
if running "$state/run/slurmd.pid" slurmd; then
    log "slurmd already running"
else
    slurmd || die "slurmd did not start"
    log "slurmd started"
fi

# --- wait until the node is idle and a job runs -------------------------------------------------
deadline=$((SECONDS + timeout_s))
until timeout 10 sinfo -h -N -n "$host" -o '%T' 2>/dev/null | grep -qx 'idle\|mixed\|allocated'; do
    node_state="$(timeout 10 sinfo -h -N -n "$host" -o '%T' 2>/dev/null | head -n 1 || true)"
    case "$node_state" in
        drain*|down*) scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    [ "$SECONDS" -lt "$deadline" ] || die "node $host not idle after ${timeout_s}s (state: ${node_state:-none})"
    sleep 0.5
done
answer="$(timeout 30 srun -N1 -t 1 hostname 2>&1)" || die "srun hostname failed: $answer"
log "ready in $((SECONDS - started))s: node $answer, partitions $(sinfo -h -o '%P' | tr '\n' ' ')(srun hostname answered)"
