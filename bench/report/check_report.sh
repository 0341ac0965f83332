#!/usr/bin/env bash
# check_report.sh REPORT.html [OUT.png]
# Renders a `pretext report` page in headless Chromium (Debian's `chromium`) and checks that
# the browser drew it: every figure's section is in the rendered DOM, the inline SVG plots and
# the nearest neighbours (an image grid, or a table of texts) are there, and the screenshot is
# not blank. Exit 1 with a reason otherwise.
set -euo pipefail
html=$(realpath "$1")
png=${2:-${html%.html}.png}
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "check_report: chromium is not installed (apt-get install chromium)" >&2; exit 1; }
flags=(--headless --no-sandbox --disable-gpu --disable-dev-shm-usage --hide-scrollbars)
dom=$(mktemp)
trap 'rm -f "$dom"' EXIT
"$browser" "${flags[@]}" --dump-dom "file://$html" > "$dom" 2>/dev/null
"$browser" "${flags[@]}" --window-size=1100,5200 --screenshot="$png" "file://$html" >/dev/null 2>&1
python3 - "$dom" "$png" <<'PY'
import re, struct, sys, zlib
dom = open(sys.argv[1], encoding="utf-8").read()
need = ["overview", "curves", "time", "labels", "map", "neighbours", "confusion", "config"]
missing = [s for s in need if f'id="{s}"' not in dom]
if missing:
    sys.exit(f"check_report: the rendered page lacks the sections {missing}")
if dom.count("<svg") < 4:
    sys.exit(f"check_report: only {dom.count('<svg')} SVG figures rendered (want the curves and the map)")
m = re.search(r'<section id="neighbours">(.*?)</section>', dom, re.S)
if not m or ("data:image/png;base64," not in m.group(1) and "<table" not in m.group(1)):
    sys.exit("check_report: the nearest neighbours (image grid or text table) are missing")
# Decode the screenshot's pixel rows (zlib stream of the IDAT chunks) and require variety:
# a blank page is one colour.
raw = open(sys.argv[2], "rb").read()
if raw[:8] != b"\x89PNG\r\n\x1a\n":
    sys.exit("check_report: the screenshot is not a PNG")
pos, idat, width = 8, b"", 0
while pos < len(raw):
    n, kind = struct.unpack(">I4s", raw[pos:pos + 8])
    body = raw[pos + 8:pos + 8 + n]
    if kind == b"IHDR":
        width, height = struct.unpack(">II", body[:8])
    elif kind == b"IDAT":
        idat += body
    pos += 12 + n
pixels = zlib.decompress(idat)
distinct = len(set(pixels[i:i + 3] for i in range(0, len(pixels) - 3, 997)))
if distinct < 20:
    sys.exit(f"check_report: the screenshot looks blank ({distinct} distinct colours sampled)")
print(f"check_report: ok: {len(need)} sections, {dom.count('<svg')} SVG figures, "
      f"neighbours, screenshot {width}x{height} with {distinct} sampled colours")
PY
