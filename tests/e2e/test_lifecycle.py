"""End-to-end test of upgrade, reconfigure, hand edits, remove, purge and an interrupted
configure, with real dpkg, debconf, postconf, Postfix and Dovecot.

Every test starts from a purged package and the harness's fresh Postfix and Dovecot
configuration, with both servers running so that reloads show in their logs. The .deb
named by POSTFIX_SUBMISSION_DEB is the package under test. The upgrade tests build three
more .debs once per run from this source tree with cargo deb: two versions with the same
templates and a third with a changed main.cf.j2. Run it through tests/e2e/run, which
provides the private network and mount namespace and restores /etc/postfix and
/etc/dovecot afterwards.

    python3 tests/e2e/test_lifecycle.py             run every test
    python3 tests/e2e/test_lifecycle.py CLASS[.TEST] run only the named tests
    python3 tests/e2e/test_lifecycle.py --cleanup   only purge and stop the servers
"""

import os
import shutil
import sys
import tempfile
import unittest
from pathlib import Path

import harness as h
import lifecycle_support as ls
from test_submission import report_summary

CERTIFICATE_QUESTIONS = ("tls_cert_file", "tls_key_file")

# The preseed of the first install without the certificate answers. A preseeded question
# counts as seen, and debian/config takes defaults only for unseen questions.
PRESEED_WITHOUT_CERTIFICATES = {
    name: value for name, value in h.PRESEED_VALUES.items() if name not in CERTIFICATE_QUESTIONS
}

# Certificate answers that name the snakeoil pair explicitly. With the empty (automatic)
# answer, the package resolves the certificate to the current smtpd_tls_cert_file, so a
# hand-edited certificate would simply become the automatic value.
PRESEED_SNAKEOIL = dict(
    h.PRESEED_VALUES,
    tls_cert_file=("string", str(h.SNAKEOIL_CERT)),
    tls_key_file=("string", str(h.SNAKEOIL_KEY)),
)

# The main.cf parameters that each answer drives, as templates/main.cf.j2 renders them.
CLIENT_CHECK_PARAMETERS = [
    "smtpd_client_restrictions",
    "smtpd_helo_restrictions",
    "smtpd_sender_restrictions",
]
AUTH_ON_PORT_25_PARAMETERS = ["smtpd_sasl_auth_enable"]

SUBMISSION = "submission/inet"
SUBMISSIONS = "submissions/inet"

# Hand edits of the submission entry: a managed option changed and an extra option added.
HAND_SYSLOG_NAME = "postfix/msa-by-hand"
EXTRA_OPTION = ("smtpd_client_connection_count_limit", "7")

# The admin's own submission entry on a server that had one before the install, with
# extra options that the package does not manage.
ADMIN_MILTERS = "inet:127.0.0.1:11332"
ADMIN_SUBMISSION_ENTRY = (
    "submission inet n - y - - smtpd"
    " -o syslog_name=postfix/submission"
    f" -o smtpd_milters={ADMIN_MILTERS}"
)
# The same with an option that the package changes (to encrypt) and must put back.
ADMIN_SUBMISSION_ENTRY_WITH_TLS = ADMIN_SUBMISSION_ENTRY + " -o smtpd_tls_security_level=may"

# Hand edits made after the install that have nothing to do with the package.
UNRELATED_MAIN_EDIT = ("message_size_limit", "23456789")
UNRELATED_MASTER_EDIT = ("smtp/inet/syslog_name", "postfix/smtp-by-hand")

# A hand edit of a setting that the package manages and that no question drives.
MANAGED_HAND_EDIT = ("mua_relay_restrictions", "permit_sasl_authenticated, defer")

_work_dir = None
_packages = None
_build_error = None


def work_dir():
    """Return the directory for this run's builds and files, created on first use.

    tests/e2e/run passes its own work directory in E2E_WORK_DIR and deletes it
    afterwards. Without one, main() deletes the temporary directory made here.
    """
    global _work_dir
    if _work_dir is None:
        run_dir = os.environ.get("E2E_WORK_DIR")
        _work_dir = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix="lifecycle-e2e-"))
    return _work_dir


def built_packages():
    """Return the upgrade tests' .debs, building them on the first call of the run.

    A failed build raises the same error again on later calls instead of building again.
    """
    global _packages, _build_error
    if _build_error is not None:
        raise RuntimeError(f"building the upgrade packages failed earlier: {_build_error}")
    if _packages is None:
        build_dir = Path(tempfile.mkdtemp(prefix="build-", dir=work_dir()))
        try:
            _packages = ls.build_packages(build_dir)
        except (h.CommandFailed, RuntimeError, OSError) as error:
            _build_error = error
            raise
    return _packages


def deb_under_test():
    """Return the .deb that POSTFIX_SUBMISSION_DEB names, or raise when it is missing."""
    deb = os.environ.get("POSTFIX_SUBMISSION_DEB", "")
    if not deb or not Path(deb).is_file():
        raise RuntimeError(f"POSTFIX_SUBMISSION_DEB must name the .deb to test, got {deb!r}")
    return Path(deb)


def run_postconf(*args):
    """Run postconf with args, as an admin editing by hand would."""
    h.run(["postconf", *args])


class LifecycleTestCase(unittest.TestCase):
    """Base of the lifecycle tests, with a clean server for every test."""

    deb = None
    ipv6 = False

    @classmethod
    def setUpClass(cls):
        cls.deb = deb_under_test()
        cls.ipv6 = h.ipv6_loopback_works()
        h.ensure_snakeoil_certificate()

    def setUp(self):
        ls.reset_server(self.ipv6)
        self.temp_dir = Path(tempfile.mkdtemp(prefix="test-", dir=work_dir()))
        self.addCleanup(shutil.rmtree, self.temp_dir, True)

    # -- actions

    def install(self, deb, values=h.PRESEED_VALUES):
        """Preseed values, install deb, and wait until its first apply reloaded Postfix."""
        if values:
            h.preseed(values)
        # Without a running Postfix there is no reload to wait for.
        self.assertTrue(
            h.postfix_running(), f"Postfix is not running before the install\n{h.maillog_tail()}"
        )
        reloads_before = self.postfix_reloads()
        result = h.dpkg_install(deb)
        self.assert_command_ok(result, f"installing {deb.name}")
        self.assertEqual(h.package_status(), "ii", f"{deb.name} is not fully installed")
        self.assert_postfix_reloaded(reloads_before, f"installing {deb.name}")
        return result

    def upgrade(self, deb):
        """Install deb over the installed version and assert that dpkg now has its version."""
        result = h.dpkg_install(deb)
        self.assert_command_ok(result, f"upgrading to {deb.name}")
        self.assertEqual(
            ls.installed_version(),
            ls.deb_version(deb),
            f"dpkg does not report the version of {deb.name} after the upgrade",
        )
        return result

    def reconfigure(self, values, action):
        """Preseed values and run dpkg-reconfigure noninteractively."""
        h.preseed(values)
        result = h.dpkg_reconfigure()
        self.assert_command_ok(result, action)
        return result

    # -- reloads

    @staticmethod
    def postfix_reloads():
        return h.maillog_count(h.RELOAD_LOG_LINE)

    def assert_postfix_reloaded(self, reloads_before, action):
        """Assert that a Postfix reload reaches the log after an action."""
        reloaded = h.wait_until(lambda: self.postfix_reloads() > reloads_before, timeout=15)
        self.assertTrue(reloaded, f"{action} did not reload Postfix\n{h.maillog_tail()}")

    def assert_postfix_reload_count(self, reloads_before, expected, action):
        """Assert that exactly expected Postfix reloads reached the log after an action."""
        ls.settle_logs()
        self.assertEqual(
            self.postfix_reloads() - reloads_before,
            expected,
            f"{action} reloaded Postfix a wrong number of times\n{h.maillog_tail()}",
        )

    def assert_dovecot_reloaded(self, reloads_before, action):
        """Assert that a Dovecot reload reaches Dovecot's log after an action."""
        reloaded = h.wait_until(lambda: ls.dovecot_reload_count() > reloads_before, timeout=15)
        self.assertTrue(reloaded, f"{action} did not reload Dovecot\n{h.log_tail(h.DOVECOT_LOG)}")

    # -- files and settings

    def assert_command_ok(self, result, action):
        self.assertEqual(result.returncode, 0, f"{action} failed\n{h.format_result(result)}")

    def assert_files_untouched(self, fingerprints_before, action):
        """Assert that main.cf and master.cf keep their content, mtime and inode."""
        fingerprints_after = h.postfix_file_fingerprints()
        for path, before in fingerprints_before.items():
            after = fingerprints_after[path]
            with self.subTest(file=path):
                self.assertEqual(after[0], before[0], f"{action} changed the content of {path}")
                self.assertEqual(after[1], before[1], f"{action} rewrote {path} (new mtime)")
                self.assertEqual(after[2], before[2], f"{action} replaced {path} (new inode)")

    def assert_file_bytes(self, path, expected, action):
        """Assert that a file has exactly the expected bytes, showing a diff otherwise."""
        actual = ls.read_optional(path)
        if expected is None:
            self.assertIsNone(actual, f"after {action}, {path} exists but should not")
            return
        self.assertIsNotNone(actual, f"after {action}, {path} is missing")
        self.assertTrue(
            actual == expected,
            f"after {action}, {path} differs from what it should be:\n"
            f"{ls.text_diff(expected, actual, path)}",
        )

    def assert_changed_names(self, before, after, expected, action):
        """Assert that exactly the names in expected differ between two settings dicts."""
        self.assertEqual(
            ls.differing_names(before, after),
            sorted(expected),
            f"{action} changed other main.cf settings than expected:\n"
            f"{ls.describe_differences(before, after)}",
        )


class UpgradeTest(LifecycleTestCase):
    """Upgrades between packages built from this tree."""

    packages = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.packages = built_packages()

    def test_same_templates_change_nothing(self):
        self.install(self.packages.previous)
        fingerprints = h.postfix_file_fingerprints()
        reloads = self.postfix_reloads()

        self.upgrade(self.packages.next)
        self.assert_files_untouched(fingerprints, "the upgrade with the same templates")
        self.assert_postfix_reload_count(reloads, 0, "the upgrade with the same templates")

    def test_changed_template_rewrites_only_it(self):
        self.install(self.packages.previous)
        settings_before = ls.main_cf_settings()
        master_before = h.file_fingerprint(h.MASTER_CF)
        reloads = self.postfix_reloads()

        self.upgrade(self.packages.changed_templates)
        settings_after = ls.main_cf_settings()
        action = "the upgrade with a changed main.cf.j2"
        self.assert_changed_names(
            settings_before, settings_after, ls.TEMPLATE_CHANGED_SETTINGS, action
        )
        for name, value in ls.TEMPLATE_CHANGED_SETTINGS.items():
            with self.subTest(parameter=name):
                self.assertEqual(
                    settings_after.get(name), value, f"{action} did not set the new {name}"
                )
        self.assertEqual(
            h.file_fingerprint(h.MASTER_CF),
            master_before,
            f"{action} rewrote master.cf, whose template did not change",
        )
        self.assert_postfix_reload_count(reloads, 1, action)

    def test_prerm_upgrade_reverts_nothing(self):
        self.install(self.packages.previous)
        installed = ls.configuration_snapshot()

        # dpkg --unpack runs the old prerm with "upgrade" and unpacks the new version, but
        # leaves the new postinst to dpkg --configure, so in between only the prerm has run.
        moment = "after the old prerm upgrade"
        self.assert_command_ok(ls.unpack_package(self.packages.next), f"dpkg --unpack {moment}")
        self.assertEqual(h.package_status(), "iU", "dpkg --unpack did not leave it unpacked")
        self.assert_configuration_unchanged(installed, moment)

        moment = "after the new postinst configure"
        self.assert_command_ok(ls.configure_package(), "dpkg --configure")
        self.assertEqual(h.package_status(), "ii", "dpkg --configure did not configure it")
        self.assert_configuration_unchanged(installed, moment)

    def assert_configuration_unchanged(self, before, moment):
        """Assert that every part of a configuration snapshot is the same as before."""
        after = ls.configuration_snapshot()
        for part, value in before.items():
            with self.subTest(part=part, moment=moment):
                if isinstance(value, dict):
                    details = ls.describe_differences(value, after[part])
                else:
                    details = f"before: {value!r}\nafter: {after[part]!r}"
                self.assertTrue(after[part] == value, f"{part} changed {moment}:\n{details}")


class ReconfigureTest(LifecycleTestCase):
    """dpkg-reconfigure with unchanged and with changed answers."""

    def test_same_answers_change_nothing(self):
        self.install(self.deb)
        fingerprints = h.postfix_file_fingerprints()
        reloads = self.postfix_reloads()

        self.reconfigure(h.PRESEED_VALUES, "dpkg-reconfigure with the same answers")
        self.assert_files_untouched(fingerprints, "dpkg-reconfigure with the same answers")
        self.assert_postfix_reload_count(reloads, 0, "dpkg-reconfigure with the same answers")

    def check_answer_changes_only(self, question, value, expected_names):
        """Change one answer with dpkg-reconfigure and check which settings changed."""
        self.install(self.deb)
        settings_before = ls.main_cf_settings()
        master_before = h.file_fingerprint(h.MASTER_CF)
        reloads = self.postfix_reloads()

        kind = h.PRESEED_VALUES[question][0]
        action = f"dpkg-reconfigure with {question} {value}"
        self.reconfigure({question: (kind, value)}, action)
        self.assert_changed_names(settings_before, ls.main_cf_settings(), expected_names, action)
        self.assertEqual(
            h.file_fingerprint(h.MASTER_CF),
            master_before,
            f"{action} rewrote master.cf, although {question} drives no master.cf setting",
        )
        self.assert_postfix_reloaded(reloads, action)

    def test_strict_checks_change_only_restrictions(self):
        self.check_answer_changes_only("client_checks", "strict", CLIENT_CHECK_PARAMETERS)

    def test_auth_on_port_25_changes_only_sasl(self):
        self.check_answer_changes_only("auth_on_port_25", "true", AUTH_ON_PORT_25_PARAMETERS)


class HandEditTest(LifecycleTestCase):
    """A certificate pair and submission options changed by hand after the install."""

    def setUp(self):
        super().setUp()
        self.cert, self.key = ls.make_certificate(self.temp_dir, "hand")

    def edit_by_hand(self):
        """Change the certificate pair and the submission entry's options with postconf."""
        run_postconf(
            "-e", f"smtpd_tls_cert_file={self.cert}", f"smtpd_tls_key_file={self.key}"
        )
        run_postconf(
            "-P",
            f"{SUBMISSION}/syslog_name={HAND_SYSLOG_NAME}",
            f"{SUBMISSION}/{EXTRA_OPTION[0]}={EXTRA_OPTION[1]}",
        )

    def assert_hand_edits_kept(self, result, action):
        """Assert that the hand values stay, are announced, and became the answers."""
        settings = ls.main_cf_settings()
        self.assertEqual(
            settings.get("smtpd_tls_cert_file"), str(self.cert), f"{action} replaced the hand cert"
        )
        self.assertEqual(
            settings.get("smtpd_tls_key_file"), str(self.key), f"{action} replaced the hand key"
        )
        options = ls.entry_options(ls.master_options(), SUBMISSION)
        self.assertEqual(
            options.get("syslog_name"),
            HAND_SYSLOG_NAME,
            f"{action} replaced the hand-edited -o syslog_name",
        )
        self.assertEqual(
            options.get(EXTRA_OPTION[0]),
            EXTRA_OPTION[1],
            f"{action} dropped the extra -o {EXTRA_OPTION[0]}",
        )

        hand_values = [
            ("smtpd_tls_cert_file", str(self.cert)),
            ("smtpd_tls_key_file", str(self.key)),
            (f"{SUBMISSION}/syslog_name", HAND_SYSLOG_NAME),
        ]
        for name, value in hand_values:
            with self.subTest(notice=name):
                lines = ls.notice_lines(result.stderr, name, value)
                self.assertEqual(
                    len(lines),
                    1,
                    f"{action} printed {len(lines)} lines about the kept {name}, expected one\n"
                    f"--- stderr ---\n{result.stderr}",
                )

        answers = ls.debconf_answers(CERTIFICATE_QUESTIONS)
        self.assertEqual(
            answers["tls_cert_file"],
            str(self.cert),
            f"after {action}, debconf's tls_cert_file is not the hand-edited certificate",
        )
        self.assertEqual(
            answers["tls_key_file"],
            str(self.key),
            f"after {action}, debconf's tls_key_file is not the hand-edited key",
        )

    def test_reinstall_keeps_hand_edits(self):
        self.install(self.deb, PRESEED_SNAKEOIL)
        self.edit_by_hand()
        fingerprints = h.postfix_file_fingerprints()
        reloads = self.postfix_reloads()

        result = h.dpkg_install(self.deb)
        self.assert_command_ok(result, "reinstalling after hand edits")
        self.assert_hand_edits_kept(result, "reinstalling")
        self.assert_files_untouched(fingerprints, "reinstalling after hand edits")
        self.assert_postfix_reload_count(reloads, 0, "reinstalling after hand edits")

    def test_upgrade_keeps_hand_edits(self):
        packages = built_packages()
        self.install(packages.previous, PRESEED_SNAKEOIL)
        self.edit_by_hand()

        result = self.upgrade(packages.next)
        self.assert_hand_edits_kept(result, "the upgrade")

    def test_changed_answer_beats_hand_edit(self):
        self.install(self.deb, PRESEED_SNAKEOIL)
        self.edit_by_hand()
        self.assert_command_ok(h.dpkg_install(self.deb), "reinstalling after hand edits")
        self.assertEqual(
            ls.debconf_answers(["tls_cert_file"])["tls_cert_file"],
            str(self.cert),
            "reinstalling did not set the tls_cert_file answer to the hand-edited certificate",
        )

        certificate_answers = {name: PRESEED_SNAKEOIL[name] for name in CERTIFICATE_QUESTIONS}
        result = self.reconfigure(certificate_answers, "dpkg-reconfigure with the snakeoil pair")
        settings = ls.main_cf_settings()
        self.assertEqual(
            settings.get("smtpd_tls_cert_file"),
            str(h.SNAKEOIL_CERT),
            f"the changed tls_cert_file answer did not replace the hand value\n{result.stderr}",
        )
        self.assertEqual(
            settings.get("smtpd_tls_key_file"),
            str(h.SNAKEOIL_KEY),
            f"the changed tls_key_file answer did not replace the hand value\n{result.stderr}",
        )
        self.assertEqual(
            ls.entry_options(ls.master_options(), SUBMISSION).get("syslog_name"),
            HAND_SYSLOG_NAME,
            "dpkg-reconfigure replaced the hand-edited -o syslog_name, which no answer drives",
        )


class ExistingConfigurationTest(LifecycleTestCase):
    """A first install on a server with its own certificate and submission entry."""

    def test_first_install_adopts_admin_settings(self):
        cert, key = ls.make_certificate(self.temp_dir, "existing")
        run_postconf("-e", f"smtpd_tls_cert_file={cert}", f"smtpd_tls_key_file={key}")
        run_postconf("-M", f"{SUBMISSION}={ADMIN_SUBMISSION_ENTRY}")

        self.install(self.deb, PRESEED_WITHOUT_CERTIFICATES)

        with self.subTest(check="certificate answers"):
            answers = ls.debconf_answers(CERTIFICATE_QUESTIONS)
            self.assertEqual(
                answers["tls_cert_file"], str(cert), "tls_cert_file was not seeded from main.cf"
            )
            self.assertEqual(
                answers["tls_key_file"], str(key), "tls_key_file was not seeded from main.cf"
            )
            self.assertEqual(
                ls.main_cf_settings().get("smtpd_tls_cert_file"),
                str(cert),
                "the install replaced the existing smtpd_tls_cert_file",
            )

        with self.subTest(check="entry reused"):
            entries = ls.master_entry_keys()
            self.assertEqual(
                entries.count(SUBMISSION),
                1,
                f"postconf -M lists {entries.count(SUBMISSION)} {SUBMISSION} entries: {entries}",
            )
            services = {
                service["entry"]: service for service in ls.package_status_json()["services"]
            }
            self.assertIn(SUBMISSION, services, f"status lists no {SUBMISSION}: {services}")
            self.assertFalse(
                services[SUBMISSION]["created_by_package"],
                f"status reports the admin's {SUBMISSION} entry as created by the package",
            )

        with self.subTest(check="extra options kept"):
            options = ls.entry_options(ls.master_options(), SUBMISSION)
            self.assertEqual(
                options.get("smtpd_milters"),
                ADMIN_MILTERS,
                f"the admin's -o smtpd_milters is gone: {options}",
            )
            self.assertEqual(
                options.get("syslog_name"),
                "postfix/submission",
                f"the admin's -o syslog_name changed: {options}",
            )


class RemoveTest(LifecycleTestCase):
    """dpkg -r after an install, with and without hand edits in between."""

    def test_remove_reverts_package_settings(self):
        cert, key = ls.make_certificate(self.temp_dir, "existing")
        run_postconf("-e", f"smtpd_tls_cert_file={cert}", f"smtpd_tls_key_file={key}")
        run_postconf("-M", f"{SUBMISSION}={ADMIN_SUBMISSION_ENTRY_WITH_TLS}")
        settings_before = ls.main_cf_settings()
        options_before = ls.master_options()

        self.install(self.deb, PRESEED_WITHOUT_CERTIFICATES)
        managed = ls.managed_settings()
        self.assertIn(SUBMISSIONS, ls.master_entry_keys(), f"the install added no {SUBMISSIONS}")
        # Hand edits in both files make the removal revert setting by setting, since
        # neither file is any longer the one that the package left.
        run_postconf("-e", "=".join(UNRELATED_MAIN_EDIT), "=".join(MANAGED_HAND_EDIT))
        run_postconf("-P", "=".join(UNRELATED_MASTER_EDIT))
        postfix_reloads = self.postfix_reloads()
        dovecot_reloads = ls.dovecot_reload_count()

        result = h.remove_package()
        self.assert_command_ok(result, "dpkg -r")
        self.assertEqual(h.package_status(), "rc", "dpkg -r did not leave the package removed")
        settings_after = ls.main_cf_settings()
        options_after = ls.master_options()
        removal_output = f"--- stderr of dpkg -r ---\n{result.stderr}"

        for name, setting in managed.items():
            if setting["file"] != "main.cf" or name == MANAGED_HAND_EDIT[0]:
                continue
            with self.subTest(parameter=name):
                if setting["original"] is None:
                    self.assertNotIn(
                        name, settings_after, f"dpkg -r left {name}, which was unset before"
                    )
                else:
                    self.assertEqual(
                        settings_after.get(name),
                        setting["original"],
                        f"dpkg -r did not put back {name}",
                    )
        self.assertEqual(
            settings_after.get(MANAGED_HAND_EDIT[0]),
            MANAGED_HAND_EDIT[1],
            f"dpkg -r replaced the hand-edited {MANAGED_HAND_EDIT[0]}\n{removal_output}",
        )
        expected_settings = ls.with_edits(settings_before, UNRELATED_MAIN_EDIT, MANAGED_HAND_EDIT)
        self.assertEqual(
            settings_after,
            expected_settings,
            "after dpkg -r, main.cf differs from before the install plus the hand edits:\n"
            f"{ls.describe_differences(expected_settings, settings_after)}",
        )

        entries = ls.master_entry_keys()
        self.assertNotIn(SUBMISSIONS, entries, f"dpkg -r left the {SUBMISSIONS} entry it added")
        self.assertEqual(
            entries.count(SUBMISSION), 1, f"dpkg -r did not leave the admin's {SUBMISSION}"
        )
        self.assertEqual(
            ls.entry_options(options_after, SUBMISSION),
            ls.entry_options(options_before, SUBMISSION),
            f"dpkg -r did not put back the options of the admin's {SUBMISSION} entry",
        )
        expected_options = ls.with_edits(options_before, UNRELATED_MASTER_EDIT)
        self.assertEqual(
            options_after,
            expected_options,
            "after dpkg -r, the master.cf options differ from before the install plus the "
            f"hand edit:\n{ls.describe_differences(expected_options, options_after)}",
        )

        self.assertFalse(
            h.DOVECOT_PRODUCT_SNIPPET.exists(), f"dpkg -r left {h.DOVECOT_PRODUCT_SNIPPET}"
        )
        self.assert_postfix_reloaded(postfix_reloads, "dpkg -r")
        self.assert_dovecot_reloaded(dovecot_reloads, "dpkg -r")

    def test_remove_restores_untouched_files(self):
        main_before = h.MAIN_CF.read_bytes()
        master_before = h.MASTER_CF.read_bytes()
        self.install(self.deb)
        self.assertNotEqual(h.MAIN_CF.read_bytes(), main_before, "the install changed no main.cf")

        self.assert_command_ok(h.remove_package(), "dpkg -r")
        self.assert_file_bytes(h.MAIN_CF, main_before, "install and dpkg -r")
        self.assert_file_bytes(h.MASTER_CF, master_before, "install and dpkg -r")
        self.assert_file_bytes(h.DOVECOT_PRODUCT_SNIPPET, None, "install and dpkg -r")

    def test_remove_keeps_unrelated_hand_edit(self):
        settings_before = ls.main_cf_settings()
        master_before = h.MASTER_CF.read_bytes()
        self.install(self.deb)
        managed = ls.managed_settings()
        run_postconf("-e", "=".join(UNRELATED_MAIN_EDIT))

        self.assert_command_ok(h.remove_package(), "dpkg -r")
        settings_after = ls.main_cf_settings()
        self.assertEqual(
            settings_after.get(UNRELATED_MAIN_EDIT[0]),
            UNRELATED_MAIN_EDIT[1],
            f"dpkg -r undid the hand-edited {UNRELATED_MAIN_EDIT[0]}",
        )
        expected_settings = ls.with_edits(settings_before, UNRELATED_MAIN_EDIT)
        package_left = [
            name
            for name, setting in managed.items()
            if setting["file"] == "main.cf"
            and settings_after.get(name) != expected_settings.get(name)
        ]
        self.assertEqual(
            package_left,
            [],
            "dpkg -r left package values in main.cf:\n"
            f"{ls.describe_differences(expected_settings, settings_after)}",
        )
        self.assertEqual(
            settings_after,
            expected_settings,
            "after dpkg -r, main.cf differs from before the install plus the hand edit:\n"
            f"{ls.describe_differences(expected_settings, settings_after)}",
        )
        self.assert_file_bytes(h.MASTER_CF, master_before, "install and dpkg -r")


class PurgeTest(LifecycleTestCase):
    """dpkg --purge and a later install."""

    def test_purge_deletes_state_and_answers(self):
        self.install(self.deb)
        self.assertTrue(h.STATE_DIR.is_dir(), f"the install created no {h.STATE_DIR}")

        self.assert_command_ok(h.purge_package(), "dpkg --purge")
        self.assertIn(
            h.package_status(), ls.NOT_INSTALLED, "dpkg still knows the package after purge"
        )
        self.assertFalse(h.STATE_DIR.exists(), f"{h.STATE_DIR} is still there after purge")
        self.assertEqual(h.debconf_show(), "", "debconf-show prints answers after purge")

    def test_install_after_purge_seeds_again(self):
        first_cert, first_key = ls.make_certificate(self.temp_dir, "first")
        run_postconf("-e", f"smtpd_tls_cert_file={first_cert}", f"smtpd_tls_key_file={first_key}")
        self.install(self.deb, PRESEED_WITHOUT_CERTIFICATES)
        self.assertEqual(
            ls.debconf_answers(["tls_cert_file"])["tls_cert_file"],
            str(first_cert),
            "the first install did not seed tls_cert_file from main.cf",
        )
        self.assert_command_ok(h.purge_package(), "dpkg --purge")

        # A new certificate in main.cf: only a fresh seed can make it the answer.
        second_cert, second_key = ls.make_certificate(self.temp_dir, "second")
        run_postconf(
            "-e", f"smtpd_tls_cert_file={second_cert}", f"smtpd_tls_key_file={second_key}"
        )
        self.install(self.deb, PRESEED_WITHOUT_CERTIFICATES)
        answers = ls.debconf_answers(CERTIFICATE_QUESTIONS)
        self.assertEqual(
            answers["tls_cert_file"],
            str(second_cert),
            "the install after purge did not seed tls_cert_file from the current main.cf",
        )
        self.assertEqual(
            answers["tls_key_file"],
            str(second_key),
            "the install after purge did not seed tls_key_file from the current main.cf",
        )

        record = ls.state_record()
        self.assertIsNotNone(record, f"the install after purge wrote no {h.STATE_DIR}/state.json")
        self.assertFalse(record["pending"], "state.json is marked pending after a complete run")
        cert_change = record["parameters"].get("smtpd_tls_cert_file", {})
        self.assertEqual(
            cert_change.get("original"),
            str(second_cert),
            "state.json does not record the certificate found at the second install as the "
            f"value before the install: {cert_change}",
        )


class InterruptedConfigureTest(LifecycleTestCase):
    """A configure killed after its first postconf write, finished by dpkg --configure -a."""

    def setUp(self):
        # postconf appends new parameters in hash table order, and Postfix seeds its hash
        # function randomly unless NORANDOMIZE is set. Without it, two runs from the same
        # start would write the same settings in a different order. dpkg, the maintainer
        # scripts and postfix-submission pass the variable on to postconf.
        os.environ["NORANDOMIZE"] = "1"
        self.addCleanup(os.environ.pop, "NORANDOMIZE", None)
        super().setUp()

    def test_configure_after_kill_matches_clean_run(self):
        start_main_cf = h.MAIN_CF.read_bytes()
        self.install(self.deb)
        expected = self.final_state()

        ls.reset_server(self.ipv6)
        self.assertTrue(
            h.MAIN_CF.read_bytes() == start_main_cf,
            "the interrupted run does not start from the same main.cf as the clean run:\n"
            f"{ls.text_diff(start_main_cf, h.MAIN_CF.read_bytes(), h.MAIN_CF)}",
        )
        h.preseed(h.PRESEED_VALUES)
        fingerprints = h.postfix_file_fingerprints()
        with ls.PostconfInterrupter(self.temp_dir) as interrupter:
            self.assertEqual(
                interrupter.resolved_postconf(),
                str(ls.WRAPPER_DIR / "postconf"),
                f"postconf does not resolve to the wrapper on PATH={os.environ.get('PATH')}",
            )
            result = h.dpkg_install(self.deb)
            wrapper_log = "\n".join(interrupter.log_lines())
            interrupter.unmount()

        self.assertTrue(
            interrupter.killed(),
            "the postconf wrapper never killed postfix-submission, so dpkg's maintainer "
            f"scripts did not run it\n--- wrapper log ---\n{wrapper_log}\n"
            f"{h.format_result(result)}",
        )
        self.assertNotEqual(result.returncode, 0, "dpkg -i succeeded although apply was killed")
        self.assertEqual(h.package_status(), "iF", "the killed configure did not fail in dpkg")
        self.assertNotEqual(
            h.postfix_file_fingerprints(),
            fingerprints,
            "the killed run had written neither main.cf nor master.cf",
        )
        record = ls.state_record()
        self.assertIsNotNone(record, "the killed run left no state.json")
        self.assertTrue(record["pending"], "the killed run's state.json is not marked pending")

        reloads = self.postfix_reloads()
        self.assert_command_ok(ls.configure_pending(), "dpkg --configure -a")
        self.assertEqual(h.package_status(), "ii", "dpkg --configure -a did not configure it")
        self.assert_postfix_reloaded(reloads, "dpkg --configure -a after the killed run")
        self.assert_same_final_state(expected, self.final_state())

    @staticmethod
    def final_state():
        """Return what an install leaves behind: files, managed settings, state files."""
        return {
            "files": {
                h.MAIN_CF: h.MAIN_CF.read_bytes(),
                h.MASTER_CF: h.MASTER_CF.read_bytes(),
                h.DOVECOT_PRODUCT_SNIPPET: ls.read_optional(h.DOVECOT_PRODUCT_SNIPPET),
            },
            "settings": ls.managed_settings(),
            "record": ls.state_record(),
            "state files": ls.state_files(),
        }

    def assert_same_final_state(self, expected, actual):
        action = "dpkg --configure -a after the killed run"
        for path, content in expected["files"].items():
            with self.subTest(file=str(path)):
                self.assert_file_bytes(path, content, action)
        with self.subTest(check="managed settings"):
            self.assertEqual(
                actual["settings"],
                expected["settings"],
                "the managed settings of 'status --format json' differ from the clean run",
            )
        with self.subTest(check="state.json"):
            self.assertEqual(
                actual["record"], expected["record"], "state.json differs from the clean run"
            )
        with self.subTest(check="state directory"):
            self.assertEqual(
                sorted(actual["state files"]),
                sorted(expected["state files"]),
                f"{h.STATE_DIR} holds other files than after the clean run",
            )
            for name, content in expected["state files"].items():
                if name in actual["state files"]:
                    self.assertTrue(
                        actual["state files"][name] == content,
                        f"{h.STATE_DIR}/{name} differs from the clean run",
                    )


TEST_CLASSES = [
    UpgradeTest,
    ReconfigureTest,
    HandEditTest,
    ExistingConfigurationTest,
    RemoveTest,
    PurgeTest,
    InterruptedConfigureTest,
]


def main():
    """Run the test and return the exit status.

    The summary line "e2e: N passed, M failed" goes to stdout, or to the file named by
    E2E_SUMMARY_FILE so that tests/e2e/run can add it to its own.
    """
    if sys.argv[1:] == ["--cleanup"]:
        ls.stop_servers()
        return 0
    loader = unittest.defaultTestLoader
    if sys.argv[1:]:
        suite = loader.loadTestsFromNames(sys.argv[1:], sys.modules[__name__])
    else:
        suite = unittest.TestSuite(loader.loadTestsFromTestCase(case) for case in TEST_CLASSES)
    try:
        result = unittest.TextTestRunner(stream=sys.stdout, verbosity=2).run(suite)
    finally:
        ls.stop_servers()
        if "E2E_WORK_DIR" not in os.environ and _work_dir is not None:
            shutil.rmtree(_work_dir, ignore_errors=True)
    return report_summary(result)


if __name__ == "__main__":
    sys.exit(main())
