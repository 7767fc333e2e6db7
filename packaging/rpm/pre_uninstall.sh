# %preun, as %systemd_preun: on removal (not upgrade) stop and disable.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl --no-reload disable --now kpr-proxy.service >/dev/null 2>&1 || :
fi
