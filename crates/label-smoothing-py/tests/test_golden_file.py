"""The golden cases' expected values are what their generator recomputes from their inputs, and agree with
F.cross_entropy and the seed's fast-reid function where those apply."""
import subprocess
import sys

from conftest import REPO


def test_golden_file_matches_its_generator():
    script = REPO / "scripts" / "gen_cross_entropy_cases.py"
    out = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "all 133 cases agree" in out.stdout
