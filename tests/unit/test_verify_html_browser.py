"""The room page in a real browser: headless Chromium renders it and the DOM shows the red cell.

Chromium runs as root here, so with ``--no-sandbox``; every network-touching feature is off and
the profile is a fresh temporary folder. The page is opened from a file: it must need nothing
else (no scripts, styles or fonts from elsewhere).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html import unescape
from pathlib import Path

import pytest

from gpulab.verify.probes import CHECK_NAMES, REACHABLE
from gpulab.verify.report import build_report, render_html

pytestmark = pytest.mark.unit

HELD = "Is the driver held?"
CAUSE = "not held: nvidia-open-580 (apt may move the driver away from the loaded kernel module)"
FIX = "Fix: `sudo apt-mark hold nvidia-open-580`"


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    msg = "chromium not installed (Debian package `chromium`, in the Makefile's APT_PACKAGES)"
    if os.environ.get("CI"):
        pytest.fail(msg + " (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(msg)


def _room() -> str:
    rows = []
    for host in ("lab-01", "lab-02", "lab-03"):
        for check in CHECK_NAMES:
            status, message = "pass", f"{check}: as planned"
            if host == "lab-02" and check == HELD:
                status, message = "fail", f"{CAUSE}. {FIX}"
            elif check.startswith("Does nvidia-smi"):
                status, message = "n/a", "no NVIDIA GPU on this host"
            if host == "lab-03":
                status, message = (("fail", "lab-03 could not be reached over SSH")
                                   if check == REACHABLE else
                                   ("n/a", "not checked: the host could not be reached"))
            rows.append({"host": host, "check": check, "status": status, "message": message})
    return render_html(build_report(rows, ["lab-01", "lab-02", "lab-03"]))


def test_chromium_renders_the_red_cell_with_its_message(tmp_path: Path) -> None:
    browser = _chromium()
    page = tmp_path / "room.html"
    page.write_text(_room())
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
         page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    red = re.findall(r'<td class="fail"[^>]*data-host="([^"]+)"[^>]*data-check="([^"]+)"'
                     r'[^>]*>(.*?)</td>', dom, re.S)
    cells = {(host, unescape(check)): unescape(body) for host, check, body in red}
    assert set(cells) == {("lab-02", HELD), ("lab-03", REACHABLE)}, dom[-3000:]
    body = cells[("lab-02", HELD)]
    assert "<summary>FAIL</summary>" in body  # one click on FAIL opens the message
    assert CAUSE in body and FIX in body
    assert dom.count('class="pass"') == 2 * (len(CHECK_NAMES) - 1) - 1
    assert dom.count('class="na"') == 2 + len(CHECK_NAMES) - 1
    # the unreachable host is the first row
    assert dom.index(">lab-03<") < dom.index(">lab-01<") < dom.index(">lab-02<")
