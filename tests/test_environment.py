"""Library versions recorded beside results, and what changed since a recorded run."""
from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np

from qualmet.environment import describe, differences, digest, versions


def test_versions_name_the_installed_libraries_without_importing_torch():
    code = "import sys, json; from qualmet.environment import versions; v = versions(); print(json.dumps(v)); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[-1] == "False"
    v = versions()
    assert v["numpy"] == np.__version__ and v["python"] == sys.version.split()[0]
    assert cv2.__version__.startswith(".".join(v["opencv"].split(".")[:3]))


def test_differences_report_changed_packages_only():
    now = {"python": "3.11.7", "platform": "B", "numpy": "2.4.6", "opencv": "5.1.0.95", "torch": None}
    before = {"python": "3.11.7", "platform": "A", "numpy": "2.4.6", "opencv": "5.0.0.93"}
    assert differences(before, now) == {"opencv": ("5.0.0.93", "5.1.0.95")}
    assert differences(None, now) == {} and differences(now, now) == {}
    assert describe(differences(before, now)) == "opencv 5.0.0.93 -> 5.1.0.95"
    assert digest(("numpy", "opencv"), now) == digest(("numpy", "opencv"), {**now, "torch": "9"})
    assert digest(("numpy", "opencv"), now) != digest(("numpy", "opencv"), before)
