#!/usr/bin/env bash
# Run one fixed set of CLI commands with the sources of two revisions and compare what they print and
# write: a refactor must not change them. Text and .npz outputs must be identical; figures (PNG) are
# reported by their largest pixel difference.
#   scripts/same_cli_outputs.sh OLD_REV [NEW_REV]    (NEW_REV: the working tree)
# Needs the export and plot extras, and ../shared/fixtures beside the clone.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
fixtures=$root/../shared/fixtures
[ -d "$fixtures" ] || { echo "needs $fixtures (the reference fixtures)"; exit 2; }
work=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$work/old" >/dev/null 2>&1; [ -d "$work/new-tree" ] && git -C "$root" worktree remove --force "$work/new-tree" >/dev/null 2>&1; rm -rf "$work"' EXIT
git -C "$root" worktree add --detach "$work/old" "$1" >/dev/null
new=$root
if [ $# -ge 2 ]; then git -C "$root" worktree add --detach "$work/new-tree" "$2" >/dev/null; new=$work/new-tree; fi
samples=$root/adavit_deploy/demo/samples

outputs() {  # outputs SOURCES DIR: the commands, each one's output and exit status in DIR
  local src=$1 out=$2
  mkdir -p "$out"; cd "$out"
  # the program as the console script runs it (older revisions have no __main__.py)
  run() { local name=$1; shift; PYTHONPATH=$src COLUMNS=200 OMP_NUM_THREADS=1 python -c 'from adavit_deploy.cli import main; main()' "$@" >"$name.out" 2>&1 && echo "rc=0" >>"$name.out" || echo "rc=$?" >>"$name.out"; }
  run info_demo info --json
  run info_t2t info "$fixtures/t2t_tiny_performer_full.pth.tar" --json
  run info_tiny info "$fixtures/tiny_full.pth.tar"
  run export_demo export --out demo --budgets native,0.5 --calib demo --calib-count 64 --int8 --fp16
  run export_tiny export "$fixtures/tiny_full.pth.tar" --out tiny
  run export_t2t export "$fixtures/t2t_tiny_transformer_heads_tokens_normpolicy.pth.tar" --out t2t
  run infer_demo infer demo "$samples/digit_1.png" "$samples/digit_7.png"
  run infer_demo_npz infer demo "$samples"/*.png --output demo_infer.npz
  run infer_demo_fp16 infer demo "$samples"/*.png --output demo_fp16.npz --precision fp16 --budget 0.5
  run infer_demo_int8 infer demo "$samples"/*.png --output demo_int8.npz --precision int8 --budget 0.5
  python -c "import numpy as np; np.save('tiny.npy', np.load('$fixtures/tiny_full.npz')['images']); np.save('t2t.npy', np.load('$fixtures/t2t_tiny_transformer_heads_tokens_normpolicy.npz')['images'])"
  run infer_tiny infer tiny tiny.npy --output tiny_infer.npz
  run infer_t2t infer t2t t2t.npy --output t2t_infer.npz --batch-size 1
  run evaluate_demo evaluate demo --json evaluate.json
  run inspect_demo inspect demo "$samples/digit_3.png" --out digit3.png
  run inspect_grid inspect demo "$samples"/*.png --grid --out grid.png
  run error_missing infer demo nothere.png
  run error_exists export "$fixtures/tiny_full.pth.tar" --out tiny
  run error_budget infer demo "$samples"/*.png --budget 0.9
  rm -rf demo tiny t2t
}

outputs "$work/old" "$work/a"
outputs "$new" "$work/b"
cd "$work"
python - a b <<'PY'
import sys
from pathlib import Path

import numpy as np
from PIL import Image

a, b = map(Path, sys.argv[1:3])
names = sorted({p.name for p in a.iterdir()} | {p.name for p in b.iterdir()})
differ = []
for name in names:
    pa, pb = a / name, b / name
    if not (pa.exists() and pb.exists()):
        differ.append(f"{name}: only in {'old' if pa.exists() else 'new'}")
    elif name.endswith(".png"):
        x, y = (np.asarray(Image.open(p)).astype(int) for p in (pa, pb))
        d = np.abs(x - y).max() if x.shape == y.shape else None
        print(f"{name}: " + ("other size" if d is None else f"largest pixel difference {d}/255, {int((np.abs(x - y).max(-1) > 0).sum())} pixels"))
    elif name.endswith(".npz"):
        with np.load(pa) as za, np.load(pb) as zb:
            same = sorted(za.files) == sorted(zb.files) and all(np.array_equal(za[k], zb[k]) for k in za.files)
        print(f"{name}: {'identical arrays' if same else 'DIFFERENT'}")
        same or differ.append(name)
    else:
        same = pa.read_bytes() == pb.read_bytes()
        print(f"{name}: {'identical' if same else 'DIFFERENT'}")
        same or differ.append(name)
print("differences:", ", ".join(differ) if differ else "none")
sys.exit(1 if differ else 0)
PY
