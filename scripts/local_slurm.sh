#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, to try the cluster path (hydra/launcher=slurm_cpu) on a
# laptop or in CI:   scripts/local_slurm.sh start|stop|status|env
#
#   start   installs slurm-wlm and munge with apt when missing (root), writes slurm.conf for this
#           host's CPUs and memory, starts munged, slurmctld and slurmd under $SEGLOSS_SLURM_DIR
#           (default /tmp/segloss-slurm; no init system, no cgroups, no accounting) and waits for the
#           node to be idle. Does nothing when the cluster already runs.
#   stop    cancels the cluster's jobs, ends exactly the daemons `start` started (their pid files) and
#           removes slurm.conf (the state, logs and munge key stay for the next start).
#   status  the daemons and `sinfo`; exit 1 when the cluster is not up.
#   env     prints `export SLURM_CONF=...`: eval "$(scripts/local_slurm.sh env)" before sbatch/squeue.
#
# Partitions: `batch` (default) and `urgent` (higher priority tier): an `urgent` job that needs the
# CPUs of a running `batch` job preempts it, and SLURM requeues the preempted job (SIGTERM, then
# SIGKILL after KillWait). A requeued job waits `cred_expire` seconds before it starts again.
set -euo pipefail

DIR=${SEGLOSS_SLURM_DIR:-/tmp/segloss-slurm}
CONF=$DIR/slurm.conf
SOCKET=$DIR/munge/munge.socket.2
CTLD_PORT=${SEGLOSS_SLURM_PORT:-6817}
DAEMONS=(munged slurmctld slurmd)

say() { echo "[local_slurm] $*" >&2; }

pid_of() {  # the pid in $DIR/<daemon>.pid when that process is alive and is that daemon
    local f=$DIR/$1.pid pid
    [[ -s $f ]] || return 1
    pid=$(<"$f")
    [[ -r /proc/$pid/comm && $(<"/proc/$pid/comm") == "$1" ]] || return 1
    echo "$pid"
}

up() {
    local d
    for d in "${DAEMONS[@]}"; do pid_of "$d" >/dev/null || return 1; done
    SLURM_CONF=$CONF sinfo -h >/dev/null 2>&1
}

install() {
    local missing=0 tool
    for tool in sbatch squeue scontrol slurmctld slurmd munged; do
        command -v "$tool" >/dev/null || PATH=$PATH:/usr/sbin command -v "$tool" >/dev/null || missing=1
    done
    ((missing)) || return 0
    say "installing slurm-wlm and munge (apt)"
    local sudo=()
    ((EUID == 0)) || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        slurm-wlm munge >/dev/null
}

write_conf() {
    local host node
    host=$(hostname -s)
    # this host's real CPUs/topology and memory, as slurmd sees them (RealMemory in MB)
    node=$(slurmd -C 2>/dev/null | head -n1 | sed -e "s/^NodeName=[^ ]*//")
    [[ $node == *CPUs=* ]] || node=" CPUs=$(nproc) RealMemory=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024))"
    local mem cpus
    mem=$(grep -o 'RealMemory=[0-9]*' <<<"$node" | cut -d= -f2)
    cpus=$(grep -o 'CPUs=[0-9]*' <<<"$node" | cut -d= -f2)
    cat >"$CONF" <<EOF
# written by scripts/local_slurm.sh: one node, state under $DIR
ClusterName=segloss
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$((CTLD_PORT + 1))
SlurmUser=$(id -un)
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket=$SOCKET,cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=$((mem / cpus))
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
JobRequeue=1
KillWait=30
MinJobAge=300
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
NodeName=$host NodeAddr=127.0.0.1$node State=UNKNOWN
PartitionName=batch Nodes=$host Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE
PartitionName=urgent Nodes=$host MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
EOF
}

start() {
    if up; then
        say "already running ($CONF)"
        return 0
    fi
    install
    export PATH=$PATH:/usr/sbin SLURM_CONF=$CONF
    mkdir -p "$DIR"/{munge,state,spool,log}
    chmod 755 "$DIR/munge"
    if [[ ! -s $DIR/munge/munge.key ]]; then
        (umask 077 && head -c 1024 /dev/urandom >"$DIR/munge/munge.key")
    fi
    if ! pid_of munged >/dev/null; then
        munged --force --key-file="$DIR/munge/munge.key" --socket="$SOCKET" --pid-file="$DIR/munged.pid" \
            --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed"
    fi
    write_conf
    pid_of slurmctld >/dev/null || slurmctld -f "$CONF"
    pid_of slurmd >/dev/null || slurmd -f "$CONF"
    local i
    for i in $(seq 60); do
        if [[ $(sinfo -h -o %T 2>/dev/null) == idle* ]]; then
            say "up: $(sinfo -h -o '%P %D %c CPUs %m MB %T' | tr '\n' ';') — $(basename "$0") env for SLURM_CONF"
            return 0
        fi
        sleep 1
    done
    say "the node did not become idle within 60 s; logs in $DIR/log"
    tail -n 20 "$DIR"/log/*.log >&2 || true
    return 1
}

stop() {
    export PATH=$PATH:/usr/sbin SLURM_CONF=$CONF
    if pid_of slurmctld >/dev/null; then
        scancel --full --user="$(id -un)" 2>/dev/null || true
        local i
        for i in $(seq 40); do  # let slurmd end the jobs' steps (KillWait) before it goes
            [[ -z $(squeue -h -t running,completing 2>/dev/null) ]] && break
            sleep 1
        done
    fi
    local d pid
    for d in slurmd slurmctld munged; do
        if pid=$(pid_of "$d"); then
            kill "$pid"
            for _ in $(seq 20); do [[ -d /proc/$pid ]] || break; sleep 0.5; done
            say "stopped $d ($pid)"
        fi
    done
    rm -f "$CONF"  # clients find no cluster (instead of retrying a stopped controller); start rewrites it
}

status() {
    local d pid rc=0
    for d in "${DAEMONS[@]}"; do
        if pid=$(pid_of "$d"); then echo "$d: running ($pid)"; else echo "$d: stopped"; rc=1; fi
    done
    if ((rc == 0)); then SLURM_CONF=$CONF sinfo || rc=1; fi
    return $rc
}

case ${1:-} in
start) start ;;
stop) stop ;;
status) status ;;
env) echo "export SLURM_CONF=$CONF" ;;
*)
    echo "usage: $0 start|stop|status|env" >&2
    exit 2
    ;;
esac
