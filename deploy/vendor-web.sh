#!/usr/bin/env bash
# Vendor the web assets the API serves (Swagger UI and ReDoc for /docs and /redoc, uPlot for the
# web UI's charts), so nothing is fetched from the internet at run time. Each package comes from
# the npm registry at the pinned version below (`npm pack`), and only the files served are kept,
# with the package's license.
# service/static/vendor/MANIFEST lists package@version and each file's sha256; a test checks it.
#
#   deploy/vendor-web.sh        (needs npm; run it again after changing a version)
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
    "swagger-ui-dist@5.35.0:swagger-ui-bundle.js swagger-ui.css favicon-32x32.png LICENSE"
    "redoc@2.5.4:bundles/redoc.standalone.js LICENSE"
    "uplot@1.6.32:dist/uPlot.iife.min.js dist/uPlot.min.css LICENSE"
)
dest=service/static/vendor
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rm -rf "$dest"
mkdir -p "$dest"
: >"$tmp/MANIFEST"
for entry in "${PACKAGES[@]}"; do
    spec=${entry%%:*}
    name=${spec%@*}
    (cd "$tmp" && npm pack --silent "$spec" >/dev/null)
    mkdir -p "$tmp/$name" "$dest/$name"
    tar -xzf "$tmp/${name}-${spec#*@}.tgz" -C "$tmp/$name"
    for file in ${entry#*:}; do
        cp "$tmp/$name/package/$file" "$dest/$name/$(basename "$file")"
        echo "$spec $name/$(basename "$file") $(sha256sum "$dest/$name/$(basename "$file")" | cut -d' ' -f1)" >>"$tmp/MANIFEST"
    done
done
cp "$tmp/MANIFEST" "$dest/MANIFEST"
echo "vendor-web: $(wc -l <"$dest/MANIFEST") files in $dest"
