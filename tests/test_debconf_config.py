"""Tests for the Debian maintainer scripts and debconf templates in debian/.

Run from the repository root, as root:

    python3 -m unittest tests/test_debconf_config.py -v

The tests run debian/config with real debconf and real postconf. Each test
gets a temporary directory with a private debconf database and a private
Postfix configuration directory. DEBCONF_SYSTEMRC selects a debconf.conf with
File drivers there, and MAIL_CONFIG selects the Postfix directory, so the
system's debconf database and /etc/postfix are never read or written. The
purge tests run debian/postrm in a private mount namespace with tmpfs over
/var/lib and /etc/dovecot/conf.d.

Required Debian packages: debconf, postfix (postconf) and po-debconf
(debian/update-templates). The templates are loaded with debconf-loadtemplate
from debconf-utils, or without it through debconf's X_LOADTEMPLATEFILE
command. checkbashisms from devscripts is optional, and without it that test
is skipped.
"""

import os
import pty
import select
import shutil
import signal
import subprocess
import tempfile
import time
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEBIAN = REPO / "debian"
TEMPLATES = DEBIAN / "templates"
FRONTEND = "/usr/share/debconf/frontend"
PACKAGE = "postfix-submission"
MAIN_CF_DEBIAN = Path("/usr/share/postfix/main.cf.debian")
MASTER_CF_DIST = Path("/usr/share/postfix/master.cf.dist")

SNAKEOIL_CERT = "/etc/ssl/certs/ssl-cert-snakeoil.pem"
SNAKEOIL_KEY = "/etc/ssl/private/ssl-cert-snakeoil.key"

# Shell scripts in debian/ that must stay POSIX sh.
SHELL_SCRIPTS = ["config", "postinst", "prerm", "postrm", "update-templates"]

QUESTIONS = [
    "services",
    "tls_cert_file",
    "tls_key_file",
    "sender_login_maps",
    "auth_on_port_25",
    "client_checks",
    "configure_dovecot",
]

FRESH_DEFAULTS = {
    "services": "submission, submissions",
    "tls_cert_file": "",
    "tls_key_file": "",
    "sender_login_maps": "",
    "auth_on_port_25": "false",
    "client_checks": "standard",
    "configure_dovecot": "true",
}

QUESTION_TYPES = {
    "services": "multiselect",
    "tls_cert_file": "string",
    "tls_key_file": "string",
    "sender_login_maps": "string",
    "auth_on_port_25": "boolean",
    "client_checks": "select",
    "configure_dovecot": "boolean",
}

# Seconds that one run of a maintainer script may take before the test fails.
RUN_TIMEOUT = 60

REQUIRED_COMMANDS = {
    "postconf": "postfix",
    "debconf-communicate": "debconf",
    "debconf-set-selections": "debconf",
}


def check_requirements():
    """Raise RuntimeError naming the package to install for a missing tool."""
    for command, package in REQUIRED_COMMANDS.items():
        if shutil.which(command) is None:
            raise RuntimeError(f"{command} not found: apt-get install {package}")
    for path, package in ((FRONTEND, "debconf"), (MAIN_CF_DEBIAN, "postfix")):
        if not Path(path).exists():
            raise RuntimeError(f"{path} not found: apt-get install {package}")


def question(name):
    return f"{PACKAGE}/{name}"


class Sandbox:
    """A private debconf database and Postfix configuration directory."""

    def __init__(self, root):
        self.root = Path(root)
        self.debconf_conf = self.root / "debconf.conf"
        self.config_dat = self.root / "config.dat"
        self.templates_dat = self.root / "templates.dat"
        self.postfix_dir = self.root / "postfix"
        self.bin_dir = self.root / "bin"
        self.bin_dir.mkdir()
        self._write_debconf_conf()
        self._write_postfix_config()

    def _write_debconf_conf(self):
        self.debconf_conf.write_text(
            "Config: configdb\n"
            "Templates: templatedb\n"
            "\n"
            "Name: configdb\n"
            "Driver: File\n"
            "Mode: 644\n"
            f"Filename: {self.config_dat}\n"
            "\n"
            "Name: templatedb\n"
            "Driver: File\n"
            "Mode: 644\n"
            f"Filename: {self.templates_dat}\n"
        )

    def _write_postfix_config(self):
        # Debian's postfix postinst builds main.cf from main.cf.debian and
        # adds the snakeoil certificate and the host name, as done here.
        self.postfix_dir.mkdir()
        shutil.copy(MAIN_CF_DEBIAN, self.postfix_dir / "main.cf")
        if MASTER_CF_DIST.exists():
            shutil.copy(MASTER_CF_DIST, self.postfix_dir / "master.cf")
        self.postconf_set(
            smtpd_tls_cert_file=SNAKEOIL_CERT,
            smtpd_tls_key_file=SNAKEOIL_KEY,
            smtpd_tls_security_level="may",
            myhostname="mail.example.test",
        )

    def env(self, **overrides):
        """Return an environment that reaches only the private database."""
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("DEBCONF_", "DEBIAN_", "DPKG_"))
        }
        env.update(
            DEBCONF_SYSTEMRC=str(self.debconf_conf),
            DEBCONF_PACKAGE=PACKAGE,
            DEBIAN_FRONTEND="noninteractive",
            MAIL_CONFIG=str(self.postfix_dir),
            LC_ALL="C",
        )
        env.pop("LANGUAGE", None)
        env.update(overrides)
        return env

    def run(self, args, env=None, input_text=None, check=True):
        result = subprocess.run(
            [str(arg) for arg in args],
            cwd=REPO,
            env=env or self.env(),
            input=input_text,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(map(str, args))} exited with {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def postconf_set(self, **parameters):
        """Write parameters into the private main.cf with postconf -e."""
        settings = [f"{name}={value}" for name, value in parameters.items()]
        self.run(["postconf", "-c", self.postfix_dir, "-e", *settings])

    def load_templates(self, use_loadtemplate=None):
        """Load debian/templates as the package's templates and questions.

        By default debconf-loadtemplate is used when it is installed, and
        debconf's X_LOADTEMPLATEFILE command otherwise, which loads the file
        the same way. use_loadtemplate=False selects X_LOADTEMPLATEFILE.
        """
        if use_loadtemplate is None:
            use_loadtemplate = shutil.which("debconf-loadtemplate") is not None
        if use_loadtemplate:
            self.run(["debconf-loadtemplate", PACKAGE, TEMPLATES])
            return
        command = f"X_LOADTEMPLATEFILE {TEMPLATES} {PACKAGE}"
        (status, message), = self.communicate([command])
        if status != 0:
            raise AssertionError(f"{command} failed with status {status}: {message}")

    def run_config(self, action="configure", **env_overrides):
        return self.run(
            [FRONTEND, DEBIAN / "config", action], env=self.env(**env_overrides)
        )

    def preseed(self, answers):
        """Preseed answers as debconf-set-selections does, which marks them seen."""
        lines = [
            f"{PACKAGE} {question(name)} {QUESTION_TYPES[name]} {value}\n"
            for name, value in answers.items()
        ]
        self.run(["debconf-set-selections"], input_text="".join(lines))

    def communicate(self, commands):
        """Send debconf protocol commands and return (status, value) for each reply."""
        # debconf-communicate exits with the status of the last reply.
        result = self.run(
            ["debconf-communicate", PACKAGE],
            input_text="".join(f"{c}\n" for c in commands),
            check=False,
        )
        replies = []
        for line in result.stdout.splitlines():
            status, _, value = line.partition(" ")
            replies.append((int(status), value))
        if len(replies) != len(commands):
            raise AssertionError(f"expected {len(commands)} replies, got: {result.stdout!r}")
        return replies

    def answers(self):
        """Return the value of every question, keyed by short name."""
        replies = self.communicate([f"GET {question(name)}" for name in QUESTIONS])
        return {name: value for name, (_, value) in zip(QUESTIONS, replies)}

    def flags(self, flag):
        replies = self.communicate([f"FGET {question(name)} {flag}" for name in QUESTIONS])
        return {name: value for name, (_, value) in zip(QUESTIONS, replies)}


class DebconfTestCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        check_requirements()

    def setUp(self):
        tmp = tempfile.TemporaryDirectory(prefix="postfix-submission-test-")
        self.addCleanup(tmp.cleanup)
        self.sandbox = Sandbox(tmp.name)
        self.sandbox.load_templates()

    def assertAnswer(self, name, expected):
        self.assertEqual(self.sandbox.answers()[name], expected, f"answer to {question(name)}")


class SandboxTest(DebconfTestCase):
    def test_templates_in_private_database(self):
        self.assertIn(question("services"), self.sandbox.templates_dat.read_text())

    def test_template_loading_ways_agree(self):
        if shutil.which("debconf-loadtemplate") is None:
            self.skipTest("debconf-loadtemplate not found: apt-get install debconf-utils")
        with tempfile.TemporaryDirectory() as root:
            other = Sandbox(root)
            other.load_templates(use_loadtemplate=False)
            self.assertEqual(other.answers(), self.sandbox.answers())
            self.assertEqual(other.config_dat.read_text(), self.sandbox.config_dat.read_text())
            self.assertEqual(other.templates_dat.read_text(), self.sandbox.templates_dat.read_text())

    def test_postconf_reads_private_main_cf(self):
        result = self.sandbox.run(["postconf", "-h", "myhostname"])
        self.assertEqual(result.stdout.strip(), "mail.example.test")


class ConfigSeedingTest(DebconfTestCase):
    def test_fresh_install_defaults(self):
        self.sandbox.run_config()
        self.assertEqual(self.sandbox.answers(), FRESH_DEFAULTS)

    def test_noninteractive_run_marks_nothing_seen(self):
        self.sandbox.run_config()
        self.assertEqual(set(self.sandbox.flags("seen").values()), {"false"})

    def test_custom_certificate_becomes_answer(self):
        self.sandbox.postconf_set(
            smtpd_tls_cert_file="/etc/ssl/mail/fullchain.pem",
            smtpd_tls_key_file="/etc/ssl/mail/privkey.pem",
        )
        self.sandbox.run_config()
        answers = self.sandbox.answers()
        self.assertEqual(answers["tls_cert_file"], "/etc/ssl/mail/fullchain.pem")
        self.assertEqual(answers["tls_key_file"], "/etc/ssl/mail/privkey.pem")

    def test_snakeoil_certificate_stays_empty(self):
        main_cf = (self.sandbox.postfix_dir / "main.cf").read_text()
        self.assertIn(SNAKEOIL_CERT, main_cf)
        self.assertIn(SNAKEOIL_KEY, main_cf)
        self.sandbox.run_config()
        answers = self.sandbox.answers()
        self.assertEqual(answers["tls_cert_file"], "")
        self.assertEqual(answers["tls_key_file"], "")

    def test_only_key_custom(self):
        self.sandbox.postconf_set(smtpd_tls_key_file="/etc/ssl/mail/privkey.pem")
        self.sandbox.run_config()
        answers = self.sandbox.answers()
        self.assertEqual(answers["tls_cert_file"], "")
        self.assertEqual(answers["tls_key_file"], "/etc/ssl/mail/privkey.pem")

    def test_dollar_references_not_expanded(self):
        self.sandbox.postconf_set(
            smtpd_tls_cert_file="$config_directory/certs/$myhostname.pem",
            smtpd_sender_login_maps="hash:$config_directory/sender_logins",
        )
        self.sandbox.run_config()
        answers = self.sandbox.answers()
        self.assertEqual(answers["tls_cert_file"], "$config_directory/certs/$myhostname.pem")
        self.assertEqual(answers["sender_login_maps"], "hash:$config_directory/sender_logins")

    def test_mysql_email2email_present(self):
        (self.sandbox.postfix_dir / "mysql-email2email.cf").write_text("hosts = 127.0.0.1\n")
        self.sandbox.run_config()
        expected = f"mysql:{self.sandbox.postfix_dir}/mysql-email2email.cf"
        self.assertAnswer("sender_login_maps", expected)

    def test_mysql_email2email_preferred_over_main_cf(self):
        (self.sandbox.postfix_dir / "mysql-email2email.cf").write_text("hosts = 127.0.0.1\n")
        self.sandbox.postconf_set(smtpd_sender_login_maps="hash:/etc/postfix/sender_logins")
        self.sandbox.run_config()
        expected = f"mysql:{self.sandbox.postfix_dir}/mysql-email2email.cf"
        self.assertAnswer("sender_login_maps", expected)

    def test_existing_sender_login_maps_kept(self):
        maps = "hash:/etc/postfix/sender_logins, pcre:/etc/postfix/sender_logins.pcre"
        self.sandbox.postconf_set(smtpd_sender_login_maps=maps)
        self.sandbox.run_config()
        self.assertAnswer("sender_login_maps", maps)

    def test_sasl_auth_enabled_gives_true(self):
        self.sandbox.postconf_set(smtpd_sasl_auth_enable="yes")
        self.sandbox.run_config()
        self.assertAnswer("auth_on_port_25", "true")

    def test_sasl_auth_disabled_gives_false(self):
        self.sandbox.postconf_set(smtpd_sasl_auth_enable="no")
        self.sandbox.run_config()
        self.assertAnswer("auth_on_port_25", "false")

    def test_admin_restrictions_give_unchanged(self):
        for parameter in (
            "smtpd_client_restrictions",
            "smtpd_helo_restrictions",
            "smtpd_sender_restrictions",
        ):
            with self.subTest(parameter=parameter):
                with tempfile.TemporaryDirectory() as root:
                    sandbox = Sandbox(root)
                    sandbox.load_templates()
                    sandbox.postconf_set(**{parameter: "permit_mynetworks, reject_unknown_sender_domain"})
                    sandbox.run_config()
                    self.assertEqual(sandbox.answers()["client_checks"], "unchanged")

    def test_relay_restrictions_keep_standard(self):
        # Debian's main.cf sets smtpd_relay_restrictions, which is not one of
        # the three port-25 checks the question covers.
        self.sandbox.postconf_set(
            smtpd_relay_restrictions="permit_mynetworks permit_sasl_authenticated defer_unauth_destination"
        )
        self.sandbox.run_config()
        self.assertAnswer("client_checks", "standard")

    def test_reconfigure_seeds_like_configure(self):
        self.sandbox.postconf_set(smtpd_tls_cert_file="/etc/ssl/mail/fullchain.pem")
        self.sandbox.run_config("reconfigure")
        self.assertAnswer("tls_cert_file", "/etc/ssl/mail/fullchain.pem")

    def test_without_main_cf_nothing_seeded(self):
        (self.sandbox.postfix_dir / "main.cf").unlink()
        self.sandbox.run_config()
        self.assertEqual(self.sandbox.answers(), FRESH_DEFAULTS)
        self.assertEqual(set(self.sandbox.flags("seeded").values()), {"false"})

    def test_seeding_waits_for_main_cf(self):
        # dpkg-preconfigure can run the config script before Postfix is
        # configured; the run from the postinst must still seed.
        main_cf = self.sandbox.postfix_dir / "main.cf"
        saved = main_cf.read_text()
        main_cf.unlink()
        self.sandbox.run_config()
        main_cf.write_text(saved)
        self.sandbox.postconf_set(smtpd_tls_cert_file="/etc/ssl/mail/fullchain.pem")
        self.sandbox.run_config()
        self.assertAnswer("tls_cert_file", "/etc/ssl/mail/fullchain.pem")


class ConfigKeepsAnswersTest(DebconfTestCase):
    PRESEEDED = {
        "services": "submissions",
        "tls_cert_file": "/srv/tls/cert.pem",
        "tls_key_file": "/srv/tls/key.pem",
        "sender_login_maps": "hash:/etc/postfix/logins",
        "auth_on_port_25": "false",
        "client_checks": "strict",
        "configure_dovecot": "false",
    }

    def write_conflicting_main_cf(self):
        """Set main.cf so that seeding would change every seeded answer."""
        (self.sandbox.postfix_dir / "mysql-email2email.cf").write_text("hosts = 127.0.0.1\n")
        self.sandbox.postconf_set(
            smtpd_tls_cert_file="/etc/ssl/mail/fullchain.pem",
            smtpd_tls_key_file="/etc/ssl/mail/privkey.pem",
            smtpd_sasl_auth_enable="yes",
            smtpd_helo_restrictions="reject_invalid_helo_hostname",
        )

    def test_preseeded_answers_not_overwritten(self):
        self.sandbox.preseed(self.PRESEEDED)
        self.write_conflicting_main_cf()
        self.sandbox.run_config()
        self.assertEqual(self.sandbox.answers(), self.PRESEEDED)

    def test_preseeded_answers_not_overwritten_on_reconfigure(self):
        self.sandbox.preseed(self.PRESEEDED)
        self.write_conflicting_main_cf()
        self.sandbox.run_config("reconfigure")
        self.assertEqual(self.sandbox.answers(), self.PRESEEDED)

    def test_second_run_changes_nothing(self):
        self.write_conflicting_main_cf()
        self.sandbox.run_config()
        first = self.sandbox.config_dat.read_bytes()
        self.sandbox.run_config()
        self.assertEqual(self.sandbox.config_dat.read_bytes(), first)

    def test_second_run_after_main_cf_change_keeps_seeds(self):
        # Between two runs, "postfix-submission apply" writes its own
        # settings into main.cf. The second run must not read them back.
        self.sandbox.run_config()
        seeded = self.sandbox.answers()
        self.write_conflicting_main_cf()
        self.sandbox.run_config()
        self.assertEqual(self.sandbox.answers(), seeded)

    def test_missing_preseeded_cert_does_not_loop(self):
        # debian/config checks only values of questions it displayed, so a
        # noninteractive run finishes and leaves the check to the binary.
        self.sandbox.preseed({"tls_cert_file": "/nonexistent/cert.pem"})
        self.sandbox.run_config(DEBIAN_PRIORITY="low")
        self.assertAnswer("tls_cert_file", "/nonexistent/cert.pem")


class InteractiveConfigTest(DebconfTestCase):
    """debian/config under debconf's teletype frontend on a pseudo-terminal."""

    def run_dialogue(self, dialogue, action="configure"):
        """Type each (prompt, answer) pair's answer once the output ends with its prompt.

        Returns the exit status and the terminal transcript. The test fails
        when an expected prompt does not appear within RUN_TIMEOUT seconds.
        """
        env = self.sandbox.env(
            DEBIAN_FRONTEND="teletype",
            DEBIAN_PRIORITY="low",
            LINES="1000",
            COLUMNS="80",
        )
        pid, fd = pty.fork()
        if pid == 0:
            os.chdir(REPO)
            os.execve(FRONTEND, [FRONTEND, str(DEBIAN / "config"), action], env)
        transcript = ""
        answered_up_to = 0
        pending = list(dialogue)
        deadline = time.monotonic() + RUN_TIMEOUT
        try:
            while True:
                if time.monotonic() > deadline:
                    expected = pending[0][0] if pending else "end of output"
                    self.fail(f"timed out waiting for {expected!r}; output:\n{transcript}")
                ready, _, _ = select.select([fd], [], [], 0.2)
                if ready:
                    try:
                        data = os.read(fd, 4096)
                    except OSError:
                        data = b""
                    if not data:
                        break
                    transcript += data.decode(errors="replace")
                if pending and transcript[answered_up_to:].rstrip().endswith(pending[0][0]):
                    prompt, answer = pending.pop(0)
                    os.write(fd, answer.encode() + b"\n")
                    answered_up_to = len(transcript)
            _, status = os.waitpid(pid, 0)
            pid = None
        finally:
            if pid is not None:
                os.killpg(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            os.close(fd)
        self.assertEqual(pending, [], f"prompts never shown; output:\n{transcript}")
        return os.waitstatus_to_exitcode(status), transcript

    def test_missing_cert_reasks(self):
        cert = self.sandbox.root / "fullchain.pem"
        cert.write_text("certificate\n")
        key_reference = "$config_directory/privkey.pem"
        cert_prompt = "TLS certificate file for mail submission:"
        status, transcript = self.run_dialogue(
            [
                ("Mail submission services to enable:", "1"),
                (cert_prompt, "/nonexistent/fullchain.pem"),
                (cert_prompt, "relative/fullchain.pem"),
                (cert_prompt, str(cert)),
                ("TLS private key file for mail submission:", key_reference),
                ("Lookup tables for sender login maps:", "hash:/etc/postfix/logins"),
                ("Checks on mail from other servers (port 25):", "1"),
                ("Offer authentication on port 25 too? [yes/no]", "yes"),
                ("Add Dovecot's authentication listener for Postfix? [yes/no]", "no"),
            ]
        )
        self.assertEqual(status, 0, transcript)
        self.assertEqual(transcript.count("TLS file not found"), 2, transcript)
        self.assertIn("There is no file at /nonexistent/fullchain.pem.", transcript)
        self.assertIn("There is no file at relative/fullchain.pem.", transcript)
        self.assertEqual(
            self.sandbox.answers(),
            {
                "services": "submission",
                "tls_cert_file": str(cert),
                "tls_key_file": key_reference,
                "sender_login_maps": "hash:/etc/postfix/logins",
                "auth_on_port_25": "true",
                "client_checks": "strict",
                "configure_dovecot": "false",
            },
        )
        self.assertEqual(set(self.sandbox.flags("seen").values()), {"true"})

    def test_seen_questions_not_asked_again(self):
        self.sandbox.preseed(dict(FRESH_DEFAULTS))
        status, transcript = self.run_dialogue([])
        self.assertEqual(status, 0, transcript)
        self.assertNotIn("TLS certificate file", transcript)


class PostinstTest(DebconfTestCase):
    def write_fake_binary(self, body):
        """Put a postfix-submission stand-in, which logs its arguments, first on PATH."""
        self.log = self.sandbox.root / "calls.log"
        fake = self.sandbox.bin_dir / "postfix-submission"
        fake.write_text(f'#!/bin/sh\necho "$*" >> "{self.log}"\n{body}')
        fake.chmod(0o755)

    def run_postinst(self, *args, check=True):
        env = self.sandbox.env(PATH=f"{self.sandbox.bin_dir}:{os.environ.get('PATH', '')}")
        return self.sandbox.run([DEBIAN / "postinst", *args], env=env, check=check)

    def test_configure_runs_apply_with_debconf_channel(self):
        # The binary reads the answers itself. It sends commands to fd 3 and
        # reads the replies from standard input, both inherited from the postinst.
        self.write_fake_binary(
            f'echo "GET {question("services")}" >&3\n'
            'read -r reply\n'
            f'echo "reply: $reply" >> "{self.sandbox.root}/calls.log"\n'
        )
        self.run_postinst("configure")
        self.assertEqual(
            self.log.read_text().splitlines(),
            ["apply", "reply: 0 submission, submissions"],
        )

    def test_reconfigure_runs_apply(self):
        self.write_fake_binary("")
        self.run_postinst("reconfigure", "0.1.0")
        self.assertEqual(self.log.read_text().splitlines(), ["apply"])

    def test_apply_failure_fails_postinst(self):
        self.write_fake_binary('echo "apply failed" >&2\nexit 3\n')
        result = self.run_postinst("configure", check=False)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("apply failed", result.stderr)

    def test_abort_arms_do_nothing(self):
        self.write_fake_binary("")
        for action in ("abort-upgrade", "abort-remove", "abort-deconfigure"):
            with self.subTest(action=action):
                self.run_postinst(action, "0.1.0")
        self.assertFalse(self.log.exists(), "postfix-submission was called")

    def test_unknown_argument_fails(self):
        self.write_fake_binary("")
        result = self.run_postinst("frobnicate", check=False)
        self.assertEqual(result.returncode, 1)
        self.assertIn("frobnicate", result.stderr)
        self.assertFalse(self.log.exists(), "postfix-submission was called")


class PrermTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory(prefix="postfix-submission-test-")
        self.addCleanup(tmp.cleanup)
        self.root = Path(tmp.name)
        self.log = self.root / "calls.log"
        fake = self.root / "postfix-submission"
        fake.write_text(f'#!/bin/sh\necho "$*" >> "{self.log}"\n')
        fake.chmod(0o755)

    def run_prerm(self, *args, path=None):
        env = dict(os.environ, PATH=path or f"{self.root}:/usr/bin:/bin")
        return subprocess.run(
            [str(DEBIAN / "prerm"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )

    def calls(self):
        return self.log.read_text().splitlines() if self.log.exists() else []

    def test_remove_runs_binary_remove(self):
        result = self.run_prerm("remove")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(self.calls(), ["remove"])

    def test_remove_in_favour_runs_binary_remove(self):
        result = self.run_prerm("remove", "in-favour", "other-package", "1.0")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(self.calls(), ["remove"])

    def test_upgrade_arms_revert_nothing(self):
        for args in (
            ("upgrade", "0.2.0"),
            ("deconfigure", "in-favour", "other-package", "1.0"),
            ("failed-upgrade", "0.1.0", "0.2.0"),
        ):
            with self.subTest(args=args):
                result = self.run_prerm(*args)
                self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(self.calls(), [])

    def test_remove_without_binary_warns(self):
        empty_dir = self.root / "empty"
        empty_dir.mkdir()
        result = self.run_prerm("remove", path=f"{empty_dir}:/usr/bin:/bin")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("not reverted", result.stderr)

    def test_unknown_argument_fails(self):
        result = self.run_prerm("frobnicate")
        self.assertEqual(result.returncode, 1)
        self.assertIn("frobnicate", result.stderr)
        self.assertEqual(self.calls(), [])


class PostrmTest(DebconfTestCase):
    def run_postrm(self, *args, check=True):
        return self.sandbox.run([DEBIAN / "postrm", *args], check=check)

    def test_non_purge_arms_do_nothing(self):
        self.sandbox.run_config()
        before = self.sandbox.config_dat.read_bytes()
        for args in (
            ("remove",),
            ("upgrade", "0.2.0"),
            ("failed-upgrade", "0.1.0", "0.2.0"),
            ("abort-install",),
            ("abort-upgrade", "0.1.0", "0.2.0"),
            ("disappear", "other-package", "1.0"),
        ):
            with self.subTest(args=args):
                self.run_postrm(*args)
        self.assertEqual(self.sandbox.config_dat.read_bytes(), before)

    def test_unknown_argument_fails(self):
        result = self.run_postrm("frobnicate", check=False)
        self.assertEqual(result.returncode, 1)
        self.assertIn("frobnicate", result.stderr)

    def run_purge_in_namespace(self, setup, runs=1):
        """Run the postrm with "purge" under tmpfs over /var/lib and /etc/dovecot/conf.d.

        setup is shell code run first inside the namespace. Returns the
        names left in both directories afterwards.
        """
        if os.geteuid() != 0:
            self.skipTest("the purge test mounts tmpfs in a mount namespace, which needs root")
        if shutil.which("unshare") is None:
            self.skipTest("unshare not found: apt-get install util-linux")
        if not Path("/etc/dovecot/conf.d").is_dir():
            self.skipTest("/etc/dovecot/conf.d not found: apt-get install dovecot-core")
        unshare = ["unshare", "--mount", "--propagation", "private"]
        probe = self.sandbox.run([*unshare, "true"], check=False)
        if probe.returncode != 0:
            self.skipTest(f"unshare --mount is not permitted here: {probe.stderr.strip()}")
        # dpkg runs the postrm as /var/lib/dpkg/info/PACKAGE.postrm, and
        # debconf's frontend takes the package name from that file name.
        postrm = self.sandbox.root / f"{PACKAGE}.postrm"
        shutil.copy(DEBIAN / "postrm", postrm)
        listing = self.sandbox.root / "after-purge"
        # tmpfs hides the real directories inside the namespace only, and
        # set -e stops before the postrm when a mount fails, so the real
        # /var/lib and /etc/dovecot are never written.
        script = (
            "set -e\n"
            "mount -t tmpfs postfix-submission-test /var/lib\n"
            "mount -t tmpfs postfix-submission-test /etc/dovecot/conf.d\n"
            f"{setup}"
            + f'"{postrm}" purge\n' * runs
            + f'ls -A /var/lib > "{listing}"\n'
            + f'ls -A /etc/dovecot/conf.d >> "{listing}"\n'
        )
        self.sandbox.run([*unshare, "sh", "-c", script])
        return listing.read_text().split()

    def test_purge_removes_state_snippet_and_answers(self):
        self.sandbox.preseed({"tls_cert_file": "/srv/tls/cert.pem"})
        left = self.run_purge_in_namespace(
            "mkdir -p /var/lib/postfix-submission/backup\n"
            "echo state > /var/lib/postfix-submission/backup/main.cf\n"
            "echo snippet > /etc/dovecot/conf.d/90-postfix-submission.conf\n"
            "echo keep > /etc/dovecot/conf.d/10-master.conf\n"
        )
        self.assertNotIn("postfix-submission", left)
        self.assertNotIn("90-postfix-submission.conf", left)
        self.assertIn("10-master.conf", left)
        status, _ = self.sandbox.communicate([f"GET {question('tls_cert_file')}"])[0]
        self.assertEqual(status, 10, "debconf answers were not purged")

    def test_purge_twice_succeeds(self):
        # dpkg runs the purge again after a failed attempt, and by then
        # there may be nothing left to delete.
        self.assertEqual(self.run_purge_in_namespace("", runs=2), [])


class StaticChecksTest(unittest.TestCase):
    def test_scripts_parse_with_sh_n(self):
        for name in SHELL_SCRIPTS:
            with self.subTest(script=name):
                result = subprocess.run(
                    ["sh", "-n", str(DEBIAN / name)], capture_output=True, text=True
                )
                self.assertEqual(result.returncode, 0, result.stderr)

    def test_scripts_use_bin_sh_and_are_executable(self):
        for name in SHELL_SCRIPTS:
            with self.subTest(script=name):
                path = DEBIAN / name
                self.assertEqual(path.read_text().splitlines()[0], "#!/bin/sh")
                self.assertTrue(os.access(path, os.X_OK), f"{path} is not executable")

    def test_scripts_have_no_bashisms(self):
        checkbashisms = shutil.which("checkbashisms")
        if checkbashisms is None:
            self.skipTest("checkbashisms not found: apt-get install devscripts")
        for name in SHELL_SCRIPTS:
            with self.subTest(script=name):
                result = subprocess.run(
                    [checkbashisms, "--force", "--extra", str(DEBIAN / name)],
                    capture_output=True,
                    text=True,
                )
                self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_maintainer_scripts_set_e(self):
        for name in ("config", "postinst", "prerm", "postrm"):
            with self.subTest(script=name):
                lines = [line.strip() for line in (DEBIAN / name).read_text().splitlines()]
                self.assertIn("set -e", lines)

    def test_update_templates_check_passes(self):
        result = subprocess.run(
            [str(DEBIAN / "update-templates"), "--check"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_templates_have_c_choices(self):
        stanzas = TEMPLATES.read_text().split("\n\n")
        by_name = {}
        for stanza in stanzas:
            fields = dict(
                line.split(": ", 1) for line in stanza.splitlines() if line and not line.startswith(" ")
            )
            by_name[fields["Template"]] = fields
        expected = {
            "services": ("submission, submissions", "submission, submissions"),
            "client_checks": ("strict, standard, unchanged", "standard"),
        }
        for name, (choices_c, default) in expected.items():
            with self.subTest(template=name):
                fields = by_name[question(name)]
                self.assertEqual(fields["Choices-C"], choices_c)
                self.assertEqual(fields["Default"], default)
                self.assertEqual(
                    len(fields["Choices"].split(", ")), len(choices_c.split(", "))
                )


if __name__ == "__main__":
    unittest.main()
