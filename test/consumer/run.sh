#!/usr/bin/env bash
# The issue's "done when": a C program outside this repository, built only
# with `pkg-config --cflags --libs uvstall` against the installed library,
# gets for a 250 ms busy loop and a 250 ms sleep on its loop thread a stall
# record while the stall is still going on, whose frames name the culprit,
# and a stall_end of 250 +- 15 ms.
#
# usage: run.sh BUILD_DIR [SOURCE_DIR]
#
# Installs BUILD_DIR into a temporary DESTDIR, copies consumer.c out of the
# tree, compiles it with the installed uvstall.pc alone, runs it against the
# installed libuvstall and judges its output with check.py.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 || $1 == -h || $1 == --help ]]; then
  sed -n '2,12s/^# \{0,1\}//p' "$0"
  [[ $# -ge 1 && ( $1 == -h || $1 == --help ) ]] && exit 0
  exit 2
fi
build=$(cd "$1" && pwd)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "${2:-$here/../..}" && pwd)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/uvstall-consumer.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

fail() {
  echo "FAIL: $*"
  exit 1
}

# 1. Install.
DESTDIR="$tmp/root" meson install -C "$build" --no-rebuild --quiet ||
  fail "meson install -C $build failed"
pc=$(find "$tmp/root" -name uvstall.pc -print -quit)
[[ -n $pc ]] || fail "no uvstall.pc under the installed tree $tmp/root"
echo "PASS: installed; using $pc"

# 2. Build from a copy outside the tree, with the installed .pc and nothing else.
# Relocate the .pc to DESTDIR. Not with --define-prefix: pkgconf guesses the
# prefix as the directory above the one holding pkgconfig/, which for
# Debian's multiarch libdir (lib/x86_64-linux-gnu) is <prefix>/lib.
PKG_CONFIG_PATH=$(dirname "$pc")
export PKG_CONFIG_PATH
prefix=$tmp/root$(pkg-config --variable=prefix uvstall)
pc_args=(--define-variable=prefix="$prefix")
flags=$(pkg-config "${pc_args[@]}" --cflags --libs uvstall) ||
  fail "pkg-config --cflags --libs uvstall failed"
libdir=$(pkg-config "${pc_args[@]}" --variable=libdir uvstall)
case " $flags $libdir " in
  *"$src"* | *"$build"*) fail "pkg-config points into the source or build tree: $flags" ;;
esac
[[ $libdir == "$tmp/root"/* ]] || fail "the installed libdir is not under DESTDIR: $libdir"
mkdir "$tmp/consumer"
cp "$here/consumer.c" "$tmp/consumer/"
cd "$tmp/consumer"
# shellcheck disable=SC2086  # $flags is a list of words
cc -std=c11 -Wall -Wextra -Wpedantic -Werror -O2 -o consumer consumer.c $flags ||
  fail "compiling consumer.c with: cc ... \$(pkg-config --cflags --libs uvstall) = $flags"
echo "PASS: compiled with: $flags"

# 3. Run it against the installed library (and make sure that is the one used).
export LD_LIBRARY_PATH=$libdir
loaded=$(ldd ./consumer | awk '$1 ~ /^libuvstall\.so/ { print $3 }')
[[ $loaded == "$libdir"/* ]] || fail "consumer would load libuvstall from '${loaded:-nowhere}', not $libdir"
echo "PASS: consumer loads $loaded"
./consumer >output.txt 2>stderr.txt || {
  cat output.txt stderr.txt
  fail "consumer exited with status $?"
}
cat output.txt stderr.txt

# 4. Judge.
/usr/bin/python3 "$here/check.py" output.txt
