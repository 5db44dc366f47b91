"""The README's Python example runs as written (docs that drift are worse than none)."""

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_example_runs(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    proc = subprocess.run([sys.executable, "-c", blocks[0]], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # It prints one (id, position) per tracked object of `push`: 3 blocks + the pusher.
    assert proc.stdout.count("array(") == 4, proc.stdout
    header = (tmp_path / "scene.ply").read_bytes()[:2000].decode("ascii", "replace")
    assert header.startswith("ply") and "object_id" in header
