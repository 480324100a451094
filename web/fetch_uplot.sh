#!/bin/sh
# Fetch the pinned uPlot (MIT) from the npm registry and copy its unmodified
# browser build, stylesheet and licence into web/static/. An update is one edit
# of VERSION and one run of this script; the files are checked in, so the page
# never loads anything from the internet at run time.
set -eu
VERSION=1.6.32
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "uplot@$VERSION" >/dev/null)
tar -xzf "$work/uplot-$VERSION.tgz" -C "$work"
for f in dist/uPlot.iife.min.js dist/uPlot.min.css LICENSE; do
    cp "$work/package/$f" "$here/static/"
done
mv "$here/static/LICENSE" "$here/static/uPlot.LICENSE"
echo "uPlot $VERSION -> $here/static/ (uPlot.iife.min.js, uPlot.min.css, uPlot.LICENSE)"
