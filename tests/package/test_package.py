"""The .deb and .rpm of scripts/package (issue 12): lint, contents, and the
.deb's life on this machine: install, run the unit's command lines as the
kpr-proxy user against a real Tansu with a real client, upgrade with an
edited conffile, remove, purge.

Needs root (dpkg -i). Installs what it needs (scripts/install-deps package;
scripts/package installs cargo-deb and cargo-generate-rpm) and leaves the
machine as it found it: the package is purged at the end, whatever happened.
systemd does not run services here, so the unit is checked with
systemd-analyze and its Exec lines are run by hand, as systemd would run
them (user, group, LimitNOFILE).
"""

import grp
import os
import pwd
import re
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import clients  # noqa: E402
import harness  # noqa: E402
from harness import Broker, Process, free_port  # noqa: E402

CONFFILE = Path("/etc/kpr-proxy/kpr-proxy.yaml")
UNIT = Path("/usr/lib/systemd/system/kpr-proxy.service")
MAX_EXPOSURE = 2.0
README = ROOT / "packaging" / "README"


def cargo_version():
    text = (ROOT / "Cargo.toml").read_text()
    return re.search(r'^version = "([^"]+)"$', text, re.M).group(1)


def run(*argv, check=True, env=None, timeout=900):
    """Runs argv; returns (exit code, stdout + stderr)."""
    out = subprocess.run([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, env=env, timeout=timeout, stdin=subprocess.DEVNULL)
    if check:
        assert out.returncode == 0, f"{' '.join(map(str, argv))} exited {out.returncode}:\n{out.stdout[-4000:]}"
    return out.returncode, out.stdout


def purge():
    run("dpkg", "-P", "kpr-proxy", "kpr-proxy-dbgsym", check=False)


def installed_version():
    code, out = run("dpkg-query", "-W", "-f=${Status} ${Version}", "kpr-proxy", check=False)
    return out.split()[-1] if code == 0 and "install ok installed" in out else None


def bumped(version):
    major, minor, patch = version.split(".")[:3]
    return f"{major}.{minor}.{int(re.match(r'[0-9]+', patch).group()) + 1}"


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    """{deb, ddeb, rpm, upgrade_deb}: the packages of this checkout, and a
    .deb with a higher version (same files) for the upgrade."""
    assert os.geteuid() == 0, "the package tests install with dpkg: run as root"
    run(ROOT / "scripts" / "install-deps", "package")
    started = time.monotonic()
    run(ROOT / "scripts" / "package")
    print(f"scripts/package took {time.monotonic() - started:.0f} s")
    version = cargo_version()
    # cargo-deb empties target/debian on its next run: keep these aside.
    built = tmp_path_factory.mktemp("built")
    for path in [*(ROOT / "target" / "debian").iterdir(), *(ROOT / "target" / "generate-rpm").iterdir()]:
        shutil.copy(path, built)
    upgrade_dir = tmp_path_factory.mktemp("upgrade")
    env = dict(os.environ, KPR_PACKAGE_VERSION=bumped(version), KPR_PACKAGE_OUT=str(upgrade_dir),
               KPR_PACKAGE_FAST="1")
    run(ROOT / "scripts" / "package", env=env)
    found = {
        "deb": sorted(built.glob(f"kpr-proxy_{version}-1_*.deb")),
        "ddeb": sorted(built.glob(f"kpr-proxy-dbgsym_{version}-1_*.ddeb")),
        "rpm": sorted(built.glob(f"kpr-proxy-{version}-1.*.rpm")),
        "upgrade_deb": sorted(upgrade_dir.glob(f"kpr-proxy_{bumped(version)}-1_*.deb")),
    }
    for name, paths in found.items():
        assert len(paths) == 1, f"{name}: expected one package, found {paths}"
    return {name: paths[0] for name, paths in found.items()}


def readme_reasons():
    """The lint tags packaging/README lists with a reason."""
    return set(re.findall(r"^- `([a-z0-9-]+)`", README.read_text(), re.M))


def test_lintian_finds_no_errors_and_every_warning_is_explained(packages):
    code, out = run("lintian", "--tag-display-limit", "0", packages["deb"], check=False)
    print(out)
    tags = re.findall(r"^([EW]): kpr-proxy(?: [a-z]+)?: ([a-z0-9-]+)", out, re.M)
    errors = [t for level, t in tags if level == "E"]
    assert errors == [] and code == 0, f"lintian errors: {errors}\n{out}"
    unexplained = {t for level, t in tags if level == "W"} - readme_reasons()
    assert not unexplained, f"lintian warnings not explained in packaging/README: {unexplained}"


def test_rpmlint_finds_no_errors_and_every_warning_is_explained(packages):
    _, out = run("rpmlint", "-c", ROOT / "packaging" / "rpmlint.toml", packages["rpm"], check=False)
    print(out)
    summary = re.search(r"(\d+) errors?, (\d+) warnings?", out)
    assert summary, f"no rpmlint summary:\n{out}"
    errors = re.findall(r"^\S+: E: ([a-z0-9-]+)", out, re.M)
    assert int(summary.group(1)) == 0 and not errors, f"rpmlint errors: {errors}\n{out}"
    warnings = set(re.findall(r"^\S+: W: ([a-z0-9-]+)", out, re.M))
    unexplained = warnings - readme_reasons()
    assert not unexplained, f"rpmlint warnings not explained in packaging/README: {unexplained}"


def test_rpm_files_modes_owners_and_scripts(packages):
    rpm = packages["rpm"]
    _, listing = run("rpm", "-qlp", rpm)
    assert set(listing.split()) == {
        "/usr/bin/kpr-proxy",
        "/etc/kpr-proxy/kpr-proxy.yaml",
        "/usr/lib/systemd/system/kpr-proxy.service",
        "/usr/lib/sysusers.d/kpr-proxy.conf",
        "/usr/share/man/man1/kpr-proxy.1.gz",
        "/usr/share/doc/kpr-proxy/README.md",
        "/usr/share/doc/kpr-proxy/CHANGELOG.md",
        "/usr/share/doc/kpr-proxy/copyright",
    }, listing
    _, table = run("rpm", "-qp", "--queryformat",
                   "[%{FILENAMES} %{FILEMODES:octal} %{FILEUSERNAME} %{FILEGROUPNAME} %{FILEFLAGS:fflags}\\n]", rpm)
    files = {f[0]: f[1:] for f in (line.split() + [""] for line in table.splitlines())}
    assert files["/usr/bin/kpr-proxy"][:3] == ["100755", "root", "root"], files
    # The configuration may hold passwords: group kpr-proxy reads it, an
    # upgrade never replaces an edited one (%config(noreplace): flags c, n).
    mode, user, group, flags = files["/etc/kpr-proxy/kpr-proxy.yaml"][:4]
    assert (mode, user, group) == ("100640", "root", "kpr-proxy"), files
    assert "c" in flags and "n" in flags, f"conffile flags {flags!r}"
    for path in ("/usr/lib/systemd/system/kpr-proxy.service", "/usr/lib/sysusers.d/kpr-proxy.conf"):
        assert files[path][:3] == ["100644", "root", "root"], (path, files[path])
    _, scripts = run("rpm", "-qp", "--scripts", rpm)
    sections = re.split(r"^(\w+) scriptlet.*:$", scripts, flags=re.M)
    by_name = dict(zip(sections[1::2], sections[2::2]))
    assert "systemd-sysusers" in by_name.get("preinstall", ""), scripts
    assert "systemctl --no-reload preset kpr-proxy.service" in by_name.get("postinstall", ""), scripts
    assert "disable --now kpr-proxy.service" in by_name.get("preuninstall", ""), scripts
    assert "try-restart kpr-proxy.service" in by_name.get("postuninstall", ""), scripts
    _, requires = run("rpm", "-qp", "--requires", rpm)
    assert "libssl.so.3" in requires, requires
    # The binary is stripped of debug info only; the symbols are the -dbgsym package's.
    _, ddeb = run("dpkg-deb", "-c", packages["ddeb"])
    assert re.search(r"usr/lib/debug/\.build-id/[0-9a-f]{2}/[0-9a-f]+\.debug", ddeb), ddeb


def exec_line(unit_text, key):
    """argv of the unit's `key=` line (one line, no specifiers but $MAINPID)."""
    lines = [l.split("=", 1)[1] for l in unit_text.splitlines() if l.startswith(f"{key}=")]
    assert len(lines) == 1, f"{key}: {lines}"
    return shlex.split(lines[0])


def as_service_user(argv, unit_text):
    """argv run as systemd runs the unit's commands: User=, Group=, LimitNOFILE=."""
    user = re.search(r"^User=(\S+)$", unit_text, re.M).group(1)
    group = re.search(r"^Group=(\S+)$", unit_text, re.M).group(1)
    nofile = int(re.search(r"^LimitNOFILE=(\d+)$", unit_text, re.M).group(1))
    # systemd (PID 1) may raise the hard limit; this test only up to its own.
    nofile = min(nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    return ["prlimit", f"--nofile={nofile}", "setpriv", f"--reuid={user}", f"--regid={group}",
            "--init-groups", "--no-new-privs", "--", *argv]


def test_deb_installs_serves_upgrades_and_is_removed(packages, tmp_path):
    version = cargo_version()
    purge()
    assert installed_version() is None
    try:
        run("dpkg", "-i", packages["deb"])
        assert installed_version() == f"{version}-1"

        # The installed files, not the build tree's.
        assert shutil.which("kpr-proxy") == "/usr/bin/kpr-proxy"
        _, out = run("/usr/bin/kpr-proxy", "--version")
        assert out.startswith(f"kpr-proxy {version}"), out
        _, where = run("man", "-w", "kpr-proxy")
        assert where.strip() == "/usr/share/man/man1/kpr-proxy.1.gz", where
        _, page = run("man", "kpr-proxy", env=dict(os.environ, MANPAGER="cat", MANWIDTH="100"))
        assert "--offline" in page and "/etc/kpr-proxy/kpr-proxy.yaml" in page, page[:2000]
        for doc in ("README.md", "changelog.gz", "copyright", "changelog.Debian.gz"):
            assert (Path("/usr/share/doc/kpr-proxy") / doc).is_file(), doc

        user = pwd.getpwnam("kpr-proxy")
        assert grp.getgrgid(user.pw_gid).gr_name == "kpr-proxy"
        assert user.pw_shell == "/usr/sbin/nologin" and user.pw_uid < 1000, user
        _, conffiles = run("dpkg-query", "-W", "-f=${Conffiles}", "kpr-proxy")
        assert str(CONFFILE) in conffiles, conffiles
        st = CONFFILE.stat()
        assert (oct(st.st_mode & 0o777), st.st_uid, grp.getgrgid(st.st_gid).gr_name) == \
            ("0o640", 0, "kpr-proxy"), st
        st = CONFFILE.parent.stat()
        assert (oct(st.st_mode & 0o777), grp.getgrgid(st.st_gid).gr_name) == ("0o750", "kpr-proxy"), st

        # The unit: accepted, and at most MAX_EXPOSURE by systemd's measure.
        code, out = run("systemd-analyze", "verify", UNIT, check=False)
        assert code == 0, out
        _, out = run("systemd-analyze", "security", "--offline=true", UNIT)
        exposure = float(re.search(r"Overall exposure level for kpr-proxy\.service: ([0-9.]+)", out).group(1))
        print(f"systemd-analyze security: exposure {exposure}")
        assert exposure <= MAX_EXPOSURE, out
        unit = UNIT.read_text()
        assert re.search(r"^CapabilityBoundingSet=$", unit, re.M), "capabilities must be empty"

        # The shipped example checks offline as is (no broker on 9092 here).
        _, out = run(*as_service_user(exec_line(unit, "ExecStartPre"), unit))
        assert "configuration is valid" in out and "not contacted" in out, out
        serve_through_the_unit(unit, tmp_path)

        # Upgrade: the edited conffile stays as edited.
        edited = CONFFILE.read_text()
        run("dpkg", "-i", "--force-confold", packages["upgrade_deb"])
        assert installed_version() == f"{bumped(version)}-1"
        assert CONFFILE.read_text() == edited, "the upgrade replaced the edited conffile"
        assert not Path(f"{CONFFILE}.dpkg-dist").exists() and not Path(f"{CONFFILE}.dpkg-new").exists()
        st = CONFFILE.stat()
        assert (oct(st.st_mode & 0o777), grp.getgrgid(st.st_gid).gr_name) == ("0o640", "kpr-proxy"), st

        run("dpkg", "-r", "kpr-proxy")
        assert not Path("/usr/bin/kpr-proxy").exists() and not UNIT.exists()
        assert CONFFILE.read_text() == edited, "dpkg -r must keep the conffile"
        run("dpkg", "-P", "kpr-proxy")
        assert not CONFFILE.exists() and not CONFFILE.parent.exists()
        code, _ = run("dpkg-statoverride", "--list", CONFFILE, check=False)
        assert code != 0, "purge left the statoverride"
    finally:
        purge()


def serve_through_the_unit(unit, tmp_path):
    """Points the conffile at a fresh Tansu, runs ExecStartPre (with the
    broker still down: offline) and ExecStart as the service user, and
    produces and consumes through it."""
    broker = Broker(tmp_path)
    port = free_port()
    text = CONFFILE.read_text()
    assert '"localhost:9092"' in text and '"127.0.0.1:9192"' in text
    CONFFILE.write_text(text.replace('"localhost:9092"', f'"{broker.address}"')
                        .replace('"127.0.0.1:9192"', f'"127.0.0.1:{port}"'))
    _, out = run(*as_service_user(exec_line(unit, "ExecStartPre"), unit))
    assert "configuration is valid" in out, out
    proxy = None
    try:
        broker.start()
        proxy = Process("kpr-proxy (unit ExecStart)", as_service_user(exec_line(unit, "ExecStart"), unit),
                        tmp_path / "proxy.log")
        deadline = time.monotonic() + 20
        while not harness.port_open(port):
            assert proxy.alive() and time.monotonic() < deadline, proxy.describe()
            time.sleep(0.2)
        _, ps = run("ps", "-o", "user=", "-p", proxy.pid)
        assert ps.strip() == "kpr-proxy", f"ExecStart runs as {ps!r}"
        bootstrap = f"127.0.0.1:{port}"
        clients.create_topic(bootstrap, "packaged", 2)
        records = clients.make_records([0, 1], 50, tag="pkg")
        clients.produce_confluent(bootstrap, "packaged", records)
        consumed = clients.consume_confluent(bootstrap, "packaged", [0, 1], len(records))
        clients.check_records(records, consumed)
        print(f"served {len(consumed)} records through the unit's ExecStart")
    finally:
        if proxy is not None:
            code, graceful = proxy.stop()
            assert graceful and code == 0, f"exit {code}\n{proxy.describe()}"
        broker.stop()
