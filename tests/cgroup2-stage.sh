#!/bin/sh
# Hand idle cgroup v1 controllers over to the cgroup2 hierarchy of a hybrid host, and back,
# so that tests/test_cgroups_v2.py can test them for real.
#
#   tests/cgroup2-stage.sh enter [controller...]   # default: pids hugetlb cpu cpuset blkio
#   python3 -m pytest -q tests/test_cgroups_v2.py
#   tests/cgroup2-stage.sh leave                   # remount what `enter` moved
#   tests/cgroup2-stage.sh status
#
# A v1 controller can move only when its hierarchy has no child cgroups (then unmounting it
# destroys the hierarchy and frees the controller); one with children is skipped with a warning.
# Never use it while other things (docker, other test runs) need the v1 hierarchies.
set -eu

STATE=/run/pyruntime-cgroup2-stage
UNIFIED=$(awk '{ split($0, a, " - "); split(a[2], b, " "); if (b[1] == "cgroup2") { print $5; exit } }' /proc/self/mountinfo)
[ -n "$UNIFIED" ] || { echo "no cgroup2 mount: not a hybrid host" >&2; exit 1; }

v2name() { if [ "$1" = blkio ]; then echo io; else echo "$1"; fi; }

# mount point and controller list of the v1 hierarchy holding controller $1
v1mount() {
    awk -v c="$1" '{ split($0, a, " - "); split(a[2], b, " ");
        if (b[1] != "cgroup") next;
        n = split(b[3], o, ","); for (i = 1; i <= n; i++) if (o[i] == c) { print $5; exit } }' \
        /proc/self/mountinfo
}

has() { grep -qw "$2" "$1/cgroup.controllers" 2>/dev/null; }

enter() {
    [ $# -gt 0 ] || set -- pids hugetlb cpu cpuset blkio
    for c in "$@"; do
        mnt=$(v1mount "$c")
        if [ -z "$mnt" ]; then
            echo "$c: no v1 hierarchy (already in cgroup2?)"; continue
        fi
        if [ -n "$(find "$mnt" -mindepth 1 -maxdepth 1 -type d | head -1)" ]; then
            echo "$c: skipped, $mnt has child cgroups: $(find "$mnt" -mindepth 1 -maxdepth 1 -type d | tr '\n' ' ')" >&2
            continue
        fi
        opts=$(awk -v m="$mnt" '$5 == m { split($0, a, " - "); split(a[2], b, " "); print b[3]; exit }' /proc/self/mountinfo)
        umount "$mnt"
        echo "$c $mnt $opts" >> "$STATE"
        v=$(v2name "$c")
        i=0
        until has "$UNIFIED" "$v"; do
            i=$((i + 1)); [ $i -lt 100 ] || { echo "$c: did not show up in cgroup2" >&2; break; }
            sleep 0.05
        done
        if echo "+$v" > "$UNIFIED/cgroup.subtree_control" 2>/dev/null; then
            echo "$c: moved to cgroup2 ($UNIFIED) as $v"
        else
            echo "$c: in cgroup2 but could not enable +$v in $UNIFIED/cgroup.subtree_control" >&2
        fi
    done
}

leave() {
    [ -f "$STATE" ] || { echo "nothing staged"; return 0; }
    rc=0
    tac "$STATE" | while read -r c mnt opts; do
        v=$(v2name "$c")
        echo "-$v" > "$UNIFIED/cgroup.subtree_control" 2>/dev/null ||
            echo "$c: cannot disable $v in cgroup2 (a child cgroup still uses it?)" >&2
        mkdir -p "$mnt"
        i=0
        until mount -t cgroup -o "$c" cgroup "$mnt" 2>/dev/null; do
            i=$((i + 1))
            if [ $i -ge 100 ]; then echo "$c: cannot remount at $mnt" >&2; rc=1; break; fi
            sleep 0.05
        done
        [ $i -lt 100 ] && echo "$c: back at $mnt"
    done
    rm -f "$STATE"
    return $rc
}

case "${1:-}" in
    enter) shift; enter "$@" ;;
    leave) leave ;;
    status)
        echo "cgroup2 at $UNIFIED: $(cat "$UNIFIED/cgroup.controllers")"
        [ -f "$STATE" ] && { echo "staged:"; cat "$STATE"; } || echo "nothing staged" ;;
    *) echo "usage: $0 enter [controller...] | leave | status" >&2; exit 2 ;;
esac
