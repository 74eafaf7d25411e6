"""Carry the finished models of long studies from one session's machine to the next one.

A study folder (headroom, hawis_aligned, uae_study, the ablation runs) resumes by reading the run folders that hold
a final.json under the same config. A session's machine may not be handed to the next session, so this script
packs just what a resume reads back, without checkpoints (small text files), into one archive in the repository:

    python scripts/study_state.py save ARCHIVE.tar.gz ROOT      # pack ROOT's finished runs (ROOT: e.g. /work/studies)
    python scripts/study_state.py restore ARCHIVE.tar.gz ROOT   # unpack below ROOT (refuses to overwrite a file)

What is packed: every run folder that holds final.json (its json / jsonl / yaml / log / md files, not checkpoints/ or
figures), and the top-level files (run.json, config.yaml, run.log) of every study folder above them. Unfinished
runs are left out: they restart from their first epoch. Restoring uses tarfile's "data" filter (no links, no
absolute paths, no '..'), so an archive cannot write outside ROOT.
"""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

KEEP = {".json", ".jsonl", ".yaml", ".log", ".md"}
SKIP_DIRS = {"checkpoints", "figures", "tensorboard"}


def finished_runs(root: Path) -> list[Path]:
    """Every run folder below `root` that holds final.json, outside code snapshots."""
    return sorted(p.parent for p in root.rglob("final.json")
                  if not any(part.startswith("code-") or part in SKIP_DIRS for part in p.relative_to(root).parts))


def files_to_pack(root: Path) -> list[Path]:
    runs = finished_runs(root)
    files = {f for run in runs for f in run.iterdir() if f.is_file() and not f.is_symlink() and f.suffix in KEEP}
    for run in runs:  # the study folders above a finished run: their run.json / config.yaml / run.log
        for parent in run.relative_to(root).parents:
            d = root / parent
            if d != root and (d / "run.json").is_file():
                files |= {d / n for n in ("run.json", "config.yaml", "run.log") if (d / n).is_file()}
    return sorted(files)


def save(archive: Path, root: Path) -> int:
    files = files_to_pack(root)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for f in files:
            info = tarfile.TarInfo(str(f.relative_to(root)))
            data = f.read_bytes()
            info.size, info.mode, info.mtime = len(data), 0o644, 0  # no timestamps: the same runs pack the same
            tar.addfile(info, io.BytesIO(data))
    archive.write_bytes(buf.getvalue())
    print(f"packed {len(files)} files of {len(finished_runs(root))} finished runs into {archive} "
          f"({archive.stat().st_size / 1024:.0f} KiB)")
    return 0


def restore(archive: Path, root: Path) -> int:
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, mode="r:gz") as tar:
        members = tar.getmembers()
        clash = [m.name for m in members if (root / m.name).exists()]
        if clash:
            print(f"error: {len(clash)} files exist already under {root} (e.g. {clash[0]}); restore into an empty "
                  "folder", file=sys.stderr)
            return 2
        tar.extractall(root, members=members, filter="data")
    print(f"restored {len(members)} files below {root}")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("save", "restore"):
        print("usage: python scripts/study_state.py save|restore ARCHIVE.tar.gz ROOT", file=sys.stderr)
        return 2
    cmd, archive, root = argv[0], Path(argv[1]), Path(argv[2])
    return save(archive, root) if cmd == "save" else restore(archive, root)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
