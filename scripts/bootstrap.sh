#!/usr/bin/env bash
# Installs what STOQ needs and is missing: Debian packages and pinned PyPI tools.
# Idempotent and quiet when everything is present. Run by every Makefile target.
set -euo pipefail

DEB_PACKAGES=(
  pkg-config
  libngtcp2-dev libngtcp2-crypto-gnutls-dev libgnutls28-dev   # QUIC + TLS
  libnghttp3-dev                                               # HTTP/3 framing and QPACK (the front door)
  ngtcp2-client ngtcp2-server                                 # peers for interop and bench
  libzstd-dev                                                  # compression
  libisal-dev                                                  # erasure coding
  libsqlite3-dev                                               # GRDB
  sqlite3                                                      # store tests damage an index on purpose
  iproute2                                                     # network-namespace tests
  openssl                                                      # certificate interop checks in tests
  curl                                                         # HTTPS front-door tests (HTTP/1.1, HTTP/2)
  chromium                                                     # headless browser tests of the front door (HTTPS/TCP and HTTP/3 forced onto QUIC)
  ffmpeg                                                       # makes the small webm video the browser journey seeks and plays
  python3-pip
  tmux                                                         # the progress journey reads what a terminal user sees (capture-pane)
  softhsm2 gnutls-bin                                          # keys in a PKCS#11 token: the SoftHSM2 journey (p11tool reads the token's flags)
)
# Only `make bench` needs these (STOQ_BENCH=1): keeps `make test` and CI from installing them.
if [ "${STOQ_BENCH:-0}" = 1 ]; then
  DEB_PACKAGES+=(nginx-light nghttp2-client)                   # bench peers for the front door: nginx over HTTP/2, h2load drives both
  DEB_PACKAGES+=(restic)                                       # bench peer for the store: restic backup beside stoq put
fi
PY_PACKAGES=(
  "aioquic==1.7.2"      # third-party QUIC stack for interop tests and bench
  "pyfastcdc==0.3.1"    # FastCDC peer for the content bench
  "pytest==9.0.3"       # runs the interop and network-namespace tests
  "pytest-xdist==3.8.0" # runs independent process tests side by side (make test's journeys, interop)
  "kubernetes-validate==1.37.0"  # deploy/ checks: Kubernetes API schemas (bundled, offline); brings PyYAML
)

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
need_py=()
for spec in "${PY_PACKAGES[@]}"; do
  name=${spec%%==*}; want=${spec##*==}
  have=$($PY -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null || true)
  [ "$have" = "$want" ] || need_py+=("$spec")
done
if ((${#need_py[@]})); then
  echo "bootstrap: installing PyPI packages: ${need_py[*]}"
  $PY -m pip install -q --disable-pip-version-check --root-user-action=ignore "${need_py[@]}" 2>/dev/null \
    || $PY -m pip install -q --disable-pip-version-check --break-system-packages "${need_py[@]}"
fi

command -v swift >/dev/null || { echo "bootstrap: the Swift 6 toolchain must be on PATH (swift.org/install)" >&2; exit 1; }
