#!/usr/bin/env bash
# Screenshots of a rendered report in headless Chromium (Debian's package: apt-get install -y chromium), to
# look at what a reader sees. Takes the report folder (index.html and the notebook pages) and where to put
# the PNGs (not committed). Every host name fails to resolve for the browser, so a page that needs the
# network shows it. WINDOW_SIZE=1400,6000 for a longer page.
#   python -m integration.report /tmp/report && .ci/screenshots.sh /tmp/report /tmp/shots
set -euo pipefail
report=$(cd "${1:?usage: $0 REPORT_DIR [OUT_DIR]}" && pwd)
out=${2:-/tmp/report-screenshots}
mkdir -p "$out"
profile=$(mktemp -d)  # a new empty profile each run: no state carried between screenshots
trap 'rm -rf "$profile"' EXIT
for page in "$report"/*.html; do
  # flags for a sandbox-less root session on a closed network (no background fetches, no first-run UI)
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars \
    --host-resolver-rules="MAP * ~NOTFOUND" \
    --window-size="${WINDOW_SIZE:-1400,3000}" --screenshot="$out/$(basename "$page" .html).png" \
    "file://$page" 2>/dev/null
done
ls "$out"/*.png
