#!/usr/bin/env bash
# Re-fetches the asciinema-player bundle the recorder's web UI embeds, from
# npm, into recorder/assets/asciinema-player/: the built JS and CSS and the
# package's LICENSE (Apache-2.0). Usage: fetch-asciinema-player.sh [VERSION]
# Then update the version in recorder/src/web/assets.rs and docs/recorder.md.
set -euo pipefail

version="${1:-3.17.0}"
here="$(cd "$(dirname "$0")" && pwd)"
dest="$here/asciinema-player"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

(cd "$work" && npm pack --silent "asciinema-player@$version" >/dev/null)
tar -xzf "$work/asciinema-player-$version.tgz" -C "$work"
pkg="$work/package"
[ "$(node -p "require('$pkg/package.json').license")" = "Apache-2.0" ] ||
  { echo "asciinema-player $version is not Apache-2.0 licensed; check before bundling" >&2; exit 1; }

mkdir -p "$dest"
cp "$pkg/dist/bundle/asciinema-player.min.js" "$pkg/dist/bundle/asciinema-player.css" "$pkg/LICENSE" "$dest/"
echo "$version" >"$dest/VERSION"
ls -l "$dest"
