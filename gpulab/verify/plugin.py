"""The pytest side of ``gpulab verify``: options, one test per host and check, the JSON report.

Registered as a pytest plugin (entry point ``pytest11``), so ``pytest --pyargs gpulab.verify
--inventory INVENTORY`` works as well as ``gpulab verify``. Every process (the controller and
each pytest-xdist worker) loads the inventory and validates the whole room's settings without
connecting; a worker connects to the hosts it is given (``--dist loadgroup`` keeps each
host's checks on one worker, so its facts are read once). The controller collects every
outcome from the test reports and writes ``--gpulab-report FILE``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gpulab.plan.host import PlanError
from gpulab.verify.checks import Outcome, failed, not_applicable, passed
from gpulab.verify.probes import (
    CHECK_NAMES,
    CHECKS,
    PLANNED,
    REACHABLE,
    Subject,
    connect,
    plan_problem,
    prepare,
)
from gpulab.verify.report import build_report
from gpulab.verify.room import RoomFile, write_room_file

PROPERTY = "gpulab_outcome"


@dataclass
class Blocked:
    """Why a host's checks could not run: it was not reached, or its plan cannot be made."""

    reach: Outcome
    plan: Outcome | None = None


@dataclass
class Room:
    """The room file's hosts, and their outcomes, cached per process."""

    room: RoomFile
    workdir: Path | None  # this process made the room file and removes it at the end
    subjects: dict[str, Subject | Blocked] = field(default_factory=dict)

    @property
    def hosts(self) -> list[str]:
        return self.room.hosts

    @property
    def ssh_config(self) -> Path:
        return self.room.ssh_config

    def subject(self, name: str) -> Subject | Blocked:
        if name not in self.subjects:
            self.subjects[name] = self._prepare(name)
        return self.subjects[name]

    def _prepare(self, name: str) -> Subject | Blocked:
        if name in self.room.problems:
            return Blocked(failed(self.room.problems[name], "verify it over SSH instead"))
        target = self.room.targets[name]
        try:
            host = connect(target, self.ssh_config)
        except Exception as error:  # ssh exit 255, DNS, refused: all mean "not reached"
            said = getattr(error.args[0], "stderr", "") if error.args else ""
            text = " ".join(str(said or error).split())[-300:]
            return Blocked(failed(f"{name} could not be reached over SSH: {text}",
                                  "is it switched on and on the network, and does `ssh` with "
                                  "the inventory's ssh_* data log in without a password?"))
        try:
            return prepare(target, host, self.room.settings[name])
        except PlanError as error:
            return Blocked(passed("reached"), plan_problem(error))
        except Exception as error:  # the connection dropped, or a fact could not be read
            return Blocked(passed("reached"), failed(
                f"facts could not be read: {type(error).__name__}: {error}",
                "run `gpulab facts INVENTORY --limit HOST --out /tmp/facts` to see which"))

    def outcome(self, name: str, check: str) -> Outcome:
        """The verdict of one check on one host (connecting and planning on first use)."""
        subject = self.subject(name)
        if isinstance(subject, Blocked):
            if check == REACHABLE:
                return subject.reach
            if subject.plan is not None:
                if check == PLANNED:
                    return subject.plan
                return not_applicable("not checked: the host has no plan")
            return not_applicable("not checked: the host could not be reached")
        if check == REACHABLE:
            return passed(f"reached ({self.room.targets[name].hostspec})")
        probe = next(c.probe for c in CHECKS if c.name == check)
        try:
            return probe(subject)
        except Exception as error:  # a probe that breaks must still say where
            return failed(f"the check could not run: {type(error).__name__}: {error}",
                          "run `gpulab verify` again; if it persists, report it")


def record(node: pytest.Item, host: str, check: str, outcome: Outcome) -> None:
    """Attach an outcome to the test report (xdist carries user_properties to the controller)."""
    node.user_properties.append((PROPERTY, json.dumps(
        {"host": host, "check": check, "status": outcome.status, "message": outcome.message}
    )))


ROOM = pytest.StashKey[Room]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gpulab", "gpulab verify")
    group.addoption("--inventory", help="pyinfra inventory whose hosts are verified")
    group.addoption("--limit", action="append", dest="gpulab_limit", metavar="HOST",
                    help="only this host (repeatable)")
    group.addoption("--gpulab-report", metavar="FILE",
                    help="write every host's outcomes as gpulab verify's JSON to FILE")


ROOM_FILE = "gpulab_room_file"


def pytest_configure(config: pytest.Config) -> None:
    worker: dict[str, Any] | None = getattr(config, "workerinput", None)
    if worker is not None and ROOM_FILE in worker:
        config.stash[ROOM] = Room(RoomFile.load(Path(worker[ROOM_FILE])), None)
        return
    inventory = config.getoption("inventory")
    if not inventory:
        return
    workdir = Path(tempfile.mkdtemp(prefix="gpulab-verify-"))
    try:
        path = write_room_file(inventory, config.getoption("gpulab_limit"), workdir)
    except ValueError as error:
        shutil.rmtree(workdir, ignore_errors=True)
        raise pytest.UsageError(f"gpulab verify: {error}") from None
    config.stash[ROOM] = Room(RoomFile.load(path), workdir)
    report = config.getoption("gpulab_report")
    if report:
        config.pluginmanager.register(Collector(Path(report), config.stash[ROOM].hosts))


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist: each worker reads the controller's room file instead of the inventory."""
    room = node.config.stash.get(ROOM, None)
    if room is not None and room.workdir is not None:
        node.workerinput[ROOM_FILE] = str(room.workdir / "room.json")


def pytest_unconfigure(config: pytest.Config) -> None:
    room = config.stash.get(ROOM, None)
    if room is not None and room.workdir is not None:
        shutil.rmtree(room.workdir, ignore_errors=True)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "gpulab_case" not in metafunc.fixturenames:
        return
    room = metafunc.config.stash.get(ROOM, None)
    if room is None:
        raise pytest.UsageError("gpulab.verify needs --inventory INVENTORY")
    metafunc.parametrize("gpulab_case", [
        pytest.param((host, check), id=f"{host}::{check}", marks=pytest.mark.xdist_group(host))
        for host in room.hosts for check in CHECK_NAMES
    ])


@pytest.fixture
def gpulab_room(request: pytest.FixtureRequest) -> Room:
    """This process's room (hosts, settings, and outcomes cached per host)."""
    return request.config.stash[ROOM]


class Collector:
    """On the controller: gathers every outcome and writes the report at the end."""

    def __init__(self, path: Path, hosts: list[str]) -> None:
        self.path = path
        self.hosts = hosts
        self.rows: list[dict[str, Any]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":  # teardown reports carry the same properties again
            return
        for key, value in report.user_properties:
            if key == PROPERTY:
                self.rows.append(json.loads(str(value)))

    def pytest_sessionfinish(self) -> None:
        self.path.write_text(json.dumps(build_report(self.rows, self.hosts), indent=2) + "\n")
