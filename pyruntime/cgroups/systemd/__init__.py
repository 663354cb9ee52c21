"""The systemd cgroup driver (`--systemd-cgroup`): the container's cgroup is a transient unit.

    names.py       cgroupsPath "slice:prefix:name" -> the unit, its slice, its dirs
    properties.py  linux.resources -> the unit properties runc sends
    dbus.py        a blocking client of systemd's Manager (jeepney, imported only when a bus
                   is needed)
    manager.py     SystemdManager: the cgroupfs Manager whose cgroup is a unit

The unit is started over D-Bus once the first pid and linux.resources are known (a scope cannot
be empty), with the resource properties runc sends (so that a daemon-reload or an update keeps
them); then the cgroupfs code applies all of linux.resources to the dirs systemd made, as runc's
systemd manager does. systemd owns its dirs: delete stops the unit and removes only the dirs we
made in hierarchies systemd does not manage (v1 freezer, cpuset, hugetlb...).
"""
