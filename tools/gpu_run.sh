#!/usr/bin/env bash
# The one prepared GPU measurement (run on the device machine, after tools/gpu_pack.sh here):
# the adapter, SD 1.5 at 512² (f16 with guidance, batch 2 and 1, JSON), a profiled step, the
# built-in model, then the kernel benches; every result lands in $OUT. Each stage has a time
# limit so one slow stage cannot use up the session's device time.
#
#   GPU_RUN_QUICK=1 bash tools/gpu_run.sh   # a short dry run (here, on lavapipe) of the script
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp/xdg}
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"

# The Vulkan loader, if the machine has none (see the device tool's README).
if ! ldconfig -p | grep -q libvulkan.so.1 && ls .gl/*.deb >/dev/null 2>&1; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi

bin=/tmp/sd-wgpu-bin
mkdir -p "$bin"
if ls .gpu/*.gz >/dev/null 2>&1; then
    for f in .gpu/*.gz; do gunzip -c "$f" >"$bin/$(basename "$f" .gz)"; done
else
    cp target/release/sd-wgpu "$bin/sd-wgpu"
fi
chmod +x "$bin"/*
sd="$bin/sd-wgpu"
quick=${GPU_RUN_QUICK:-}
size=512
steps=10
[ -n "$quick" ] && size=64 && steps=2

# At most 8 files come back from the device: four, appended to stage by stage.
stage() { # file, limit in seconds, command...
    local file=$1 limit=$2
    shift 2
    echo "== $*" | tee -a "$OUT/$file.txt"
    timeout "$limit" "$@" >>"$OUT/$file.txt" 2>&1
    echo "   exit $?"
}

stage info 60 "$sd" info
stage sd15 240 "$sd" bench --arch sd15 --width $size --height $size --batch 2 \
    --steps $steps --dtype f16 --sampler ddim --json
stage sd15 180 "$sd" bench --arch sd15 --width $size --height $size --batch 1 \
    --steps $steps --dtype f16 --sampler ddim --json
stage sd15 180 "$sd" bench --arch sd15 --width $size --height $size --batch 2 \
    --steps 1 --dtype f16 --sampler ddim --profile
stage builtin 60 "$sd" bench --arch builtin --steps 30
stage builtin 60 "$sd" bench --arch builtin --steps 30 --profile
if [ -z "$quick" ]; then
    for b in matmul conv2d attention norm elementwise; do
        [ -x "$bin/bench-$b" ] || continue
        stage benches 120 "$bin/bench-$b" --bench --warm-up-time 1 --measurement-time 2
    done
fi
ls -la "$OUT"
