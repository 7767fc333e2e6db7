# %pre: the user and group exist before files owned by them are unpacked.
# Fedora's %sysusers_create_compat does the same: systemd-sysusers with the
# package's sysusers.d line; useradd where there is no systemd-sysusers.
if command -v systemd-sysusers >/dev/null 2>&1; then
    echo 'u kpr-proxy - "kpr-proxy Kafka partition remapper" / /usr/sbin/nologin' |
        systemd-sysusers --replace=/usr/lib/sysusers.d/kpr-proxy.conf -
else
    getent group kpr-proxy >/dev/null || groupadd -r kpr-proxy
    getent passwd kpr-proxy >/dev/null ||
        useradd -r -g kpr-proxy -d / -s /usr/sbin/nologin -c "kpr-proxy Kafka partition remapper" kpr-proxy
fi
