"""Install vqclip as a notebook user would, beside a torch that is already there, and use it.

    python tools/install_check.py TORCH_VERSION [--opencv OPENCV_VERSION]

In a fresh virtual environment: the newest setuptools (which has no pkg_resources) and
``torch==TORCH_VERSION`` alone, as Colab or a conda user has them (with ``--opencv``, also
``opencv-python``, as Colab ships it); then the notebook's own set-up cell, run as Jupyter runs
it; then a short generation with the bundled shapes models, each generator, and DIS optical flow
between two frames. It prints one Markdown row for docs/usage.md, and exits 1 where the install
replaced torch or setuptools, left more than one OpenCV wheel (both install the same ``cv2``, and
the second overwrites the first's files), or a run failed. It downloads torch and its CUDA libraries (GBs),
so it is a script, not a test; on a machine whose pip caps torch (a constraints file), lift the
cap for it: ``PIP_CONSTRAINT=/dev/null``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a red circle on a blue background"
OPENCVS = ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless")  # fmt: skip
FLOW = (
    "import torch; from vqclip.models.flow import dis_flow\n"
    "noise = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))\n"
    "a = torch.nn.functional.interpolate(noise, (64, 64), mode='bicubic').clamp(0, 1)\n"
    "flow = dis_flow(a, torch.roll(a, 3, -1))[0, :, 16:48, 16:48].mean((1, 2))\n"
    "assert abs(float(flow[0]) - 3) < 0.5 and abs(float(flow[1])) < 0.5, flow"
)


def setup_cell() -> str:
    """The source of the notebook's first code cell (it installs vqclip)."""
    cells = json.loads((ROOT / "notebooks" / "vqgan_clip.ipynb").read_text())["cells"]
    return "".join(next(c for c in cells if c["cell_type"] == "code")["source"])


def versions(python: Path) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, platform\n"
        f"names = ('torch', 'torchvision', 'setuptools', *{OPENCVS!r})\n"
        "found = {n: m.version(n) for n in names if any(True for _ in m.distributions(name=n))}\n"
        "print(json.dumps({**found, 'python': platform.python_version()}))"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("torch", help="the torch version to install first, e.g. 2.5.1")
    parser.add_argument(
        "--opencv", help="opencv-python's version to install first, as Colab has it"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        python = venv / "bin" / "python"
        pip = [python, "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "--upgrade", "setuptools", "pip"], check=True)
        subprocess.run([*pip, f"torch=={args.torch}"], check=True)
        if args.opencv:
            subprocess.run([*pip, f"opencv-python=={args.opencv}"], check=True)
        before = versions(python)
        start = time.perf_counter()
        # Run as Jupyter runs it: from the notebook's folder, where vqclip is not importable.
        subprocess.run([python, "-c", setup_cell()], cwd=ROOT / "notebooks", check=True)
        installed = time.perf_counter() - start
        after = versions(python)
        kept = all(after.get(k) == before.get(k) for k in ("torch", "setuptools", *OPENCVS))
        opencvs = [name for name in OPENCVS if name in after]
        runs = []
        for generator in ("vqgan", "diffusion"):
            command = [venv / "bin" / "vqclip", "generate", PROMPT, "--generator", generator,
                       "--seed", "0", "--max_iterations", "10", "--output_dir", Path(tmp) / "out"]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True)
            runs.append(f"{generator} {'ok' if done.returncode == 0 else 'FAILED'}")
            if done.returncode:
                print(done.stderr[-2000:], file=sys.stderr)
        done = subprocess.run([python, "-c", FLOW], capture_output=True, text=True, cwd=tmp)
        runs.append(f"dis flow {'ok' if done.returncode == 0 else 'FAILED'}")
        if done.returncode:
            print(done.stderr[-2000:], file=sys.stderr)
    print("| Python | torch before -> after | torchvision | setuptools before -> after | OpenCV wheels after | install | runs |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {after['python']} | {before['torch']} -> {after['torch']} | "
        f"{after.get('torchvision', 'none')} | {before['setuptools']} -> {after['setuptools']} | "
        f"{', '.join(f'{n} {after[n]}' for n in opencvs) or 'none'} | {installed:.0f} s | "
        f"{', '.join(runs)} |"
    )
    return 0 if kept and len(opencvs) == 1 and all(r.endswith("ok") for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
