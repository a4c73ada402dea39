"""The ``diffjpeg`` command: ``diffjpeg bench`` (the robustness benchmark, the main job) and the other tools."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

COMMANDS = {
    "bench": ("diffjpeg.eval.bench", "white-box robustness benchmark of defenses under attacks and threat models"),
    "train": ("diffjpeg.eval.train", "train the small CNN on Fashion-MNIST or CIFAR-10 for `diffjpeg bench`"),
    "report": ("diffjpeg.eval.report", "fidelity of the JPEG layer against Pillow, and its speed against kornia"),
    "train-reconstruction": ("diffjpeg.eval.train_reconstruction",
                             "train PixelDepthReconstruction's EDSR on Fashion-MNIST (compressed clean + FGSM -> clean)"),
    "learn-qtables": ("diffjpeg.eval.learn_qtables",
                      "learn JPEG quantisation tables for a classifier under a bit-rate weight; writes JSON"),
    "topa": ("diffjpeg.eval.topa", "JPEG + targeted one-pixel class recovery (TOPA) on a labelled tensor file"),
}


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """``--seed``, ``--device`` and ``--quiet``, as the training commands take them."""
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (default: show them)")


def out_folder_missing(command: str, out: Path) -> bool:
    """Say on stderr, and return True, when the folder of ``--out`` (``out``) does not exist."""
    if out.parent.is_dir():
        return False
    print(f"{command}: --out folder {str(out.parent)!r} does not exist", file=sys.stderr)
    return True


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: diffjpeg COMMAND [options]\n\ncommands:")
        width = max(map(len, COMMANDS))
        for name, (_, help_text) in COMMANDS.items():
            print(f"  {name:{width}s}  {help_text}")
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"diffjpeg: unknown command {argv[0]!r}; expected one of {sorted(COMMANDS)}", file=sys.stderr)
        return 2
    module = __import__(COMMANDS[argv[0]][0], fromlist=["main"])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
