# %postun, as %systemd_postun_with_restart: after an upgrade, restart a
# running service on the new binary. The user and group stay (as Fedora's
# packaging guidelines ask).
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart kpr-proxy.service >/dev/null 2>&1 || :
    fi
fi
