#!/usr/bin/env bash
# install.sh: build swictation and install it as a systemd user service. Safe to run again: it
# upgrades the binaries and the unit, and never touches an existing config file.
#
#   deploy/install.sh [--skip-build] [--skip-setup]
#
#   --skip-build   install the binaries already in target/release
#   --skip-setup   do not run deploy/setup.sh (models and ONNX Runtime already installed)
#
# Installs:
#   ~/.local/bin/{swictation,swictation-vad-worker,swictation-asr-worker}
#   $XDG_DATA_HOME/swictation/...            models and ONNX Runtime (deploy/setup.sh)
#   ~/.config/systemd/user/swictation.service (+ swictation.service.d/10-install.conf)
#   ~/.config/swictation/config.toml         only if there is none
set -euo pipefail
cd "$(dirname "$0")/.."

skip_build=0 skip_setup=0
for arg in "$@"; do
  case $arg in
    --skip-build) skip_build=1 ;;
    --skip-setup) skip_setup=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "install: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

log() { printf 'install: %s\n' "$*" >&2; }
die() { printf 'install: error: %s\n' "$*" >&2; exit 1; }

[ -n "${HOME:-}" ] || die "HOME is not set"
# The unit's ExecStart is %h/.local/bin/swictation, so that is where the binaries go.
BIN=$HOME/.local/bin
CONFIG_HOME=${XDG_CONFIG_HOME:-$HOME/.config}
UNIT_DIR=$CONFIG_HOME/systemd/user
CONFIG=$CONFIG_HOME/swictation/config.toml
BINARIES=(swictation swictation-vad-worker swictation-asr-worker)

# ---- 1. build -------------------------------------------------------------------------------
if [ $skip_build -eq 0 ]; then
  command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) first"
  log "building release binaries"
  cargo build --release -p swictation -p swictation-vad-worker -p swictation-asr-worker
fi
for b in "${BINARIES[@]}"; do
  [ -x "target/release/$b" ] || die "target/release/$b is missing: run without --skip-build"
done

# ---- 2. binaries ------------------------------------------------------------------------------
install -d -m 0755 "$BIN"
for b in "${BINARIES[@]}"; do
  # Copy then rename: overwriting a binary in place fails with "Text file busy" while the daemon
  # runs it, and a half-written file must never be what the service starts.
  install -m 0755 "target/release/$b" "$BIN/.$b.new"
  mv -f "$BIN/.$b.new" "$BIN/$b"
done
log "installed ${BINARIES[*]} into $BIN"
case ":$PATH:" in
  *":$BIN:"*) ;;
  *) log "note: $BIN is not on your PATH; add it to use the swictation command" ;;
esac

# ---- 3. models and runtime ---------------------------------------------------------------------
if [ $skip_setup -eq 0 ]; then
  deploy/setup.sh
fi
eval "$(deploy/setup.sh --print)"
# The prepared Moonshine files (cached: a no-op when they are already there and valid).
deploy/prepare.sh "$BIN/swictation-asr-worker"

# ---- 4. the unit ------------------------------------------------------------------------------
install -d -m 0755 "$UNIT_DIR" "$UNIT_DIR/swictation.service.d"
install -m 0644 deploy/swictation.service "$UNIT_DIR/.swictation.service.new"
mv -f "$UNIT_DIR/.swictation.service.new" "$UNIT_DIR/swictation.service"
# The data paths as setup.sh resolved them here (XDG_DATA_HOME, SWICTATION_DATA_DIR may differ
# from the unit's default). Regenerated on every run; put your own overrides in another file of
# that directory.
dropin=$UNIT_DIR/swictation.service.d/10-install.conf
{
  echo "# Written by deploy/install.sh; regenerated each time it runs. Put your own overrides in"
  echo "# another file here (e.g. 20-local.conf) or use: systemctl --user edit swictation"
  echo "[Service]"
  printf 'Environment="SWICTATION_DATA_DIR=%s"\n' "$SWICTATION_DATA_DIR"
  printf 'Environment="SWICTATION_ORT_LIB=%s"\n' "$SWICTATION_ORT_LIB"
} >"$dropin.new"
mv -f "$dropin.new" "$dropin"
log "installed the unit into $UNIT_DIR"

# ---- 5. config --------------------------------------------------------------------------------
if [ -e "$CONFIG" ]; then
  log "keeping the existing $CONFIG"
else
  install -d -m 0755 "$(dirname "$CONFIG")"
  # Prefer the installed binary's own defaults; fall back to the checked-in copy of them (the
  # same text: a unit test keeps deploy/config.example.toml in sync).
  if ! "$BIN/swictation" config default >"$CONFIG.new" 2>/dev/null || [ ! -s "$CONFIG.new" ]; then
    cp deploy/config.example.toml "$CONFIG.new"
  fi
  chmod 0644 "$CONFIG.new"
  mv -n "$CONFIG.new" "$CONFIG"  # -n: never replace one that appeared meanwhile
  rm -f "$CONFIG.new"
  log "wrote the default configuration to $CONFIG"
fi

# ---- 6. what next ------------------------------------------------------------------------------
cat <<MSG

swictation is installed. Enable and start it with:

  systemctl --user daemon-reload && systemctl --user enable --now swictation

Then: swictation status     (logs: journalctl --user -u swictation -f)
Configuration: $CONFIG
MSG
if command -v systemctl >/dev/null && systemctl --user is-active --quiet swictation 2>/dev/null; then
  echo "It is running now: after daemon-reload, 'systemctl --user restart swictation' picks up this build."
fi
