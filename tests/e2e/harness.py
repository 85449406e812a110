"""Set up and drive the mail server that the end-to-end test installs the package on.

The functions here change the machine's /etc/postfix and /etc/dovecot and start Postfix
and Dovecot. They expect to run as root inside the private network and mount namespace
that tests/e2e/run creates, which also backs up and restores both folders.
"""

import hashlib
import json
import os
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

PACKAGE = "postfix-submission"
STATE_DIR = Path("/var/lib/postfix-submission")

MAIN_CF = Path("/etc/postfix/main.cf")
MASTER_CF = Path("/etc/postfix/master.cf")
DEBIAN_MAIN_CF = Path("/usr/share/postfix/main.cf.debian")
DEBIAN_MASTER_CF = Path("/usr/share/postfix/master.cf.dist")
MAILLOG = Path("/var/log/postfix-e2e.log")
SENDER_LOGIN_FILE = Path("/etc/postfix/e2e-sender-login")
SENDER_LOGIN_MAP = f"texthash:{SENDER_LOGIN_FILE}"

DOVECOT_CONF_D = Path("/etc/dovecot/conf.d")
DOVECOT_TEST_SNIPPET = DOVECOT_CONF_D / "95-e2e-test.conf"
DOVECOT_PRODUCT_SNIPPET = DOVECOT_CONF_D / "90-postfix-submission.conf"
DOVECOT_USERS_FILE = Path("/etc/dovecot/e2e-users")
DOVECOT_LOG = Path("/var/log/dovecot-e2e.log")
AUTH_SOCKET = Path("/var/spool/postfix/private/auth")

SNAKEOIL_CERT = Path("/etc/ssl/certs/ssl-cert-snakeoil.pem")
SNAKEOIL_KEY = Path("/etc/ssl/private/ssl-cert-snakeoil.key")

# Reserved domains (RFC 2606) that every test address uses.
TEST_DOMAINS = ("@example.test", "@example.net", "@example.org")

# A loopback port where nothing listens, so relayed mail can never leave.
CLOSED_RELAY_PORT = 2526

# The message that postfix-script logs on every "postfix reload".
RELOAD_LOG_LINE = "refreshing the Postfix mail system"

SMTP_TIMEOUT = 20
CONNECT_RETRY_SECONDS = 10
COMMAND_TIMEOUT = 300

USERS = {
    "alice@example.test": "alice-e2e-password",
    "bob@example.test": "bob-e2e-password",
}

# The debconf values that the test preseeds before the first install, as (type, value).
PRESEED_VALUES = {
    "services": ("multiselect", "submission, submissions"),
    "tls_cert_file": ("string", ""),
    "tls_key_file": ("string", ""),
    "sender_login_maps": ("string", SENDER_LOGIN_MAP),
    "auth_on_port_25": ("boolean", "false"),
    "client_checks": ("select", "standard"),
    "configure_dovecot": ("boolean", "true"),
}


class CommandFailed(AssertionError):
    """A command exited non-zero where the harness needs it to succeed."""


def format_result(result):
    """Format a finished command with its exit status and output, for failure messages."""
    command = " ".join(result.args) if isinstance(result.args, list) else result.args
    return (
        f"command: {command}\nexit status: {result.returncode}\n"
        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    )


def run(args, *, check=True, input=None, env=None, timeout=COMMAND_TIMEOUT, cwd=None):
    """Run a command with captured text output and return the CompletedProcess.

    Raises CommandFailed with the output when check is true and the exit status is not
    zero. stdin is /dev/null unless input is given, so no tool can wait for a terminal.
    env adds to the current environment, and cwd is the working directory.
    """
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    result = subprocess.run(
        args,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=cwd,
    )
    if check and result.returncode != 0:
        raise CommandFailed(format_result(result))
    return result


def run_detaching(args, timeout=60):
    """Run a command that leaves a daemon behind, and raise CommandFailed if it fails.

    The output goes to a temporary file instead of a pipe, because the daemon inherits
    the command's stdout and stderr and would keep a pipe open forever.
    """
    with tempfile.TemporaryFile(mode="w+") as output:
        result = subprocess.run(
            args, stdin=subprocess.DEVNULL, stdout=output, stderr=output, timeout=timeout
        )
        output.seek(0)
        text = output.read()
    if result.returncode != 0:
        raise CommandFailed(f"command: {' '.join(args)}\nexit status: {result.returncode}\n{text}")


def wait_until(condition, timeout, interval=0.5):
    """Call condition until it returns a true value or timeout seconds pass.

    Returns the last value, so a caller can assert on it and show what it was.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def ipv6_loopback_works():
    """Return whether a socket can bind to ::1 in this network namespace."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------
# Postfix


def postconf_n():
    """Return the parameters set in main.cf, as `postconf -n` prints them."""
    output = run(["postconf", "-n"]).stdout
    settings = {}
    for line in output.splitlines():
        name, _, value = line.partition(" = ")
        settings[name.strip()] = value.strip()
    return settings


def master_entries():
    """Return the active master.cf entries as a dict of "service/type" to the entry line."""
    output = run(["postconf", "-M"]).stdout
    entries = {}
    for line in output.splitlines():
        fields = line.split()
        if len(fields) >= 2:
            entries[f"{fields[0]}/{fields[1]}"] = line
    return entries


def baseline_main_cf_settings(ipv6):
    """Return the main.cf settings that the test sets before installing the package.

    They keep every message on this machine: loopback only, a relay host on a closed
    loopback port, deferred SMTP transports, no DNS, and discarded local mail.
    smtpd_relay_restrictions is Debian's default as its postinst writes it.
    """
    return {
        "myhostname": "mail.example.test",
        "myorigin": "$myhostname",
        "mydestination": "localhost",
        "mynetworks": "127.0.0.1/32 [::1]/128" if ipv6 else "127.0.0.1/32",
        "inet_interfaces": "loopback-only",
        "inet_protocols": "all" if ipv6 else "ipv4",
        "relayhost": f"[127.0.0.1]:{CLOSED_RELAY_PORT}",
        "defer_transports": "smtp, relay",
        "smtp_dns_support_level": "disabled",
        "smtpd_peername_lookup": "no",
        "maillog_file": str(MAILLOG),
        "alias_maps": "",
        "alias_database": "",
        "virtual_mailbox_domains": "example.test",
        "virtual_transport": "discard",
        "message_size_limit": "12345678",
        "mailbox_size_limit": "0",
        "recipient_delimiter": "+",
        "smtpd_relay_restrictions": (
            "permit_mynetworks permit_sasl_authenticated defer_unauth_destination"
        ),
        "smtpd_tls_cert_file": str(SNAKEOIL_CERT),
        "smtpd_tls_key_file": str(SNAKEOIL_KEY),
        "smtpd_tls_security_level": "may",
        "smtp_tls_security_level": "may",
    }


def ensure_snakeoil_certificate():
    """Create Debian's self-signed snakeoil certificate when it is missing."""
    if SNAKEOIL_CERT.exists() and SNAKEOIL_KEY.exists():
        return
    run(["make-ssl-cert", "generate-default-snakeoil", "--force-overwrite"])


def configure_postfix(ipv6):
    """Write a fresh Debian main.cf and master.cf with the baseline settings.

    Starting from Debian's own templates makes the run independent of whatever the
    machine had in /etc/postfix, and master.cf.dist carries the commented submission
    template block that the package must keep.
    """
    if DEBIAN_MAIN_CF.exists():
        shutil.copyfile(DEBIAN_MAIN_CF, MAIN_CF)
    if DEBIAN_MASTER_CF.exists():
        shutil.copyfile(DEBIAN_MASTER_CF, MASTER_CF)
    settings = baseline_main_cf_settings(ipv6)
    run(["postconf", "-e"] + [f"{name}={value}" for name, value in settings.items()])

    lines = [f"{login} {login}" for login in USERS]
    SENDER_LOGIN_FILE.write_text("\n".join(lines) + "\n")
    SENDER_LOGIN_FILE.chmod(0o644)

    MAILLOG.unlink(missing_ok=True)
    run(["postfix", "check"])


def postfix_running():
    """Return whether the Postfix master process is running."""
    return run(["postfix", "status"], check=False).returncode == 0


def start_postfix():
    """Start Postfix and wait until it accepts connections on port 25."""
    run_detaching(["postfix", "start"])
    if not wait_until(lambda: port_open("127.0.0.1", 25), timeout=30):
        raise CommandFailed("Postfix started but nothing accepts connections on 127.0.0.1:25")


def stop_postfix():
    """Stop Postfix when it is running."""
    if postfix_running():
        run(["postfix", "stop"], check=False)


def queue_entries():
    """Return the messages in the Postfix queue as dicts from `postqueue -j`."""
    output = run(["postqueue", "-j"]).stdout
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def delete_test_messages():
    """Delete queued messages that use the test's reserved domains, and no others."""
    for entry in queue_entries():
        addresses = [entry.get("sender", "")]
        addresses += [recipient.get("address", "") for recipient in entry.get("recipients", [])]
        if any(address.endswith(TEST_DOMAINS) for address in addresses):
            run(["postsuper", "-d", entry["queue_id"]], check=False)


def maillog_lines(text):
    """Return the lines of the Postfix log file that contain text."""
    if not MAILLOG.exists():
        return []
    with MAILLOG.open(errors="replace") as log:
        return [line for line in log if text in line]


def maillog_count(text):
    """Return how many lines of the Postfix log file contain text."""
    return len(maillog_lines(text))


def log_tail(path, lines=40):
    """Return the last lines of a log file, for failure messages."""
    if not path.exists():
        return f"{path} does not exist"
    text = "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
    return f"--- last lines of {path} ---\n{text}"


def maillog_tail(lines=40):
    """Return the last lines of the Postfix log file, for failure messages."""
    return log_tail(MAILLOG, lines)


def file_fingerprint(path):
    """Return (sha256, mtime_ns, inode) of a file, which changes on any rewrite."""
    data = Path(path).read_bytes()
    status = os.stat(path)
    return hashlib.sha256(data).hexdigest(), status.st_mtime_ns, status.st_ino


def postfix_file_fingerprints():
    """Return the fingerprints of main.cf and master.cf keyed by path."""
    return {str(path): file_fingerprint(path) for path in (MAIN_CF, MASTER_CF)}


# ---------------------------------------------------------------------------
# Dovecot


# The passdb and userdb of the test users in Dovecot 2.3 syntax (Debian 12).
DOVECOT_23_DATABASES = """\
passdb {{
  driver = passwd-file
  args = scheme=SHA512-CRYPT {users_file}
}}
userdb {{
  driver = static
  args = uid=mail gid=mail home=/nonexistent/%u
}}
"""

# The same in Dovecot 2.4 syntax (Debian 13), which names the driver after the block.
# NOTE: this variant has not been run, because the test machine has Dovecot 2.3.
DOVECOT_24_DATABASES = """\
passdb passwd-file {{
  passwd_file_path = {users_file}
}}
userdb static {{
  fields {{
    uid = mail
    gid = mail
    home = /nonexistent/%{{user}}
  }}
}}
"""


def dovecot_version():
    """Return Dovecot's version as a tuple of integers, such as (2, 3, 19, 1)."""
    output = run(["dovecot", "--version"]).stdout.split()
    return tuple(int(part) for part in output[0].split(".") if part.isdigit())


def configure_dovecot(ipv6):
    """Add the test users and a snippet that authenticates them from a passwd-file.

    The system PAM passdb include is commented out so that only the test users exist.
    The auth listener for Postfix is deliberately left out because the package adds it.
    """
    lines = []
    for login, password in USERS.items():
        hashed = run(["doveadm", "pw", "-s", "SHA512-CRYPT", "-p", password]).stdout.strip()
        lines.append(f"{login}:{hashed}::::::")
    DOVECOT_USERS_FILE.write_text("\n".join(lines) + "\n")
    shutil.chown(DOVECOT_USERS_FILE, "root", "dovecot")
    DOVECOT_USERS_FILE.chmod(0o640)

    auth_conf = DOVECOT_CONF_D / "10-auth.conf"
    text = auth_conf.read_text()
    auth_conf.write_text(
        text.replace("\n!include auth-system.conf.ext", "\n#!include auth-system.conf.ext")
    )

    listen = "127.0.0.1, ::1" if ipv6 else "127.0.0.1"
    if dovecot_version() >= (2, 4):
        databases = DOVECOT_24_DATABASES
    else:
        databases = DOVECOT_23_DATABASES
    DOVECOT_TEST_SNIPPET.write_text(
        "# Test users of the postfix-submission end-to-end test.\n"
        f"listen = {listen}\n"
        f"log_path = {DOVECOT_LOG}\n" + databases.format(users_file=DOVECOT_USERS_FILE)
    )
    DOVECOT_LOG.unlink(missing_ok=True)
    run(["doveconf", "-n"])


def dovecot_config():
    """Return the output of `doveconf -n`."""
    return run(["doveconf", "-n"]).stdout


def dovecot_pid():
    """Return the Dovecot master's pid when it is running, else None."""
    pid_file = Path("/run/dovecot/master.pid")
    try:
        pid = int(pid_file.read_text().strip())
        status = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # A zombie left for an init process that has not reaped it yet counts as stopped.
    state = status.rpartition(")")[2].split()[0]
    return None if state == "Z" else pid


def start_dovecot():
    """Start Dovecot and wait until its IMAP listener accepts connections."""
    run_detaching(["dovecot"])
    if not wait_until(lambda: port_open("127.0.0.1", 143), timeout=30):
        raise CommandFailed("Dovecot started but nothing accepts connections on 127.0.0.1:143")


def stop_dovecot():
    """Stop Dovecot when it is running, and kill its master if it does not stop."""
    pid = dovecot_pid()
    if pid is None:
        return
    run(["doveadm", "stop"], check=False)
    if not wait_until(lambda: dovecot_pid() is None, timeout=15):
        os.kill(pid, 15)


def auth_socket_listening():
    """Return whether something accepts connections on Dovecot's auth socket for Postfix."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(2)
            probe.connect(str(AUTH_SOCKET))
        return True
    except OSError:
        return False


def remove_stale_auth_socket():
    """Delete the auth socket file when no Dovecot listens on it.

    Dovecot leaves the file behind when it stops, and a stale file would make the
    check for the package's listener pass without Dovecot serving it.
    """
    if AUTH_SOCKET.is_socket() and not auth_socket_listening():
        AUTH_SOCKET.unlink()


# ---------------------------------------------------------------------------
# The package and debconf


def preseed(values):
    """Store values for the package's debconf questions with debconf-set-selections.

    values maps a question name without the package prefix to (type, value).
    """
    lines = [
        f"{PACKAGE} {PACKAGE}/{name} {kind} {value}".rstrip() + "\n"
        for name, (kind, value) in values.items()
    ]
    run(["debconf-set-selections"], input="".join(lines))


def debconf_show():
    """Return the output of `debconf-show postfix-submission`."""
    return run(["debconf-show", PACKAGE], check=False).stdout


NONINTERACTIVE = {"DEBIAN_FRONTEND": "noninteractive"}


def dpkg_install(deb):
    """Install the .deb with dpkg and return the finished command."""
    return run(["dpkg", "-i", str(deb)], check=False, env=NONINTERACTIVE)


def dpkg_reconfigure():
    """Run the package's config and postinst again and return the finished command."""
    return run(["dpkg-reconfigure", "-fnoninteractive", PACKAGE], check=False, env=NONINTERACTIVE)


def package_status():
    """Return dpkg's status abbreviation for the package, such as "ii", or "" if unknown."""
    result = run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", PACKAGE], check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


def remove_package():
    """Remove the package but keep its debconf values, and return the finished command."""
    return run(["dpkg", "-r", PACKAGE], check=False, env=NONINTERACTIVE)


def purge_package():
    """Purge the package and return the finished command."""
    return run(["dpkg", "--purge", PACKAGE], check=False, env=NONINTERACTIVE)


# ---------------------------------------------------------------------------
# SMTP clients


def port_open(host, port):
    """Return whether a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def unverified_tls_context():
    """Return a TLS client context that accepts the self-signed snakeoil certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def smtp_connect(port, *, source="127.0.0.1", host="127.0.0.1", implicit_tls=False):
    """Open an SMTP session from a given source address and send EHLO.

    Port 465 needs implicit_tls, which wraps the connection in TLS before the greeting.
    A refused connection is retried for up to CONNECT_RETRY_SECONDS, because Postfix
    may still be opening its listeners after a reload.
    """
    options = {
        "local_hostname": "client.example.test",
        "timeout": SMTP_TIMEOUT,
        "source_address": (source, 0),
    }
    if implicit_tls:
        options["context"] = unverified_tls_context()
    session_class = smtplib.SMTP_SSL if implicit_tls else smtplib.SMTP
    deadline = time.monotonic() + CONNECT_RETRY_SECONDS
    while True:
        try:
            client = session_class(host, port, **options)
            break
        except ConnectionRefusedError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)
    client.ehlo()
    return client


def smtp_starttls(client):
    """Switch a plain session to TLS and send EHLO again."""
    code, message = client.starttls(context=unverified_tls_context())
    if code != 220:
        raise AssertionError(f"STARTTLS failed: {code} {message!r}")
    client.ehlo()


def smtp_login(client, login, password=None):
    """Authenticate and return (code, message), also for a rejected login.

    The password defaults to the user's correct password from USERS.
    """
    if password is None:
        password = USERS[login]
    try:
        return client.login(login, password)
    except smtplib.SMTPAuthenticationError as error:
        return error.smtp_code, error.smtp_error


def smtp_close(client):
    """End a session with QUIT, and close the socket even if the server is gone."""
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        client.close()


def send_test_message(client, sender, recipient, subject):
    """Send one message in an open session and return the DATA reply (code, message).

    The MAIL FROM and RCPT TO replies must be 250, because Postfix rejects a forged
    sender at one of them.
    """
    code, message = client.mail(sender)
    if code != 250:
        return code, message
    code, message = client.rcpt(recipient)
    if code != 250:
        return code, message
    body = (
        f"From: <{sender}>\r\nTo: <{recipient}>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@client.example.test>\r\n"
        "\r\nA message from the postfix-submission end-to-end test.\r\n"
    )
    return client.data(body.encode())
