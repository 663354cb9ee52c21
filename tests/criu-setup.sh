#!/bin/bash
# A CRIU that passes `criu check` on this host, for checkpoint/restore (tests/setup.sh calls this).
# Debian 12's criu 3.17 stops on newer kernels ("vdso: Unexpected rt vDSO area bounds"), so when
# no working criu is found we build Debian 13's source package (criu 4.1.x builds against
# Debian 12's libraries) and install it as $PREFIX/sbin/criu, which comes before /usr/sbin on
# PATH. Idempotent; the first build takes a few minutes on 2 cores.
# Env: PREFIX (/usr/local), CRIU_BUILD (work dir, /tmp/criu-build), CRIU_SUITE (trixie).
set -euo pipefail
PREFIX=${PREFIX:-/usr/local}
W=${CRIU_BUILD:-/tmp/criu-build}
SUITE=${CRIU_SUITE:-trixie}

works() { "$1" check -o /dev/null >/dev/null 2>&1; }  # -o: not a log in the cwd
for c in "$PREFIX/sbin/criu" "$(command -v criu || true)"; do
  if [ -n "$c" ] && [ -x "$c" ] && works "$c"; then
    echo "criu: $c ($("$c" --version | head -1)) passes check"; exit 0
  fi
done

apt_get() { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 "$@"; }
apt_get install -y -qq libprotobuf-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler \
  python3-protobuf libnl-3-dev libnet1-dev libcap-dev libaio-dev libbsd-dev pkg-config \
  libgnutls28-dev libnftables-dev libdrm-dev uuid-dev gcc make curl iproute2 >/dev/null

if [ ! -f "$W/src/Makefile" ]; then
  # Only the source index of $SUITE, in apt state of our own: the host's sources stay as they are.
  st=$W/apt; mkdir -p "$st/lists/partial" "$st/cache"
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$mirror" ] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list)
  echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $SUITE main" \
    >"$st/sources.list"
  own=(-o Dir::Etc::sourcelist="$st/sources.list" -o Dir::Etc::sourceparts=/nonexistent
       -o Dir::State::Lists="$st/lists" -o Dir::Cache="$st/cache")
  apt-get "${own[@]}" update -qq
  # --print-uris gives the orig tarball's URL and its SHA256 from the signed index.
  line=$(cd "$W" && apt-get "${own[@]}" --print-uris source criu | grep '\.orig\.tar') ||
    { echo "criu-setup: no criu source in $SUITE" >&2; exit 1; }
  read -r url file _ sum <<<"$line"
  url=${url//\'/}
  curl -fsS -o "$W/$file" "$url"
  echo "${sum#SHA256:}  $W/$file" | sha256sum -c --quiet
  mkdir -p "$W/src"
  tar -xf "$W/$file" -C "$W/src" --strip-components=1
fi
make -C "$W/src" -j"$(nproc)" criu >"$W/build.log" 2>&1 ||
  { tail -20 "$W/build.log" >&2; echo "criu-setup: build failed, see $W/build.log" >&2; exit 1; }
install -D -m 0755 "$W/src/criu/criu" "$PREFIX/sbin/criu"
"$PREFIX/sbin/criu" check
echo "criu: $PREFIX/sbin/criu ($("$PREFIX/sbin/criu" --version | head -1))"
