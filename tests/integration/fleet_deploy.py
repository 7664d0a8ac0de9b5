"""A tiny real deploy for the fleet tests: an apt package, a file and a service.

It exercises what every real deploy needs (apt over the guest's network, files, systemd) and is
idempotent, so a second run must report no change. Contents are inline (``StringIO``) so the
deploy is one file.
"""

from io import StringIO

from pyinfra import host
from pyinfra.operations import apt, files, server, systemd

UNIT = """[Unit]
Description=gpulab fleet test service

[Service]
ExecStart=/usr/bin/sleep infinity

[Install]
WantedBy=multi-user.target
"""

# The failure tests stop one guest during a slow step, first in the run (the steps after it are
# what the survivor must still finish); the finish mark is the run's last operation. Each
# slow step first leaves a file the test polls for, so the kill lands inside it (no process
# name to confuse with the fleet-hello unit's own "sleep infinity").
if host.data.get("fleet_slow_facts"):
    # Dies while facts are gathered: the prepare phase, through gpulab's deploy wrapper.
    from pyinfra.facts.server import Command

    from gpulab.deploys.common import gpulab_deploy

    @gpulab_deploy("fleet slow facts")
    def slow_facts() -> None:
        host.get_fact(Command, command="touch /run/gpulab-slow-step && sleep 25 && echo done")

    slow_facts()

if host.data.get("fleet_slow"):
    # Dies while operations run.
    server.shell(name="Slow step", commands=["touch /run/gpulab-slow-step && sleep 25"])

apt.packages(
    name="Install tree",
    packages=["tree"],
    update=True,
    cache_time=3600,  # without it, update=True would report a change on every run
    no_recommends=True,
)

files.put(
    name="Write the fleet marker",
    src=StringIO("gpulab fleet\n"),
    dest="/etc/gpulab-fleet-marker",
    mode="644",
)

unit = files.put(
    name="Install the fleet-hello unit",
    src=StringIO(UNIT),
    dest="/etc/systemd/system/fleet-hello.service",
    mode="644",
)

systemd.service(
    name="Enable and start fleet-hello",
    service="fleet-hello.service",
    running=True,
    enabled=True,
    daemon_reload=unit.will_change,
)


if host.data.get("fleet_slow_facts") or host.data.get("fleet_slow"):
    files.put(
        name="Mark the run finished",
        src=StringIO("gathered\n" if host.data.get("fleet_slow_facts") else "finished\n"),
        dest="/root/fleet-run-finished",
    )
