"""Run the module's in-Slicer self-test from a terminal and exit with its status:

    Slicer --no-main-window --disable-cli-modules --python-script LDCTDenoise/Testing/Python/run_self_test.py

Works from a source checkout (the module folder is put on sys.path) and with the extension installed.
"""

import sys
import traceback
from pathlib import Path

import slicer

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the LDCTDenoise module folder

try:
    import LDCTDenoise

    LDCTDenoise.LDCTDenoiseTest().runTest()
except Exception:
    traceback.print_exc()
    slicer.util.exit(1)
else:
    print("LDCTDenoise self-test passed")
    slicer.util.exit(0)
