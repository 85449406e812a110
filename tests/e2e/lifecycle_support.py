"""Helpers for the lifecycle end-to-end test: extra package builds, a clean server for
every test, snapshots of the configuration, debconf reads and a postconf wrapper that
interrupts a run.

Like harness.py, these functions change the machine's /etc/postfix and /etc/dovecot and
expect to run as root inside the namespace that tests/e2e/run creates.
"""

import difflib
import json
import os
import shlex
import shutil
import subprocess
import time
import tomllib
from pathlib import Path
from typing import NamedTuple

import harness as h

REPO_ROOT = Path(__file__).resolve().parents[2]
BINARY = "postfix-submission"

# dpkg-query status abbreviations of a package that is not installed.
NOT_INSTALLED = ("", "un", "pn")

# The message that Dovecot's master process logs when it receives SIGHUP (doveadm reload).
DOVECOT_RELOAD_LOG_LINE = "SIGHUP received - reloading configuration"

# Seconds to wait for postlogd and Dovecot to write a log line that an action may have caused.
LOG_SETTLE_SECONDS = 3

# Seconds allowed for `cargo build --release`, which compiles every crate with LTO when
# the target directory has no release build yet.
BUILD_TIMEOUT = 1800

# The change that the third package makes to templates/main.cf.j2: one value of an
# existing setting and one new parameter.
TEMPLATE_OLD_LINE = "mua_relay_restrictions = permit_sasl_authenticated, reject\n"
TEMPLATE_NEW_LINE = "mua_relay_restrictions = permit_sasl_authenticated, defer\n"
TEMPLATE_NEW_PARAMETER = "smtpd_tls_received_header = yes\n"
TEMPLATE_CHANGED_SETTINGS = {
    "mua_relay_restrictions": "permit_sasl_authenticated, defer",
    "smtpd_tls_received_header": "yes",
}

# The wrapper that replaces postconf while a run is interrupted. A call that
# changes main.cf or master.cf is a write, whatever its options (-e, -X, -M, -P, ...).
# comm, the process name in /proc, is cut to 15 characters.
WRAPPER_DIR = Path("/usr/local/sbin")
REAL_POSTCONF = Path("/usr/sbin/postconf")
WRAPPER_SCRIPT = """\
#!/bin/sh
# Runs the real postconf. After the first call from postfix-submission that changes
# main.cf or master.cf, kills postfix-submission with SIGKILL, as a crash would.
files="{main_cf} {master_cf}"
before=$(cat $files | cksum)
{real} "$@"
status=$?
after=$(cat $files | cksum)
parent=$(cat /proc/$PPID/comm 2>/dev/null)
echo "parent=$parent args=$*" >>{log}
if [ "$before" != "$after" ] && [ "$parent" = {name} ] && [ ! -e {marker} ]; then
    : >{marker}
    echo "killed=$PPID" >>{log}
    kill -KILL $PPID
fi
exit $status
"""


class Packages(NamedTuple):
    """The .debs of the upgrade tests, all with the same binary."""

    previous: Path
    next: Path
    changed_templates: Path


# ---------------------------------------------------------------------------
# Package builds


def cargo_version():
    """Return the crate version from Cargo.toml, such as "0.1.0"."""
    with (REPO_ROOT / "Cargo.toml").open("rb") as manifest:
        return tomllib.load(manifest)["package"]["version"]


def cargo_target_dir():
    """Return cargo's target directory for this source tree."""
    output = h.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps", "--offline"],
        env={"CARGO_NET_OFFLINE": "true"},
    ).stdout
    return Path(json.loads(output)["target_directory"])


def copy_source_tree(destination):
    """Copy the source tree without target/ and .git to destination."""

    def ignored(directory, names):
        if Path(directory) == REPO_ROOT:
            return {"target", ".git"} & set(names)
        return set()

    shutil.copytree(REPO_ROOT, destination, ignore=ignored)


def change_main_template(source_dir):
    """Apply the TEMPLATE_* change to templates/main.cf.j2 in a copied source tree."""
    template = Path(source_dir) / "templates" / "main.cf.j2"
    text = template.read_text()
    if text.count(TEMPLATE_OLD_LINE) != 1:
        raise RuntimeError(
            f"{template} must contain the line {TEMPLATE_OLD_LINE.strip()!r} exactly once. "
            "Update TEMPLATE_OLD_LINE in tests/e2e/lifecycle_support.py to match the template"
        )
    text = text.replace(TEMPLATE_OLD_LINE, TEMPLATE_NEW_LINE)
    template.write_text(text + TEMPLATE_NEW_PARAMETER)


def cargo_deb(source_dir, version, output_dir, target_dir):
    """Package the already built binary with `cargo deb --no-build` and return the .deb.

    target_dir is a private cargo target directory holding release/postfix-submission.
    NOTE: cargo-deb 3.8 deletes older .debs of the package in <target>/debian even when
    --output points elsewhere, so building with the repository's own target directory
    would delete the .deb under test from target/debian.
    """
    result = h.run(
        [
            "cargo",
            "deb",
            "--offline",
            "--no-build",
            "--deb-version",
            version,
            "--output",
            f"{output_dir}/",
        ],
        env={"CARGO_TARGET_DIR": str(target_dir), "CARGO_NET_OFFLINE": "true"},
        cwd=source_dir,
    )
    deb = Path(result.stdout.strip().splitlines()[-1])
    if not deb.is_file():
        raise h.CommandFailed(f"cargo deb printed no path of a .deb\n{h.format_result(result)}")
    return deb


def build_packages(work_dir):
    """Build the three .debs of the upgrade tests and return them as Packages.

    The binary is built once with `cargo build --release` in this source tree. The
    previous and next packages differ only in their version, and the third one also has
    the TEMPLATE_* change in main.cf.j2. Cargo runs offline because the test's network
    namespace has only loopback, so every crate must already be in cargo's cache.
    """
    if shutil.which("cargo") is None:
        raise RuntimeError(
            "cargo not found on PATH. The upgrade tests build their packages with cargo deb, "
            "so run them through tools/run-tests, which puts cargo on PATH"
        )
    work_dir = Path(work_dir)
    h.run(
        ["cargo", "build", "--release", "--offline"],
        env={"CARGO_NET_OFFLINE": "true"},
        cwd=REPO_ROOT,
        timeout=BUILD_TIMEOUT,
    )
    staging = work_dir / "cargo-target"
    (staging / "release").mkdir(parents=True)
    shutil.copy2(cargo_target_dir() / "release" / BINARY, staging / "release" / BINARY)

    output_dir = work_dir / "debs"
    output_dir.mkdir()
    version = cargo_version()
    previous = cargo_deb(REPO_ROOT, f"{version}-1", output_dir, staging)
    following = cargo_deb(REPO_ROOT, f"{version}-2", output_dir, staging)

    changed_source = work_dir / "changed-source"
    copy_source_tree(changed_source)
    change_main_template(changed_source)
    changed = cargo_deb(changed_source, f"{version}-3", output_dir, staging)
    return Packages(previous, following, changed)


def deb_version(deb):
    """Return the Version field of a .deb."""
    return h.run(["dpkg-deb", "--field", str(deb), "Version"]).stdout.strip()


def installed_version():
    """Return the installed version of the package, or "" when it is not installed."""
    result = h.run(["dpkg-query", "-W", "-f=${Version}", h.PACKAGE], check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


def unpack_package(deb):
    """Unpack deb with `dpkg --unpack`, which runs the old prerm but no postinst."""
    return h.run(["dpkg", "--unpack", str(deb)], check=False, env=h.NONINTERACTIVE)


def configure_package():
    """Configure the unpacked package with `dpkg --configure`."""
    return h.run(["dpkg", "--configure", h.PACKAGE], check=False, env=h.NONINTERACTIVE)


def configure_pending():
    """Finish every unconfigured package with `dpkg --configure -a`."""
    return h.run(["dpkg", "--configure", "-a"], check=False, env=h.NONINTERACTIVE)


# ---------------------------------------------------------------------------
# A clean server


def purge_debconf_answers():
    """Delete the package's debconf values, as purging the package does."""
    h.run(["debconf-communicate", h.PACKAGE], input="PURGE\n", check=False)


def reset_server(ipv6):
    """Purge the package and run Postfix and Dovecot on the harness configuration.

    Postfix is stopped while main.cf and master.cf are rewritten, and its log starts
    empty. Dovecot keeps running when it already runs on the harness configuration
    without the package's snippet, because stopping it takes seconds. Its log is kept,
    so Dovecot reloads are counted from the value before an action.
    """
    if h.package_status() not in NOT_INSTALLED:
        result = h.purge_package()
        if result.returncode != 0:
            raise h.CommandFailed(f"purging {h.PACKAGE} failed\n{h.format_result(result)}")
    if h.debconf_show():
        purge_debconf_answers()
    if h.postfix_running():
        h.delete_test_messages()
    h.stop_postfix()
    restart_dovecot = dovecot_needs_restart()
    # A purge deletes both, but a failed purge or an interrupted test can leave them.
    h.DOVECOT_PRODUCT_SNIPPET.unlink(missing_ok=True)
    shutil.rmtree(h.STATE_DIR, ignore_errors=True)

    h.configure_postfix(ipv6)
    if restart_dovecot:
        h.stop_dovecot()
        h.configure_dovecot(ipv6)
        h.remove_stale_auth_socket()
        h.start_dovecot()
    h.start_postfix()


def dovecot_needs_restart():
    """Return whether Dovecot must be configured and started again for a clean state."""
    harness_files = (h.DOVECOT_TEST_SNIPPET, h.DOVECOT_USERS_FILE)
    return (
        h.dovecot_pid() is None
        or not all(path.exists() for path in harness_files)
        or h.DOVECOT_PRODUCT_SNIPPET.exists()
    )


def stop_servers():
    """Purge the package and stop Postfix and Dovecot, at the end of the test run."""
    if h.package_status() not in NOT_INSTALLED:
        h.purge_package()
    if h.debconf_show():
        purge_debconf_answers()
    if h.postfix_running():
        h.delete_test_messages()
    h.stop_postfix()
    h.stop_dovecot()
    h.remove_stale_auth_socket()


def make_certificate(directory, name):
    """Create a self-signed certificate and its key in directory, and return both paths.

    The key is an unencrypted P-256 key with mode 0600, as Postfix and the package's
    check that the key belongs to the certificate expect.
    """
    cert = Path(directory) / f"{name}-cert.pem"
    key = Path(directory) / f"{name}-key.pem"
    h.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "30",
            "-subj",
            f"/CN={name}.example.test",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ]
    )
    key.chmod(0o600)
    return cert, key


# ---------------------------------------------------------------------------
# Reading the configuration


def main_cf_settings():
    """Return every parameter that main.cf sets, read from the file itself.

    `postconf -n` leaves out parameters that nothing uses, such as the package's
    mua_*_restrictions once no master.cf entry refers to them, so it would hide a
    setting that a removal left behind. As in Postfix, a line that starts with
    whitespace continues the previous one, "#" at the start of a line begins a comment,
    and the last of several settings of one parameter wins.
    """
    logical_lines = []
    for line in h.MAIN_CF.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace() and logical_lines:
            logical_lines[-1] += " " + line.strip()
        else:
            logical_lines.append(line.strip())
    settings = {}
    for line in logical_lines:
        name, separator, value = line.partition("=")
        if separator:
            settings[name.strip()] = value.strip()
    return settings


def master_options():
    """Return the -o options of master.cf (`postconf -P`) keyed by service/type/name."""
    options = {}
    for line in h.run(["postconf", "-P"]).stdout.splitlines():
        name, separator, value = line.partition(" =")
        if separator:
            options[name.strip()] = value.strip()
    return options


def entry_options(options, entry):
    """Return the options of one entry, such as "submission/inet", keyed by name."""
    prefix = f"{entry}/"
    return {
        name[len(prefix) :]: value for name, value in options.items() if name.startswith(prefix)
    }


def master_entry_keys():
    """Return "service/type" of every active master.cf entry, duplicates included."""
    keys = []
    for line in h.run(["postconf", "-M"]).stdout.splitlines():
        fields = line.split()
        if len(fields) >= 2:
            keys.append(f"{fields[0]}/{fields[1]}")
    return keys


def with_edits(settings, *edits):
    """Return a copy of settings with each (name, value) edit applied."""
    edited = dict(settings)
    edited.update(edits)
    return edited


def configuration_snapshot():
    """Return the Postfix settings and the Dovecot snippet, for comparing two moments."""
    return {
        "main.cf parameters": main_cf_settings(),
        "master.cf options": master_options(),
        "master.cf entries": master_entry_keys(),
        "Dovecot snippet": read_optional(h.DOVECOT_PRODUCT_SNIPPET),
    }


def differing_names(before, after):
    """Return the sorted names whose values differ between two dicts, or that one lacks."""
    return sorted(name for name in set(before) | set(after) if before.get(name) != after.get(name))


def describe_differences(before, after):
    """Format each differing name with its value before and after, for failure messages."""
    lines = [
        f"  {name}: {before.get(name, '(unset)')!r} -> {after.get(name, '(unset)')!r}"
        for name in differing_names(before, after)
    ]
    return "\n".join(lines) if lines else "  (none)"


def text_diff(before, after, name):
    """Return a unified diff of two byte strings, for failure messages."""
    lines = difflib.unified_diff(
        before.decode(errors="replace").splitlines(keepends=True),
        after.decode(errors="replace").splitlines(keepends=True),
        f"{name} before",
        f"{name} after",
    )
    return "".join(lines)


def read_optional(path):
    """Return a file's bytes, or None when it does not exist."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        return None


def state_files():
    """Return every file under the package's state directory, as relative path to bytes."""
    if not h.STATE_DIR.is_dir():
        return {}
    return {
        str(path.relative_to(h.STATE_DIR)): path.read_bytes()
        for path in sorted(h.STATE_DIR.rglob("*"))
        if path.is_file()
    }


def state_record():
    """Return the parsed state.json, or None when it does not exist."""
    text = read_optional(h.STATE_DIR / "state.json")
    return None if text is None else json.loads(text)


def package_status_json():
    """Return the parsed output of `postfix-submission status --format json`."""
    return json.loads(h.run([BINARY, "status", "--format", "json"]).stdout)


def managed_settings():
    """Return the managed settings from `status --format json`, keyed by name."""
    return {setting["name"]: setting for setting in package_status_json()["settings"]}


def debconf_answers(questions):
    """Return the debconf values of questions (names without the package prefix).

    A question that debconf does not know maps to None.
    """
    commands = "".join(f"GET {h.PACKAGE}/{question}\n" for question in questions)
    output = h.run(["debconf-communicate", h.PACKAGE], input=commands, check=False).stdout
    answers = {}
    for question, line in zip(questions, output.splitlines()):
        code, _, value = line.partition(" ")
        answers[question] = value if code == "0" else None
    return answers


# ---------------------------------------------------------------------------
# Logs


def dovecot_reload_count():
    """Return how many reloads Dovecot's log shows."""
    if not h.DOVECOT_LOG.exists():
        return 0
    text = h.DOVECOT_LOG.read_text(errors="replace")
    return sum(1 for line in text.splitlines() if DOVECOT_RELOAD_LOG_LINE in line)


def settle_logs():
    """Give postlogd and Dovecot time to write the log lines of the last action."""
    time.sleep(LOG_SETTLE_SECONDS)


def notice_lines(stderr, *words):
    """Return the lines of stderr that contain every one of words."""
    return [line for line in stderr.splitlines() if all(word in line for word in words)]


# ---------------------------------------------------------------------------
# Interrupting a run


def parent_pid(pid):
    """Return the parent of a process, from /proc/PID/stat."""
    status = Path(f"/proc/{pid}/stat").read_text()
    return int(status.rpartition(")")[2].split()[1])


def mount_namespace_differs_from_ancestor():
    """Return whether an ancestor process, such as tests/e2e/run, has another mount namespace.

    PID 1's namespace is not always readable, even for root, so the walk stops at the
    first process whose namespace cannot be read.
    """
    own = os.readlink("/proc/self/ns/mnt")
    pid = os.getppid()
    while pid > 0:
        try:
            if os.readlink(f"/proc/{pid}/ns/mnt") != own:
                return True
            pid = parent_pid(pid)
        except OSError:
            return False
    return False


def mount_namespace_is_private():
    """Return whether a mount on WRAPPER_DIR stays invisible to the rest of the system.

    The process must run in another mount namespace than its ancestors, and the mount
    that contains WRAPPER_DIR must not propagate to other namespaces.
    """
    if not mount_namespace_differs_from_ancestor():
        return False
    best_mount_point, best_tags = "", []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            separator = fields.index("-")
            mount_point, tags = fields[4], fields[6:separator]
            inside = str(WRAPPER_DIR) == mount_point or str(WRAPPER_DIR).startswith(
                mount_point.rstrip("/") + "/"
            )
            if inside and len(mount_point) >= len(best_mount_point):
                best_mount_point, best_tags = mount_point, tags
    return not any(tag.startswith("shared:") for tag in best_tags)


class PostconfInterrupter:
    """A tmpfs over /usr/local/sbin whose postconf kills postfix-submission after a write.

    /usr/local/sbin comes before /usr/sbin in the standard PATH, so the maintainer
    scripts find the wrapper instead of the real postconf. The tmpfs exists only in
    this process's private mount namespace, so the real /usr/local/sbin is never written.
    Use it as a context manager: the tmpfs is unmounted on exit.
    """

    def __init__(self, work_dir):
        self.log = Path(work_dir) / "postconf-wrapper.log"
        self.marker = Path(work_dir) / "postconf-wrapper.killed"
        self.mounted = False

    def __enter__(self):
        if not mount_namespace_is_private():
            raise RuntimeError(
                f"will not mount over {WRAPPER_DIR} because this process does not run in a "
                "private mount namespace. Run the test through tests/e2e/run"
            )
        self.log.unlink(missing_ok=True)
        self.marker.unlink(missing_ok=True)
        h.run(["mount", "-t", "tmpfs", "-o", "mode=0755,size=1m", "e2e-wrapper", str(WRAPPER_DIR)])
        self.mounted = True
        wrapper = WRAPPER_DIR / "postconf"
        wrapper.write_text(
            WRAPPER_SCRIPT.format(
                main_cf=h.MAIN_CF,
                master_cf=h.MASTER_CF,
                real=REAL_POSTCONF,
                log=shlex.quote(str(self.log)),
                marker=shlex.quote(str(self.marker)),
                name=BINARY[:15],
            )
        )
        wrapper.chmod(0o755)
        return self

    def __exit__(self, *exc_info):
        self.unmount()
        return False

    def unmount(self):
        """Unmount the tmpfs if it is mounted, so a second call does nothing."""
        if self.mounted:
            h.run(["umount", str(WRAPPER_DIR)])
            self.mounted = False

    def resolved_postconf(self):
        """Return the path that a shell with this process's PATH runs for `postconf`."""
        result = subprocess.run(
            ["sh", "-c", "command -v postconf"], capture_output=True, text=True, check=False
        )
        return result.stdout.strip()

    def log_lines(self):
        """Return the wrapper's log: one line per call, and one per kill."""
        if not self.log.exists():
            return []
        return self.log.read_text().splitlines()

    def killed(self):
        """Return whether the wrapper killed a postfix-submission process."""
        return self.marker.exists()
