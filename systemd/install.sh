#!/usr/bin/env bash
# Installs (or removes) punctual as a systemd service. See --help.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: systemd/install.sh [--prefix DIR] [--no-build] [--binary FILE]
       systemd/install.sh --uninstall [--prefix DIR]

Installs punctual as a systemd service:
  PREFIX/bin/punctual                 the binary
  /etc/systemd/system/punctual.service  the unit (ExecStart= points at the binary)
  /etc/default/punctual               settings, from systemd/punctual.env; only
                                      written when absent, never overwritten
Every path is prefixed with $DESTDIR when it is set (for staging or packaging).
Running it again is harmless: files already up to date are left alone.

Options:
  --prefix DIR    install the binary under DIR/bin (default: /usr/local)
  --no-build      do not run `cargo build --release --locked`; install the
                  binary that is already built (or the one given by --binary)
  --binary FILE   install FILE as the binary (implies --no-build)
  --uninstall     stop and disable the service, remove the binary and the unit;
                  /etc/default/punctual is removed only if it is still the
                  unmodified example, so an operator's settings survive
  -h, --help      show this text

Environment:
  DESTDIR           install into this directory instead of / (systemctl is
                    then not touched)
  CARGO_TARGET_DIR  where cargo puts the build (default: target/ in the repo)

Without DESTDIR this needs root. cargo is often not on root's PATH, so build
first, then install:
  cargo build --release --locked && sudo systemd/install.sh --no-build

The unit is overwritten on every install: change it with drop-ins
(`systemctl edit punctual`), not by editing the installed file.
EOF
}

die() {
  echo "install.sh: $*" >&2
  exit 1
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
unit_src="$here/punctual.service"
env_src="$here/punctual.env"
default_prefix=/usr/local

prefix=$default_prefix
build=yes
binary=
action=install
while [[ $# -gt 0 ]]; do
  case "$1" in
    --prefix)
      [[ $# -ge 2 ]] || die "--prefix needs a directory"
      prefix=$2
      shift 2
      ;;
    --prefix=*)
      prefix=${1#--prefix=}
      shift
      ;;
    --no-build)
      build=no
      shift
      ;;
    --binary)
      [[ $# -ge 2 ]] || die "--binary needs a file"
      binary=$2
      build=no
      shift 2
      ;;
    --binary=*)
      binary=${1#--binary=}
      build=no
      shift
      ;;
    --uninstall)
      action=uninstall
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      die "unknown argument: $1 (see --help)"
      ;;
  esac
done

# The prefix ends up in ExecStart=, where spaces, quotes and % (systemd
# specifiers) would change its meaning: accept only plain absolute paths.
[[ $prefix =~ ^/[A-Za-z0-9._/+-]*$ ]] || die "--prefix must be an absolute path of letters, digits and ._/+- (got '$prefix')"
while [[ $prefix == */ && $prefix != / ]]; do prefix=${prefix%/}; done
[[ $prefix == / ]] && prefix=

destdir=${DESTDIR:-}
bin_path="$prefix/bin/punctual"      # where the service finds it
bin_dest="$destdir$bin_path"         # where this run writes it
unit_dest="$destdir/etc/systemd/system/punctual.service"
env_dest="$destdir/etc/default/punctual"

# systemctl is used only on the live system, and only when systemd runs it.
live_systemd() {
  [[ -z $destdir && -d /run/systemd/system ]] && command -v systemctl >/dev/null
}

if [[ -z $destdir && $(id -u) -ne 0 ]]; then
  die "installing into / needs root (or set DESTDIR to stage the files elsewhere)"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Copies $1 to $2 with mode $3 unless $2 already has that content and mode.
# The new file is renamed into place, so a running binary is never rewritten.
put() {
  local src=$1 dest=$2 mode=$3
  if [[ -f $dest ]] && cmp -s "$src" "$dest" && [[ $(stat -c %a "$dest") == "${mode#0}" ]]; then
    echo "unchanged  $dest"
    return
  fi
  mkdir -p "$(dirname "$dest")"
  install -m "$mode" "$src" "$dest.new.$$"
  mv -f "$dest.new.$$" "$dest"
  echo "installed  $dest"
}

remove() {
  if [[ -e $1 || -L $1 ]]; then
    rm -f "$1"
    echo "removed    $1"
  fi
}

if [[ $action == uninstall ]]; then
  if live_systemd && [[ -f $unit_dest ]]; then
    systemctl disable --now punctual.service || echo "install.sh: could not stop or disable punctual.service; removing it anyway" >&2
  fi
  remove "$bin_dest"
  remove "$unit_dest"
  if [[ -f $env_dest ]]; then
    if cmp -s "$env_src" "$env_dest"; then
      remove "$env_dest"
    else
      echo "kept       $env_dest (it holds local settings; delete it by hand if unwanted)"
    fi
  fi
  if live_systemd; then
    systemctl daemon-reload
  fi
  exit 0
fi

if [[ $build == yes ]]; then
  (cd "$repo" && cargo build --release --locked)
fi
if [[ -z $binary ]]; then
  target=${CARGO_TARGET_DIR:-target}
  [[ $target == /* ]] || target="$repo/$target"
  binary="$target/release/punctual"
fi
[[ -f $binary && -x $binary ]] || die "no executable binary at $binary (build it, or pass --binary FILE)"

# ExecStart= in the shipped unit names the default prefix; point it at the
# binary actually installed.
unit_tmp="$tmp/punctual.service"
if [[ $bin_path == "$default_prefix/bin/punctual" ]]; then
  cp "$unit_src" "$unit_tmp"
else
  awk -v exec_start="ExecStart=$bin_path" \
    '/^ExecStart=/ { print exec_start; next } { print }' "$unit_src" >"$unit_tmp"
fi
grep -qx "ExecStart=$bin_path" "$unit_tmp" || die "the unit has no ExecStart= line to point at $bin_path"

put "$binary" "$bin_dest" 0755
put "$unit_tmp" "$unit_dest" 0644
if [[ -e $env_dest ]]; then
  echo "kept       $env_dest (existing settings are never overwritten)"
else
  # It may come to hold PUNCTUAL_TOKEN: readable by root only.
  put "$env_src" "$env_dest" 0600
fi

if live_systemd; then
  systemctl daemon-reload
fi

echo
if [[ -n $destdir ]]; then
  echo "Staged under $destdir. Once the files are in place on the target system:"
else
  echo "Installed. To start it now and at every boot, then follow its log:"
fi
echo "  systemctl enable --now punctual"
echo "  journalctl -fu punctual"
