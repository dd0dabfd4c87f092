#!/usr/bin/env bash
# Rebuilds third_party/h2/ from the h2 release in cargo's registry cache and applies our
# patch (see patches/README.md). Run from the repository root after `cargo fetch`, and again
# for every h2 release we move to (security fixes included): change VERSION, re-run, check
# that the patch applied, run scripts/test.sh and the memory test.
set -euo pipefail
VERSION=0.4.20
PATCH=patches/h2-$VERSION-release-idle-buffers.patch
cd "$(dirname "${BASH_SOURCE[0]}")/.."

src=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -maxdepth 2 -type d -name "h2-$VERSION" | head -1)
if [[ -z $src ]]; then
  echo "h2 $VERSION is not in cargo's registry cache: run 'cargo fetch' first (without the [patch] entry)" >&2
  exit 1
fi
rm -rf third_party/h2
mkdir -p third_party/h2
cp -r "$src/src" "$src/LICENSE" third_party/h2/
# The published manifest without its generated header and the targets we do not ship
# (examples, benches, dev-dependencies): a library to build, nothing else.
python3 - "$src/Cargo.toml" third_party/h2/Cargo.toml <<'PY'
import re, sys
text = open(sys.argv[1]).read()
out, keep = [], True
for line in text.splitlines():
    if line.startswith("#"):
        continue
    m = re.match(r"^\[\[?([^\]]+)\]\]?$", line)
    if m:
        section = m.group(1)
        keep = not (section in ("example", "bench", "test") or section.startswith("dev-dependencies")
                    or section.startswith("package.metadata"))
    if keep and not re.match(r"^(readme|documentation|homepage)\s*=", line):
        out.append(line)
open(sys.argv[2], "w").write("\n".join(out).strip() + "\n")
PY
patch -d third_party/h2 -p1 --quiet < "$PATCH"
# The patch uses tokio-util's FramedRead::read_buffer_mut (0.7.9 and later) and bytes'
# BytesMut::try_reclaim (1.7 and later).
sed -i '/^\[dependencies.tokio-util\]/{n;s/^version = .*/version = "0.7.9"/}' third_party/h2/Cargo.toml
sed -i '/^\[dependencies.bytes\]/{n;s/^version = .*/version = "1.7"/}' third_party/h2/Cargo.toml
echo "third_party/h2: h2 $VERSION with $PATCH"
