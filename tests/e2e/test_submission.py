"""End-to-end test of the postfix-submission package on real Postfix, Dovecot and debconf.

It installs the .deb named by POSTFIX_SUBMISSION_DEB with dpkg on this machine, talks
SMTP to the resulting server and finally purges the package. Run it through
tests/e2e/run, which provides the private network namespace and restores /etc/postfix
and /etc/dovecot afterwards. The test methods depend on each other and run in name order.

    python3 tests/e2e/test_submission.py            run the test
    python3 tests/e2e/test_submission.py --cleanup  only purge, dequeue and stop
"""

import contextlib
import os
import re
import smtplib
import ssl
import sys
import time
import unittest
from pathlib import Path

import harness as h

NONEXISTENT_CERT = "/nonexistent/e2e-cert.pem"

# main.cf parameters that the package has no reason to change. The harness also sets TLS
# and restriction parameters, which are left out because the debconf questions cover them.
UNRELATED_PARAMETERS = [
    "myhostname",
    "myorigin",
    "mydestination",
    "mynetworks",
    "inet_interfaces",
    "inet_protocols",
    "relayhost",
    "defer_transports",
    "smtp_dns_support_level",
    "smtpd_peername_lookup",
    "maillog_file",
    "alias_maps",
    "alias_database",
    "virtual_mailbox_domains",
    "virtual_transport",
    "message_size_limit",
    "mailbox_size_limit",
    "recipient_delimiter",
    "compatibility_level",
    "smtpd_banner",
    "biff",
    "append_dot_mydomain",
]

# Restrictions that reject clients without a valid reverse DNS name on port 25.
STRICT_CLIENT_RESTRICTIONS = (
    "reject_unknown_client_hostname",
    "reject_unknown_reverse_client_hostname",
)

# The sender of the port 25 sessions. Postfix checks no DNS for the null sender, and DNS
# lookups fail in the test's network namespace, so reject_unknown_sender_domain would
# defer any other sender from outside.
NULL_SENDER = ""

# Seconds to wait for postlogd to write a log line that an action may have caused.
LOG_SETTLE_SECONDS = 3


def template_block(lines):
    """Return the commented submission and submissions block of a Debian master.cf.

    The block is the run of comment lines that contains the first "#submission" line.
    It starts after the "#tlsproxy" line and ends before the next active entry, so in
    Debian 12 it spans "# Choose one: enable submission ..." to "#628 inet ... qmqpd".
    """
    start = next(index for index, line in enumerate(lines) if line.startswith("#submission "))
    while (
        start > 0
        and lines[start - 1].startswith("#")
        and not lines[start - 1].startswith("#tlsproxy")
    ):
        start -= 1
    end = start
    while end < len(lines) and lines[end].startswith("#"):
        end += 1
    return lines[start:end]


def contains_run(lines, block):
    """Return whether block occurs in lines as one contiguous run."""
    size = len(block)
    return any(lines[index : index + size] == block for index in range(len(lines) - size + 1))


def queued_id(reply):
    """Return the queue id from a "250 2.0.0 Ok: queued as ID" reply, or None."""
    match = re.search(rb"queued as ([0-9A-Za-z]+)", reply)
    return match.group(1).decode() if match else None


def cleanup():
    """Purge the package, delete the test's queued mail and stop Postfix and Dovecot.

    Every step is skipped when there is nothing to do, so the function may run twice.
    """
    if h.package_status() not in ("", "un", "pn"):
        result = h.purge_package()
        if result.returncode != 0:
            print(
                f"cleanup: purging {h.PACKAGE} failed\n{h.format_result(result)}", file=sys.stderr
            )
    if h.postfix_running():
        h.delete_test_messages()
    h.stop_postfix()
    h.stop_dovecot()
    h.remove_stale_auth_socket()


class SubmissionPackage(unittest.TestCase):
    """Install the package once and check the resulting mail server step by step."""

    deb = None
    ipv6 = False
    settings_before_install = {}
    pristine_master_lines = []
    installed = False
    reloads_before_install = 0

    @classmethod
    def setUpClass(cls):
        deb = os.environ.get("POSTFIX_SUBMISSION_DEB", "")
        if not deb or not Path(deb).is_file():
            raise RuntimeError(f"POSTFIX_SUBMISSION_DEB must name the .deb to test, got {deb!r}")
        cls.deb = Path(deb)
        cls.addClassCleanup(cleanup)
        cls.ipv6 = h.ipv6_loopback_works()

        h.ensure_snakeoil_certificate()
        h.configure_postfix(cls.ipv6)
        h.configure_dovecot(cls.ipv6)
        h.remove_stale_auth_socket()
        cls.check_no_auth_listener_yet()

        cls.settings_before_install = h.postconf_n()
        cls.pristine_master_lines = h.MASTER_CF.read_text().splitlines()
        h.start_dovecot()
        h.start_postfix()

    @classmethod
    def check_no_auth_listener_yet(cls):
        """Fail the setup if a Postfix auth listener exists before the package adds one."""
        if h.DOVECOT_PRODUCT_SNIPPET.exists() or str(h.AUTH_SOCKET) in h.dovecot_config():
            raise RuntimeError(
                f"Dovecot already has a listener for {h.AUTH_SOCKET} before the install, "
                "so the test could not tell whether the package adds it"
            )

    def require_installed(self):
        """Fail at once when the first install failed, since every check builds on it."""
        if not type(self).installed:
            self.fail("the package is not installed because test_00a_install_succeeds failed")

    def assert_command_ok(self, result, action):
        """Assert that a finished command exited 0, showing its output otherwise."""
        self.assertEqual(result.returncode, 0, f"{action} failed\n{h.format_result(result)}")

    def assert_files_untouched(self, before, action):
        """Assert that main.cf and master.cf have the same content, mtime and inode."""
        after = h.postfix_file_fingerprints()
        for path, (digest, mtime_ns, inode) in before.items():
            with self.subTest(file=path):
                self.assertEqual(after[path][0], digest, f"{action} changed the content of {path}")
                self.assertEqual(
                    after[path][1], mtime_ns, f"{action} rewrote {path} (mtime changed)"
                )
                self.assertEqual(after[path][2], inode, f"{action} replaced {path} (inode changed)")

    def assert_no_reload(self, reloads_before, action):
        """Assert that no new Postfix reload line reached the log after an action."""
        time.sleep(LOG_SETTLE_SECONDS)
        reloads_after = h.maillog_count(h.RELOAD_LOG_LINE)
        self.assertEqual(
            reloads_after,
            reloads_before,
            f"{action} reloaded Postfix although nothing changed\n{h.maillog_tail()}",
        )

    @contextlib.contextmanager
    def smtp_errors_reported(self, session):
        """Turn a dropped or timed-out SMTP session into a failure that shows the Postfix log."""
        try:
            yield
        except (smtplib.SMTPException, OSError) as error:
            self.fail(f"{session} failed: {error!r}\n{h.maillog_tail(20)}")

    def open_authenticated(
        self, port, login="alice@example.test", source="127.0.0.1", host="127.0.0.1"
    ):
        """Open a TLS session on 587 (STARTTLS) or 465 (implicit TLS) and log in."""
        implicit_tls = port == 465
        client = h.smtp_connect(port, source=source, host=host, implicit_tls=implicit_tls)
        self.addCleanup(h.smtp_close, client)
        if not implicit_tls:
            h.smtp_starttls(client)
        self.assertIn("auth", client.esmtp_features, f"port {port} offers no AUTH after TLS")
        code, message = h.smtp_login(client, login)
        self.assertEqual(code, 235, f"login as {login} on port {port} failed: {message!r}")
        return client

    def assert_sent_and_deferred(self, client, subject):
        """Send a message to an outside recipient and assert that it waits in the queue."""
        code, message = h.send_test_message(
            client, "alice@example.test", "carol@example.net", subject
        )
        self.assertEqual(code, 250, f"message was not accepted: {code} {message!r}")
        queue_id = queued_id(message)
        self.assertIsNotNone(queue_id, f"no queue id in the reply {message!r}")

        def deferred_entry():
            entries = [entry for entry in h.queue_entries() if entry["queue_id"] == queue_id]
            return entries if entries and entries[0]["queue_name"] == "deferred" else None

        entries = h.wait_until(deferred_entry, timeout=30)
        self.assertTrue(
            entries, f"message {queue_id} is not in the deferred queue: {h.queue_entries()}"
        )
        sent = [line for line in h.maillog_lines(f"{queue_id}: to=") if "status=sent" in line]
        self.assertEqual(sent, [], f"message {queue_id} was delivered somewhere")
        return queue_id

    def assert_wrong_password_rejected(self, port, source):
        """Assert that a login with a wrong password gets 535 after TLS."""
        implicit_tls = port == 465
        client = h.smtp_connect(port, source=source, implicit_tls=implicit_tls)
        self.addCleanup(h.smtp_close, client)
        if not implicit_tls:
            h.smtp_starttls(client)
        code, message = h.smtp_login(client, "alice@example.test", "not-the-password")
        self.assertEqual(code, 535, f"wrong password on port {port} gave {code} {message!r}")

    def test_00a_install_succeeds(self):
        h.preseed(h.PRESEED_VALUES)
        type(self).reloads_before_install = h.maillog_count(h.RELOAD_LOG_LINE)
        result = h.dpkg_install(self.deb)
        self.assert_command_ok(result, f"dpkg -i {self.deb}")
        self.assertEqual(h.package_status(), "ii", "the package is not fully installed")
        type(self).installed = True
        self.assertTrue(
            (h.STATE_DIR / "state.json").is_file(), f"{h.STATE_DIR}/state.json is missing"
        )

    def test_00b_install_reloads_postfix(self):
        self.require_installed()
        before = type(self).reloads_before_install
        reloaded = h.wait_until(lambda: h.maillog_count(h.RELOAD_LOG_LINE) > before, timeout=15)
        self.assertTrue(reloaded, f"the first install did not reload Postfix\n{h.maillog_tail()}")

    def test_00c_dovecot_auth_listener(self):
        self.require_installed()
        self.assertTrue(
            h.DOVECOT_PRODUCT_SNIPPET.is_file(), f"{h.DOVECOT_PRODUCT_SNIPPET} is missing"
        )
        config = h.dovecot_config()
        match = re.search(
            r"unix_listener " + re.escape(str(h.AUTH_SOCKET)) + r" \{(.*?)\}", config, re.S
        )
        self.assertIsNotNone(match, f"doveconf -n has no unix_listener {h.AUTH_SOCKET}\n{config}")
        listener = dict(
            line.strip().split(" = ", 1) for line in match.group(1).splitlines() if " = " in line
        )
        self.assertEqual(listener.get("mode"), "0660", f"listener settings: {listener}")
        self.assertEqual(listener.get("user"), "postfix", f"listener settings: {listener}")
        self.assertEqual(listener.get("group"), "postfix", f"listener settings: {listener}")

        listening = h.wait_until(h.auth_socket_listening, timeout=15)
        self.assertTrue(
            listening,
            f"nothing listens on {h.AUTH_SOCKET}, so Dovecot did not load the listener\n"
            f"{h.log_tail(h.DOVECOT_LOG)}",
        )

    def test_00d_master_cf_services(self):
        self.require_installed()
        entries = h.master_entries()
        self.assertIn("submission/inet", entries, "postconf -M lists no active submission/inet")
        self.assertIn("submissions/inet", entries, "postconf -M lists no active submissions/inet")

    def test_00e_master_cf_template_kept(self):
        self.require_installed()
        lines = h.MASTER_CF.read_text().splitlines()
        block = template_block(self.pristine_master_lines)
        self.assertTrue(
            contains_run(lines, block),
            "the commented Debian submission template block is no longer in master.cf verbatim",
        )

    def test_01a_port25_relay_rejected(self):
        with self.smtp_errors_reported("the port 25 session"):
            client = h.smtp_connect(25, source="127.0.0.2")
            self.addCleanup(h.smtp_close, client)
            self.assertNotIn(
                "auth", client.esmtp_features, "port 25 offers AUTH with auth_on_port_25 false"
            )
            code, message = client.mail(NULL_SENDER)
            self.assertEqual(code, 250, f"MAIL FROM:<> on port 25: {code} {message!r}")
            code, message = client.rcpt("someone@example.net")
            # defer_unauth_destination, Debian's default, refuses relaying with a
            # temporary 454; reject_unauth_destination would give 554.
            self.assertIn(code, (454, 554), f"relay attempt on port 25 got {code} {message!r}")
            self.assertIn(b"Relay access denied", message)

    def test_01b_port25_accepts_local_mail(self):
        with self.smtp_errors_reported("the port 25 session"):
            client = h.smtp_connect(25, source="127.0.0.2")
            self.addCleanup(h.smtp_close, client)
            code, message = client.mail(NULL_SENDER)
            self.assertEqual(code, 250, f"MAIL FROM:<> on port 25: {code} {message!r}")
            code, message = client.rcpt("alice@example.test")
            self.assertEqual(code, 250, f"mail for a local user on port 25 got {code} {message!r}")

    def test_02_submission_requires_starttls(self):
        self.require_installed()
        with self.smtp_errors_reported("the port 587 session"):
            client = h.smtp_connect(587)
            self.addCleanup(h.smtp_close, client)
            self.assertIn("starttls", client.esmtp_features, "port 587 offers no STARTTLS")
            self.assertNotIn("auth", client.esmtp_features, "port 587 offers AUTH before STARTTLS")
            code, message = client.mail("alice@example.test")
            self.assertEqual(code, 530, f"MAIL FROM before STARTTLS got {code} {message!r}")
            self.assertIn(b"STARTTLS", message)

    def test_03a_submission_auth_sends(self):
        self.require_installed()
        with self.smtp_errors_reported("the port 587 session"):
            client = self.open_authenticated(587)
            self.assert_sent_and_deferred(client, "e2e submission 587")

    def test_03b_submission_certificate_is_snakeoil(self):
        self.require_installed()
        with self.smtp_errors_reported("the port 587 session"):
            client = h.smtp_connect(587)
            self.addCleanup(h.smtp_close, client)
            h.smtp_starttls(client)
            offered = client.sock.getpeercert(binary_form=True)
            expected = ssl.PEM_cert_to_DER_cert(h.SNAKEOIL_CERT.read_text())
            self.assertEqual(offered, expected, "port 587 does not offer the snakeoil certificate")

    def test_03c_submission_wrong_password(self):
        self.require_installed()
        with self.smtp_errors_reported("the port 587 session"):
            self.assert_wrong_password_rejected(587, source="127.0.0.3")

    def test_04a_submissions_auth_sends(self):
        self.require_installed()
        with self.smtp_errors_reported("the port 465 session"):
            client = self.open_authenticated(465)
            self.assert_sent_and_deferred(client, "e2e submissions 465")

    def test_04b_submissions_wrong_password(self):
        self.require_installed()
        with self.smtp_errors_reported("the port 465 session"):
            self.assert_wrong_password_rejected(465, source="127.0.0.4")

    def test_05_sender_login_mismatch(self):
        self.require_installed()
        with self.smtp_errors_reported("the port 587 session"):
            client = self.open_authenticated(587)
            code, message = client.mail("bob@example.test")
            # With smtpd_delay_reject = yes, Postfix rejects the sender only at RCPT TO.
            if code == 250:
                code, message = client.rcpt("carol@example.net")
            self.assertEqual(code, 553, f"alice sending as bob got {code} {message!r}")
            self.assertIn(b"not owned by user", message)

    def test_06_strict_client_checks(self):
        self.require_installed()
        standard = h.postconf_n()
        self.addCleanup(self.restore_standard_client_checks)
        h.preseed({"client_checks": ("select", "strict")})
        self.assert_command_ok(h.dpkg_reconfigure(), "dpkg-reconfigure with client_checks strict")

        strict = h.postconf_n()
        changed = {
            name: strict.get(name)
            for name in set(standard) | set(strict)
            if standard.get(name) != strict.get(name)
        }
        self.assertTrue(changed, "client_checks strict changed nothing in main.cf")
        client_restrictions = strict.get("smtpd_client_restrictions", "")
        self.assertTrue(
            any(name in client_restrictions for name in STRICT_CLIENT_RESTRICTIONS),
            f"strict smtpd_client_restrictions has no reverse DNS check: {client_restrictions!r}"
            f"\nchanged parameters: {changed}",
        )

        with self.smtp_errors_reported("the port 25 session with strict checks"):
            client = h.smtp_connect(25, source="127.0.0.2")
            self.addCleanup(h.smtp_close, client)
            code, message = client.mail(NULL_SENDER)
            # With smtpd_delay_reject = yes, Postfix applies client restrictions at RCPT TO.
            if code == 250:
                code, message = client.rcpt("alice@example.test")
            self.assertGreaterEqual(
                code,
                400,
                f"strict checks accepted a client without reverse DNS: {code} {message!r}",
            )
            self.assertIn(b"Client host rejected", message)

        # smtpd_peername_lookup = no makes every client "unknown", like one without
        # reverse DNS, so this proves that strict checks spare logged-in users.
        with self.smtp_errors_reported("the port 587 session with strict checks"):
            client = self.open_authenticated(587)
            self.assert_sent_and_deferred(client, "e2e strict 587")

    def restore_standard_client_checks(self):
        h.preseed({"client_checks": ("select", "standard")})
        self.assert_command_ok(
            h.dpkg_reconfigure(), "dpkg-reconfigure back to client_checks standard"
        )

    def test_07_unrelated_settings_unchanged(self):
        self.require_installed()
        after = h.postconf_n()
        for name in UNRELATED_PARAMETERS:
            with self.subTest(parameter=name):
                self.assertEqual(
                    after.get(name),
                    self.settings_before_install.get(name),
                    f"the package changed {name}",
                )

    def test_08a_reinstall_changes_nothing(self):
        self.require_installed()
        before = h.postfix_file_fingerprints()
        reloads_before = h.maillog_count(h.RELOAD_LOG_LINE)
        self.assert_command_ok(h.dpkg_install(self.deb), "reinstalling with dpkg -i")
        self.assert_files_untouched(before, "reinstalling with dpkg -i")
        self.assert_no_reload(reloads_before, "reinstalling with dpkg -i")

    def test_08b_reconfigure_changes_nothing(self):
        self.require_installed()
        before = h.postfix_file_fingerprints()
        reloads_before = h.maillog_count(h.RELOAD_LOG_LINE)
        self.assert_command_ok(h.dpkg_reconfigure(), "dpkg-reconfigure with the same answers")
        self.assert_files_untouched(before, "dpkg-reconfigure with the same answers")
        self.assert_no_reload(reloads_before, "dpkg-reconfigure with the same answers")

    def test_09_missing_certificate_rejected(self):
        self.require_installed()
        before = h.postfix_file_fingerprints()
        self.addCleanup(self.restore_automatic_certificate)
        h.preseed({"tls_cert_file": ("string", NONEXISTENT_CERT)})
        result = h.dpkg_reconfigure()
        self.assertNotEqual(
            result.returncode, 0, f"a missing certificate was accepted\n{h.format_result(result)}"
        )
        self.assertIn(
            NONEXISTENT_CERT,
            result.stderr,
            f"stderr does not name the path\n{h.format_result(result)}",
        )
        self.assert_files_untouched(before, "the failed reconfigure")

    def restore_automatic_certificate(self):
        h.preseed({"tls_cert_file": ("string", "")})
        self.assert_command_ok(
            h.dpkg_reconfigure(), "dpkg-reconfigure with the certificate answer empty"
        )
        self.assertEqual(h.package_status(), "ii", "the package is not configured again")

    def test_10_ipv6_submission(self):
        self.require_installed()
        if not self.ipv6:
            self.skipTest("::1 does not work in this network namespace")
        with self.smtp_errors_reported("the port 587 session over IPv6"):
            client = self.open_authenticated(587, source="::1", host="::1")
            self.assert_sent_and_deferred(client, "e2e submission ipv6")

    def test_11_remove_and_purge(self):
        self.require_installed()
        self.assert_command_ok(h.remove_package(), "dpkg -r")
        self.assert_command_ok(h.purge_package(), "dpkg --purge")
        self.assertIn(h.package_status(), ("", "un", "pn"), "the package is still known to dpkg")
        self.assertFalse(h.STATE_DIR.exists(), f"{h.STATE_DIR} is still there after purge")
        self.assertEqual(h.debconf_show(), "", "debconf still has answers after purge")


def report_summary(result):
    """Write the "e2e: N passed, M failed" line to E2E_SUMMARY_FILE, or print it, and
    return the exit status."""
    passed, failed, skipped = count_outcomes(result)
    summary = f"e2e: {passed} passed, {failed} failed"
    if skipped:
        summary += f", {skipped} skipped"
    summary_file = os.environ.get("E2E_SUMMARY_FILE")
    if summary_file:
        Path(summary_file).write_text(summary + "\n")
    else:
        print(summary)
    return 0 if failed == 0 else 1


def count_outcomes(result):
    """Return (passed, failed, skipped) counted per test method.

    A test with several failed subtests counts once. An error outside any test, such as
    in setUpClass or a class cleanup, counts as one more failure.
    """
    failed_tests = set()
    other_errors = 0
    for test, _ in result.failures + result.errors:
        parent = getattr(test, "test_case", test)
        if isinstance(parent, unittest.TestCase):
            failed_tests.add(parent.id())
        else:
            other_errors += 1
    failed_tests.update(test.id() for test in result.unexpectedSuccesses)
    skipped = len(result.skipped)
    passed = result.testsRun - len(failed_tests) - skipped - len(result.expectedFailures)
    return passed, len(failed_tests) + other_errors, skipped


def main():
    """Run the test and return the exit status.

    The summary line "e2e: N passed, M failed" goes to stdout, or to the file named by
    E2E_SUMMARY_FILE so that tests/e2e/run can print it last, after its own cleanup.
    """
    if sys.argv[1:] == ["--cleanup"]:
        cleanup()
        return 0
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(SubmissionPackage)
    result = unittest.TextTestRunner(stream=sys.stdout, verbosity=2).run(suite)
    return report_summary(result)


if __name__ == "__main__":
    sys.exit(main())
