#!/usr/bin/env bash
# Builds one virtual environment per peer framework under benchmarks/peers/.envs/ (git-ignored):
#   trl           TRL 1.16.0
#   axolotl       Axolotl 0.19.0 (the newest release installable on Python 3.11)
#   llamafactory  LLaMA-Factory 0.9.5
# Every install uses the project's constraints.txt (torch==2.13.0, so nothing pulls a CUDA build).
# Usage: bash benchmarks/peers/build_envs.sh [trl] [axolotl] [llamafactory]   (default: all three, one at a time)
# Idempotent: an environment whose marker file exists is kept; delete benchmarks/peers/.envs/NAME to rebuild.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
ENVS="$HERE/.envs"
CONSTRAINTS="$ROOT/constraints.txt"
PY="${PYTHON:-python3.11}"
mkdir -p "$ENVS"

pip_in() {  # pip_in NAME ARGS...: pip of that environment (never another environment's pip)
  local name=$1
  shift
  "$ENVS/$name/bin/python" -m pip "$@"
}

new_env() {  # $1 = name
  rm -rf "$ENVS/$1"
  "$PY" -m venv "$ENVS/$1"
  "$ENVS/$1/bin/python" -m pip install -q --upgrade pip wheel setuptools
}

build_trl() {
  new_env trl
  "$ENVS/trl/bin/python" -m pip install -c "$CONSTRAINTS" torch==2.13.0 trl==1.16.0 peft==0.21.2 psutil pillow
}

build_axolotl() {
  new_env axolotl
  pip_in axolotl install -c "$CONSTRAINTS" torch==2.13.0
  # The full dependency set includes GPU-only kernels (xformers, triton, flash-linear-attention) that have
  # no build for torch 2.13 on CPU; install Axolotl itself without them, then the pure-Python rest.
  if ! pip_in axolotl install -c "$CONSTRAINTS" axolotl==0.19.0; then
    echo "axolotl: full install failed; installing without the GPU-only kernels" >&2
    pip_in axolotl install -c "$CONSTRAINTS" --no-deps axolotl==0.19.0 axolotl-contribs-lgpl==0.0.7 axolotl-contribs-mit==0.0.6
    "$ENVS/axolotl/bin/python" - "$CONSTRAINTS" <<'PYEOF'
import importlib.metadata as md, subprocess, sys
skip = {"xformers", "triton", "fla-core", "flash-linear-attention", "liger-kernel", "modal", "gradio",
        "lm-eval", "lm_eval", "openenv-core", "s3fs", "gcsfs", "adlfs", "ocifs", "wandb", "trackio",
        "mistral-common", "posthog", "nvidia-ml-py", "tensorboard", "torchao", "axolotl-contribs-lgpl",
        "axolotl-contribs-mit"}
reqs = []
for r in md.requires("axolotl") or []:
    if "extra ==" in r:
        continue
    name = r.split(";")[0].strip()
    base = name.replace("<", " ").replace(">", " ").replace("=", " ").replace("!", " ").split()[0]
    if base.lower() not in skip:
        reqs.append(name)
subprocess.check_call([sys.executable, "-m", "pip", "install", "-c", sys.argv[1], *reqs])
PYEOF
  fi
  pip_in axolotl install -c "$CONSTRAINTS" psutil pillow
}

build_llamafactory() {
  new_env llamafactory
  pip_in llamafactory install -c "$CONSTRAINTS" torch==2.13.0 llamafactory==0.9.5 psutil pillow
  # On CPU: torchvision's compiled operators do not load against torch 2.13 (import fails on
  # torchvision::nms), and torchaudio's extension .so files break the import of transformers' audio
  # utilities. LLaMA-Factory's text and image paths need neither.
  pip_in llamafactory uninstall -y torchvision || true
  find "$ENVS/llamafactory/lib" -path '*torchaudio*' -name '*.so' -delete || true
}

targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(trl axolotl llamafactory)
for t in "${targets[@]}"; do
  if [ -f "$ENVS/$t/.built" ]; then echo "$t: already built"; continue; fi
  echo "== building $t"
  start=$(date +%s)
  "build_$t"
  date -u > "$ENVS/$t/.built"
  echo "$t: built in $(( $(date +%s) - start )) s"
done
