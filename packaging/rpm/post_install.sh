# %post, as %systemd_post: on first install the distribution's preset
# decides whether the unit is enabled (not started: the configuration needs
# the cluster's address first).
if [ "$1" -eq 1 ] && [ -d /run/systemd/system ]; then
    systemctl --no-reload preset kpr-proxy.service >/dev/null 2>&1 || :
fi
