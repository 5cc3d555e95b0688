"""Linux: /proc, the passwd database, cgroups, pidfd, flock, POSIX file modes, systemd."""
