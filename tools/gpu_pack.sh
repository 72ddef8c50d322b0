#!/usr/bin/env bash
# Prepares a GPU measurement for the workplace's device machine (which has no Rust toolchain
# and no network): builds the CLI and the kernel benches here, strips and compresses them into
# `.gpu/` (git-ignored through .git/info/exclude), fetches the Vulkan loader packages into
# `.gl/`, and leaves the test fixtures (50 MB the device does not need) out of the working
# tree with a sparse checkout, so that what travels stays under the device's 64 MiB.
#
#   bash tools/gpu_pack.sh            # then: device run, carry [".gpu", ".gl"],
#                                     #   command "bash tools/gpu_run.sh"
#   bash tools/gpu_pack.sh --restore  # afterwards: the fixtures back (sparse checkout off)
#
# Nothing here changes what git commits: the fixtures are skip-worktree while left out.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--restore" ]; then
    git sparse-checkout disable
    echo "fixtures restored"
    exit 0
fi

for d in /.gpu/ /.gl/; do
    grep -qxF "$d" .git/info/exclude 2>/dev/null || echo "$d" >>.git/info/exclude
done

cargo build --release
cargo bench --no-run
mkdir -p .gpu
rm -f .gpu/*
strip -o .gpu/sd-wgpu target/release/sd-wgpu
for b in matmul conv2d attention norm elementwise; do
    f=$(ls -t target/release/deps/"$b"-* | grep -v '\.d$' | head -1)
    strip -o ".gpu/bench-$b" "$f"
done
gzip -9 .gpu/*

if ! ls .gl/*.deb >/dev/null 2>&1; then
    mkdir -p .gl /tmp/amd64/partial
    o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    # shellcheck disable=SC2086
    apt-get $o update -qq
    # shellcheck disable=SC2086
    (cd .gl && apt-get $o download libvulkan1)
fi

git sparse-checkout set --no-cone '/*' '!/tests/fixtures/'
du -sh .gpu .gl
echo "working tree that travels: $(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1) bytes tracked + .gpu + .gl"
echo "restore the fixtures afterwards: bash tools/gpu_pack.sh --restore"
