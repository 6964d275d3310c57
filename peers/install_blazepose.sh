#!/usr/bin/env bash
# Install MediaPipe BlazePose (the peer model and 2D teacher) into its own venv, from nothing.
#
#   bash peers/install_blazepose.sh          # or: make blazepose-env
#
# mediapipe 0.10.21 is the last release with the legacy `mediapipe.solutions.pose` models
# bundled; it pins numpy<2 and protobuf<5, which clash with our stack, hence a separate venv
# (default .venv-mediapipe at the repository root; set MARGIPOSE_MEDIAPIPE_VENV to move it).
# The wheel ships the full landmark model only: lite and heavy come from the npm package
# @mediapipe/pose, copied into mediapipe/modules/pose_landmark/ (otherwise complexity 0 and 2
# try to download them at run time and fail offline). Idempotent: a stamp holding the install
# spec skips the work when nothing changed. Ends by running complexity 0, 1 and 2 on a photo.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$(realpath -m "${MARGIPOSE_MEDIAPIPE_VENV:-$ROOT/.venv-mediapipe}")"
PYTHON="${PYTHON:-python3}"

MEDIAPIPE="mediapipe==0.10.21"
# mediapipe's own requirements, less jax/jaxlib/sentencepiece/sounddevice that the legacy pose
# solution never imports; pillow for our runner.
DEPS=(absl-py "attrs>=19.1" "flatbuffers>=2.0" "numpy<2" opencv-contrib-python-headless==4.10.0.84
      "protobuf>=4.25.3,<5" matplotlib pillow)
NPM_PACKAGE="@mediapipe/pose@0.5.1675469404"
NPM_TARBALL="pose-0.5.1675469404.tgz"
NPM_INTEGRITY="sha512-DFZsNWTsSphRIZppnUCuunzBiHP2FdJXR9ehc7mMi4KG+oPaOH0Em3d6kr7Py+TSyTXC1doH88KcF28k2sBxsQ=="
MODELS=(pose_landmark_lite.tflite pose_landmark_heavy.tflite)
CHECK_PHOTO="$ROOT/data/photos/astronaut.jpg"

SPEC="$MEDIAPIPE ${DEPS[*]} $NPM_PACKAGE ${MODELS[*]}"
STAMP="$VENV/.installed"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$SPEC" ]; then
    echo "BlazePose venv up to date: $VENV"
    exit 0
fi

echo "Installing MediaPipe BlazePose into $VENV"
"$PYTHON" -m venv "$VENV"
echo '*' > "$VENV/.gitignore"  # keep the venv out of git wherever it lives
PY="$VENV/bin/python"
"$PY" -m pip install --quiet --upgrade pip
# Dependencies first, then mediapipe without its own: pip has nothing to complain about.
"$PY" -m pip install --quiet "${DEPS[@]}"
"$PY" -m pip install --quiet --no-deps "$MEDIAPIPE"

# The lite and heavy .tflite files from the npm tarball: `npm pack` where npm exists, else the
# tarball straight from the registry (the URL `npm view $NPM_PACKAGE dist.tarball` gives).
# Either way the tarball must match the registry's sha512 integrity.
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
if command -v npm >/dev/null 2>&1; then
    packed="$(cd "$TMP" && npm pack --silent "$NPM_PACKAGE" | tail -n 1)"
    [ "$packed" = "$NPM_TARBALL" ] || mv "$TMP/$packed" "$TMP/$NPM_TARBALL"
else
    REGISTRY="${NPM_CONFIG_REGISTRY:-https://registry.npmjs.org/}"
    URL="${REGISTRY%/}/@mediapipe/pose/-/$NPM_TARBALL"
    echo "npm not found: fetching $URL"
    "$PY" -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' \
        "$URL" "$TMP/$NPM_TARBALL"
fi
"$PY" - "$TMP/$NPM_TARBALL" "$NPM_INTEGRITY" <<'EOF'
import base64, hashlib, sys
path, integrity = sys.argv[1], sys.argv[2]
digest = "sha512-" + base64.b64encode(hashlib.sha512(open(path, "rb").read()).digest()).decode()
if digest != integrity:
    sys.exit(f"{path}: integrity {digest} does not match the registry's {integrity}")
EOF
tar -xzf "$TMP/$NPM_TARBALL" -C "$TMP"
DEST="$("$PY" -c 'import os, mediapipe; print(os.path.dirname(mediapipe.__file__))')/modules/pose_landmark"
for model in "${MODELS[@]}"; do
    install -m 0644 "$TMP/package/$model" "$DEST/$model"
done

# Verify: every complexity finds the person in a real photo (runner exits non-zero otherwise).
# MediaPipe's logging (glog, TFLite) goes to stderr: shown only when the check fails.
for complexity in 0 1 2; do
    if ! (cd "$ROOT" && "$PY" -m peers.blazepose --complexity "$complexity" --require-person \
            "$CHECK_PHOTO" >"$TMP/check.jsonl" 2>"$TMP/check.log"); then
        cat "$TMP/check.log" "$TMP/check.jsonl" >&2
        echo "BlazePose complexity $complexity failed on $CHECK_PHOTO (output above)" >&2
        exit 1
    fi
    echo "complexity $complexity: person found in $(basename "$CHECK_PHOTO")"
done

echo "$SPEC" > "$STAMP"
echo "BlazePose ready: $PY -m peers.blazepose --help"
