"""A real single-node SLURM for the cluster tests, started and stopped by the tests themselves.

`start_cluster(folder)` writes a slurm.conf (and gres.conf) for this machine as its only node:
root runs the daemons, `proctrack/linuxproc` and `task/none` need no cgroups, there is no
accounting database (finished jobs are read from the controller, which keeps them for an hour,
and from `jobcomp/filetxt`'s file in `folder`), and the node offers a `gpu` GRES so that GPU
requests can be scheduled on a machine without GPUs: slurmd counts GPUs by their device files (a
count alone registers none), so two stand-ins with /dev/null's device numbers are made in
`folder`. It starts munged (when none is running), slurmctld and slurmd on free ports, waits until
the node is idle and returns a `Cluster` whose `env` points the SLURM commands (sbatch, squeue,
scontrol, scancel) at it.

Its configuration goes to /etc/slurm/slurm.conf, SLURM's default place, because the commands a
job runs inside its allocation (the executor plugin's `srun`) are started without SLURM_CONF; an
existing configuration there that this module did not write is never replaced (the tests are
then skipped with the reason), and the cluster's own is removed when it stops.

`unavailable()` says why a cluster cannot be started here (not root, no SLURM packages, a SLURM
configured already), or None.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
MARKER = "# written by flowerlab's tests/slurm_cluster.py"
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel")
GPUS = 2  # the node's count-only gpu GRES
PARTITION = "main"


def unavailable() -> str | None:
    """Why no SLURM can be started on this machine, or None when it can."""
    if os.geteuid() != 0:
        return "the test SLURM runs its daemons as root; run the tests as root (as .ci/run does)"
    missing = [name for name in (*DAEMONS, *CLIENTS) if shutil.which(name, path=f"/usr/sbin:/usr/bin:{os.environ['PATH']}") is None]
    if missing:
        return (f"SLURM is not installed ({', '.join(missing)} missing): "
                "apt-get install munge slurmctld slurmd slurm-client (as .ci/run does)")
    if SYSTEM_CONF.exists() and MARKER not in SYSTEM_CONF.read_text(errors="replace"):
        return f"{SYSTEM_CONF} exists: this machine has its own SLURM configuration, which the test will not replace"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def node_config() -> dict[str, str]:
    """This machine as slurmd sees it (`slurmd -C`): its name, CPUs and memory."""
    report = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    fields = dict(re.findall(r"(\w+)=(\S+)", report.splitlines()[0]))
    return {"name": fields["NodeName"], "cpus": fields["CPUs"], "memory": fields["RealMemory"]}


@dataclass
class Cluster:
    folder: Path
    node: str
    cpus: int
    memory_mb: int
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def conf(self) -> Path:
        return SYSTEM_CONF

    @property
    def env(self) -> dict[str, str]:
        """The environment in which the SLURM commands talk to this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    @property
    def jobcomp(self) -> Path:
        """jobcomp/filetxt's file: one line per finished job, written by the controller."""
        return self.folder / "jobcomp.txt"

    def command(self, *args: str) -> str:
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True, check=True,
                              timeout=60).stdout

    def jobs(self) -> list[dict[str, str]]:
        """Every job the controller knows, running or finished in the last hour (`scontrol show
        job -o`: one line of Key=Value per job)."""
        output = self.command("scontrol", "show", "job", "-o")
        if "No jobs in the system" in output:
            return []
        return [dict(re.findall(r"(\w+(?:/\w+)?)=(\S*)", line)) for line in output.splitlines() if line.strip()]

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
        for path in (SYSTEM_CONF, SYSTEM_CONF.with_name("gres.conf")):
            if path.is_file() and MARKER in path.read_text(errors="replace"):
                path.unlink()


SLURM_CONF = """\
{marker}
ClusterName=flowerlab-test
SlurmctldHost={node}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
SlurmdParameters=config_overrides
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc={folder}/jobcomp.txt
MinJobAge=3600
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
NodeName={node} CPUs={cpus} RealMemory={memory} Gres=gpu:{gpus} State=UNKNOWN
PartitionName={partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def ensure_munge() -> None:
    """munged as the munge user, unless one already answers."""
    if subprocess.run(["munge", "-n"], capture_output=True, check=False).returncode == 0:
        return
    Path("/run/munge").mkdir(parents=True, exist_ok=True)
    shutil.chown("/run/munge", "munge", "munge")
    subprocess.run(["runuser", "-u", "munge", "--", "munged"], check=True, timeout=30)
    for _ in range(50):
        if subprocess.run(["munge", "-n"], capture_output=True, check=False).returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError("munged did not start")


def start_cluster(folder: Path, *, timeout: float = 60.0) -> Cluster:
    """A running single-node SLURM with its configuration in `folder` (see the module's docstring)."""
    folder.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool"):
        (folder / sub).mkdir(exist_ok=True)
    node = node_config()
    memory = int(node["memory"]) - 512  # leave the daemons some room
    cluster = Cluster(folder, node["name"], int(node["cpus"]), memory)
    SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
    cluster.conf.write_text(SLURM_CONF.format(marker=MARKER, node=node["name"], ctld_port=free_port(),
                                              slurmd_port=free_port(), folder=folder, cpus=node["cpus"],
                                              memory=memory, gpus=GPUS, partition=PARTITION))
    devices = []
    for index in range(GPUS):
        device = folder / f"gpu{index}"
        if not device.exists():
            os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # /dev/null's numbers
        devices.append(str(device))
    # gres.conf is read from slurm.conf's folder
    SYSTEM_CONF.with_name("gres.conf").write_text(f"{MARKER}\nNodeName={node['name']} Name=gpu File={','.join(devices)}\n")
    ensure_munge()
    for daemon in ("slurmctld", "slurmd"):
        # -D: in the foreground, owned by this process; -c / -i: no state from an earlier cluster
        flags = ["-D", "-c"] if daemon == "slurmctld" else ["-D"]
        log = open(folder / f"{daemon}.out", "wb")  # noqa: SIM115 - kept open for the daemon's life
        cluster.processes.append(subprocess.Popen([daemon, *flags, "-f", str(cluster.conf)], stdout=log,
                                                  stderr=subprocess.STDOUT, env=cluster.env))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = subprocess.run(["sinfo", "-h", "-o", "%t"], env=cluster.env, capture_output=True, text=True,
                               check=False).stdout.strip()
        if state == "idle":
            return cluster
        if any(process.poll() is not None for process in cluster.processes):
            break
        time.sleep(0.5)
    cluster.stop()
    logs = "\n".join((folder / f"{d}.log").read_text()[-2000:] for d in ("slurmctld", "slurmd")
                     if (folder / f"{d}.log").is_file())
    raise RuntimeError(f"the test SLURM did not become idle within {timeout:.0f} s:\n{logs}")
