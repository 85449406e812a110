//! The built binary against real postconf, doveconf, openssl and a private debconf
//! database: what `apply` and `remove` write, what they refuse, and what they leave alone.

mod common;

use std::fs;

use common::{tools_present, Sandbox};

fn apply_ok(sandbox: &Sandbox) -> String {
    sandbox.run_ok(&["apply"]).1
}

#[test]
fn dry_run_prints_diff_and_writes_nothing() {
    if !tools_present() {
        return;
    }
    let sandbox = Sandbox::new();
    let before = sandbox.fingerprints();
    let (stdout, _) = sandbox.run_ok(&["apply", "--dry-run"]);
    assert!(stdout.contains("+smtpd_sasl_type = dovecot"), "{stdout}");
    assert!(stdout.contains("+submission inet"), "{stdout}");
    assert!(stdout.contains("+submissions inet"), "{stdout}");
    assert!(stdout.contains("unix_listener"), "{stdout}");
    assert_eq!(sandbox.fingerprints(), before);
    assert!(!sandbox.snippet().exists());
    assert!(!sandbox.state_file().exists());
}

#[test]
fn apply_configures_submission() {
    if !tools_present() {
        return;
    }
    let sandbox = Sandbox::new();
    sandbox.preseed(&[(
        "sender_login_maps",
        "string",
        "inline:{ alice@example.test=alice@example.test }",
    )]);
    apply_ok(&sandbox);
    assert_eq!(
        sandbox.parameter("smtpd_sasl_type").as_deref(),
        Some("dovecot")
    );
    assert_eq!(
        sandbox.parameter("smtpd_sasl_path").as_deref(),
        Some("private/auth")
    );
    assert_eq!(
        sandbox.parameter("smtpd_tls_auth_only").as_deref(),
        Some("yes")
    );
    assert_eq!(sandbox.parameter("smtpd_sasl_auth_enable"), None);
    assert!(sandbox
        .parameter("mua_sender_restrictions")
        .unwrap()
        .contains("reject_sender_login_mismatch"));
    let options = sandbox.postconf(&["-P"]);
    assert!(
        options.contains("submission/inet/smtpd_tls_security_level = encrypt"),
        "{options}"
    );
    assert!(
        options.contains("submissions/inet/smtpd_tls_wrappermode = yes"),
        "{options}"
    );
    assert!(
        options.contains("submission/inet/smtpd_sasl_auth_enable = yes"),
        "{options}"
    );
    // Every restriction list is replaced on the submission ports, so no port-25 check can
    // turn away a logged-in user.
    for list in ["client", "helo", "sender", "relay", "recipient"] {
        for service in ["submission", "submissions"] {
            let line =
                format!("{service}/inet/smtpd_{list}_restrictions = $mua_{list}_restrictions");
            assert!(options.contains(&line), "{line} missing:\n{options}");
        }
        let name = format!("mua_{list}_restrictions");
        let mua = sandbox.parameter(&name).unwrap_or_default();
        assert!(
            mua.ends_with("permit_sasl_authenticated, reject"),
            "{name} = {mua}"
        );
    }
    let snippet = fs::read_to_string(sandbox.snippet()).unwrap();
    assert!(
        snippet.contains("unix_listener /var/spool/postfix/private/auth"),
        "{snippet}"
    );
    assert_eq!(
        sandbox.parameter("message_size_limit").as_deref(),
        Some("12345678")
    );
}

#[test]
fn second_apply_writes_nothing() {
    if !tools_present() {
        return;
    }
    let sandbox = Sandbox::new();
    apply_ok(&sandbox);
    let before = sandbox.fingerprints();
    let snippet = common::fingerprint(&sandbox.snippet());
    let state = common::fingerprint(&sandbox.state_file());
    let stderr = apply_ok(&sandbox);
    assert!(stderr.contains("up to date"), "{stderr}");
    assert_eq!(sandbox.fingerprints(), before);
    assert_eq!(common::fingerprint(&sandbox.snippet()), snippet);
    assert_eq!(common::fingerprint(&sandbox.state_file()), state);
}

#[test]
fn remove_restores_files_byte_for_byte() {
    if !tools_present() {
        return;
    }
    let sandbox = Sandbox::new();
    let main_before = fs::read(sandbox.main_cf()).unwrap();
    let master_before = fs::read(sandbox.master_cf()).unwrap();
    apply_ok(&sandbox);
    assert_ne!(fs::read(sandbox.main_cf()).unwrap(), main_before);
    sandbox.run_ok(&["remove"]);
    assert_eq!(fs::read(sandbox.main_cf()).unwrap(), main_before);
    assert_eq!(fs::read(sandbox.master_cf()).unwrap(), master_before);
    assert!(!sandbox.snippet().exists());
    assert!(!sandbox.state_file().exists());
}

#[test]
fn missing_certificate_rejected_unchanged() {
    if !tools_present() {
        return;
    }
    let sandbox = Sandbox::new();
    sandbox.preseed(&[("tls_cert_file", "string", "/nonexistent/cert.pem")]);
    let before = sandbox.fingerprints();
    let output = sandbox.run(&["apply"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("postfix-submission/tls_cert_file"),
        "{stderr}"
    );
    assert!(stderr.contains("/nonexistent/cert.pem"), "{stderr}");
    assert!(stderr.contains("file not found"), "{stderr}");
    assert!(
        stderr.contains("dpkg-reconfigure postfix-submission"),
        "{stderr}"
    );
    assert_eq!(sandbox.fingerprints(), before);
    assert!(!sandbox.snippet().exists());
    assert!(!sandbox.state_file().exists());
}

#[test]
fn mismatched_key_rejected() {
    if !tools_present() {
        return;
    }
    let sandbox = Sandbox::new();
    sandbox.make_certificate("other", "other-key");
    let key = sandbox.path("tls/other-key.pem").display().to_string();
    sandbox.preseed(&[("tls_key_file", "string", &key)]);
    let before = sandbox.fingerprints();
    let output = sandbox.run(&["apply"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("postfix-submission/tls_key_file"),
        "{stderr}"
    );
    assert!(stderr.contains("is not the private key of"), "{stderr}");
    assert_eq!(sandbox.fingerprints(), before);
}

#[test]
fn certificate_as_key_rejected() {
    if !tools_present() {
        return;
    }
    let sandbox = Sandbox::new();
    let cert = sandbox.path("tls/cert.pem").display().to_string();
    sandbox.preseed(&[("tls_key_file", "string", &cert)]);
    let output = sandbox.run(&["apply"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("not an unencrypted PEM private key"),
        "{stderr}"
    );
}

#[test]
fn unsupported_map_type_rejected() {
    if !tools_present() {
        return;
    }
    let sandbox = Sandbox::new();
    sandbox.preseed(&[("sender_login_maps", "string", "nosuchtype:/etc/postfix/x")]);
    let before = sandbox.fingerprints();
    let output = sandbox.run(&["apply"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("postfix-submission/sender_login_maps"),
        "{stderr}"
    );
    assert!(stderr.contains("\"nosuchtype\""), "{stderr}");
    assert!(stderr.contains("postconf -m"), "{stderr}");
    assert_eq!(sandbox.fingerprints(), before);
}

#[test]
fn missing_map_file_rejected() {
    if !tools_present() {
        return;
    }
    let sandbox = Sandbox::new();
    sandbox.preseed(&[(
        "sender_login_maps",
        "string",
        "texthash:/nonexistent/sender_login",
    )]);
    let output = sandbox.run(&["apply"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("/nonexistent/sender_login not found"),
        "{stderr}"
    );
}

#[test]
fn control_character_in_answer_rejected() {
    if !tools_present() {
        return;
    }
    let sandbox = Sandbox::new();
    sandbox.preseed(&[("sender_login_maps", "string", "hash:/etc/a\tb")]);
    let output = sandbox.run(&["apply"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("U+0009"), "{stderr}");
    assert!(
        stderr.contains("postfix-submission/sender_login_maps"),
        "{stderr}"
    );
}

#[test]
fn no_socket_and_no_dovecot_rejected() {
    if !tools_present() {
        return;
    }
    let sandbox = Sandbox::new();
    // A queue directory without Dovecot's socket, so the check cannot pass by accident.
    let queue = sandbox.path("queue");
    fs::create_dir_all(queue.join("private")).unwrap();
    sandbox.set_parameters(&[("queue_directory", &queue.display().to_string())]);
    sandbox.preseed(&[("configure_dovecot", "boolean", "false")]);
    let output = sandbox.run(&["apply", "--dry-run"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("postfix-submission/configure_dovecot"),
        "{stderr}"
    );
    assert!(stderr.contains("private/auth"), "{stderr}");
}

#[test]
fn failed_postfix_check_restores_files() {
    if !tools_present() {
        return;
    }
    let sandbox = Sandbox::new();
    let templates = sandbox.path("bad-templates");
    fs::create_dir_all(&templates).unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
    for entry in fs::read_dir(&source).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), templates.join(entry.file_name())).unwrap();
    }
    let main = templates.join("main.cf.j2");
    let mut text = fs::read_to_string(&main).unwrap();
    text.push_str("default_process_limit = not-a-number\n");
    fs::write(&main, text).unwrap();

    let before = sandbox.fingerprints();
    let output = sandbox.run_with_templates(&["apply"], &templates);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("Postfix rejected the new configuration"),
        "{stderr}"
    );
    assert!(stderr.contains("default_process_limit"), "{stderr}");
    assert!(stderr.contains("restored"), "{stderr}");
    let after = sandbox.fingerprints();
    assert_eq!(after[0].content, before[0].content);
    assert_eq!(after[1].content, before[1].content);
    assert!(!sandbox.snippet().exists());
    assert!(!sandbox.state_file().exists());
}

#[test]
fn deselected_service_entry_removed() {
    if !tools_present() {
        return;
    }
    let sandbox = Sandbox::new();
    apply_ok(&sandbox);
    sandbox.preseed(&[("services", "multiselect", "submission")]);
    apply_ok(&sandbox);
    let entries = sandbox.postconf(&["-M"]);
    assert!(
        entries.lines().any(|l| l.starts_with("submission ")),
        "{entries}"
    );
    assert!(
        !entries.lines().any(|l| l.starts_with("submissions ")),
        "{entries}"
    );
}

#[test]
fn admin_entry_reused_with_its_options() {
    if !tools_present() {
        return;
    }
    let sandbox = Sandbox::new();
    sandbox.postconf(&[
        "-M",
        "submission/inet=submission inet n - y - - smtpd -o syslog_name=postfix/submission \
         -o smtpd_milters=inet:127.0.0.1:11332 -o smtpd_tls_security_level=may",
    ]);
    let master_before = fs::read(sandbox.master_cf()).unwrap();
    apply_ok(&sandbox);
    let entries = sandbox.postconf(&["-M"]);
    assert_eq!(
        entries
            .lines()
            .filter(|l| l.starts_with("submission "))
            .count(),
        1,
        "{entries}"
    );
    let options = sandbox.postconf(&["-P"]);
    assert!(
        options.contains("submission/inet/smtpd_milters = inet:127.0.0.1:11332"),
        "{options}"
    );
    assert!(
        options.contains("submission/inet/smtpd_tls_security_level = encrypt"),
        "{options}"
    );

    sandbox.run_ok(&["remove"]);
    let options = sandbox.postconf(&["-P"]);
    assert!(
        options.contains("submission/inet/smtpd_milters = inet:127.0.0.1:11332"),
        "{options}"
    );
    assert!(
        options.contains("submission/inet/smtpd_tls_security_level = may"),
        "{options}"
    );
    assert!(
        !options.contains("submission/inet/smtpd_sasl_auth_enable"),
        "{options}"
    );
    assert_eq!(fs::read(sandbox.master_cf()).unwrap(), master_before);
}

#[test]
fn letsencrypt_certificate_chosen_automatically() {
    if !tools_present() {
        return;
    }
    let sandbox = Sandbox::new();
    let live = sandbox.path(&format!("letsencrypt/live/{}", common::MYHOSTNAME));
    fs::create_dir_all(&live).unwrap();
    fs::copy(sandbox.path("tls/cert.pem"), live.join("fullchain.pem")).unwrap();
    fs::copy(sandbox.path("tls/key.pem"), live.join("privkey.pem")).unwrap();
    apply_ok(&sandbox);
    let cert = sandbox.parameter("smtpd_tls_cert_file").unwrap();
    assert_eq!(cert, live.join("fullchain.pem").display().to_string());
    let key = sandbox.parameter("smtpd_tls_key_file").unwrap();
    assert_eq!(key, live.join("privkey.pem").display().to_string());
}

#[test]
fn hand_edit_kept_and_answer_adopted() {
    if !tools_present() {
        return;
    }
    let sandbox = Sandbox::new();
    let cert = sandbox.path("tls/cert.pem").display().to_string();
    let key = sandbox.path("tls/key.pem").display().to_string();
    sandbox.preseed(&[
        ("tls_cert_file", "string", &cert),
        ("tls_key_file", "string", &key),
    ]);
    apply_ok(&sandbox);
    sandbox.make_certificate("hand", "hand-key");
    let hand = sandbox.path("tls/hand.pem").display().to_string();
    let hand_key = sandbox.path("tls/hand-key.pem").display().to_string();
    sandbox.set_parameters(&[
        ("smtpd_tls_cert_file", &hand),
        ("smtpd_tls_key_file", &hand_key),
    ]);
    let before = sandbox.fingerprints();

    // The answers did not change, so the hand edit wins and becomes the answer.
    let stderr = apply_ok(&sandbox);
    assert!(
        stderr.contains("kept the hand-edited smtpd_tls_cert_file"),
        "{stderr}"
    );
    assert_eq!(sandbox.fingerprints(), before);
    assert_eq!(sandbox.answer("tls_cert_file"), hand);
    assert_eq!(sandbox.answer("tls_key_file"), hand_key);

    // A changed answer wins over the hand edit.
    sandbox.preseed(&[
        ("tls_cert_file", "string", &cert),
        ("tls_key_file", "string", &key),
    ]);
    apply_ok(&sandbox);
    assert_eq!(
        sandbox.parameter("smtpd_tls_cert_file").as_deref(),
        Some(cert.as_str())
    );
    assert_eq!(
        sandbox.parameter("smtpd_tls_key_file").as_deref(),
        Some(key.as_str())
    );
}

#[test]
fn auth_on_port_25_toggles_parameter() {
    if !tools_present() {
        return;
    }
    let sandbox = Sandbox::new();
    sandbox.preseed(&[("auth_on_port_25", "boolean", "true")]);
    apply_ok(&sandbox);
    assert_eq!(
        sandbox.parameter("smtpd_sasl_auth_enable").as_deref(),
        Some("yes")
    );
    sandbox.preseed(&[("auth_on_port_25", "boolean", "false")]);
    apply_ok(&sandbox);
    assert_eq!(sandbox.parameter("smtpd_sasl_auth_enable"), None);
}

#[test]
fn status_reports_drift_as_json() {
    if !tools_present() {
        return;
    }
    let sandbox = Sandbox::new();
    apply_ok(&sandbox);
    sandbox.set_parameters(&[("smtpd_tls_auth_only", "no")]);
    let (stdout, _) = sandbox.run_ok(&["status", "--format", "json"]);
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let settings = status["settings"].as_array().unwrap();
    let auth_only = settings
        .iter()
        .find(|s| s["name"] == "smtpd_tls_auth_only")
        .unwrap();
    assert_eq!(auth_only["drift"], true);
    let sasl_type = settings
        .iter()
        .find(|s| s["name"] == "smtpd_sasl_type")
        .unwrap();
    assert_eq!(sasl_type["drift"], false);
    assert_eq!(status["certificate"]["key_matches"], true);
    assert_eq!(status["services"].as_array().unwrap().len(), 2);
}

#[test]
fn remove_restores_folded_original() {
    if !tools_present() {
        return;
    }
    let sandbox = Sandbox::new();
    let mut main = fs::read_to_string(sandbox.main_cf()).unwrap();
    main.push_str(
        "smtpd_sender_restrictions =\n    permit_mynetworks,\n    reject_non_fqdn_sender\n",
    );
    fs::write(sandbox.main_cf(), &main).unwrap();
    sandbox.preseed(&[("client_checks", "select", "standard")]);
    apply_ok(&sandbox);
    assert!(sandbox
        .parameter("smtpd_sender_restrictions")
        .unwrap()
        .contains("reject_unknown_sender_domain"));
    sandbox.run_ok(&["remove"]);
    assert_eq!(fs::read_to_string(sandbox.main_cf()).unwrap(), main);
}

#[test]
fn remove_after_unrelated_edit_keeps_it() {
    if !tools_present() {
        return;
    }
    let sandbox = Sandbox::new();
    apply_ok(&sandbox);
    sandbox.set_parameters(&[("message_size_limit", "999")]);
    sandbox.run_ok(&["remove"]);
    assert_eq!(
        sandbox.parameter("message_size_limit").as_deref(),
        Some("999")
    );
    assert_eq!(sandbox.parameter("smtpd_sasl_type"), None);
    assert_eq!(sandbox.parameter("mua_client_restrictions"), None);
    let entries = sandbox.postconf(&["-M"]);
    assert!(!entries.contains("submission"), "{entries}");
}

#[test]
fn admin_smtps_entry_reused_for_port_465() {
    if !tools_present() {
        return;
    }
    let sandbox = Sandbox::new();
    sandbox.postconf(&[
        "-M",
        "smtps/inet=smtps inet n - y - - smtpd -o smtpd_tls_wrappermode=yes",
    ]);
    apply_ok(&sandbox);
    let entries = sandbox.postconf(&["-M"]);
    assert!(!entries.contains("submissions "), "{entries}");
    assert_eq!(
        entries.lines().filter(|l| l.starts_with("smtps ")).count(),
        1,
        "{entries}"
    );
    let options = sandbox.postconf(&["-P"]);
    assert!(
        options.contains("smtps/inet/smtpd_sasl_auth_enable = yes"),
        "{options}"
    );
    let second = apply_ok(&sandbox);
    assert!(second.contains("up to date"), "{second}");
}

#[test]
fn stricter_outbound_tls_kept() {
    if !tools_present() {
        return;
    }
    let sandbox = Sandbox::new();
    sandbox.set_parameters(&[("smtp_tls_security_level", "encrypt")]);
    apply_ok(&sandbox);
    assert_eq!(
        sandbox.parameter("smtp_tls_security_level").as_deref(),
        Some("encrypt")
    );
    sandbox.run_ok(&["remove"]);
    assert_eq!(
        sandbox.parameter("smtp_tls_security_level").as_deref(),
        Some("encrypt")
    );
}

#[test]
fn admin_relay_policy_kept() {
    if !tools_present() {
        return;
    }
    let sandbox = Sandbox::new();
    let policy = "permit_mynetworks, permit_sasl_authenticated, \
                  check_policy_service unix:private/policy, reject_unauth_destination";
    sandbox.set_parameters(&[("smtpd_relay_restrictions", policy)]);
    apply_ok(&sandbox);
    assert_eq!(
        sandbox.parameter("smtpd_relay_restrictions").as_deref(),
        Some(policy)
    );
}

#[test]
fn auth_on_port_25_false_turns_it_off() {
    if !tools_present() {
        return;
    }
    let sandbox = Sandbox::new();
    sandbox.set_parameters(&[("smtpd_sasl_auth_enable", "yes")]);
    sandbox.preseed(&[("auth_on_port_25", "boolean", "false")]);
    apply_ok(&sandbox);
    assert_eq!(
        sandbox.parameter("smtpd_sasl_auth_enable").as_deref(),
        Some("no")
    );
    sandbox.run_ok(&["remove"]);
    assert_eq!(
        sandbox.parameter("smtpd_sasl_auth_enable").as_deref(),
        Some("yes")
    );
}

#[test]
fn automatic_certificate_change_survives_remove() {
    if !tools_present() {
        return;
    }
    let sandbox = Sandbox::new();
    apply_ok(&sandbox);
    sandbox.make_certificate("new", "new-key");
    let cert = sandbox.path("tls/new.pem").display().to_string();
    let key = sandbox.path("tls/new-key.pem").display().to_string();
    sandbox.set_parameters(&[("smtpd_tls_cert_file", &cert), ("smtpd_tls_key_file", &key)]);
    apply_ok(&sandbox);
    sandbox.run_ok(&["remove"]);
    assert_eq!(
        sandbox.parameter("smtpd_tls_cert_file").as_deref(),
        Some(cert.as_str())
    );
    assert_eq!(
        sandbox.parameter("smtpd_tls_key_file").as_deref(),
        Some(key.as_str())
    );
}

#[test]
fn unused_mua_parameters_removed() {
    if !tools_present() {
        return;
    }
    let sandbox = Sandbox::new();
    apply_ok(&sandbox);
    // Without the entries that refer to them, postconf -n no longer lists mua_*.
    sandbox.postconf(&["-MX", "submission/inet", "submissions/inet"]);
    sandbox.set_parameters(&[("message_size_limit", "20000000")]);
    sandbox.run_ok(&["remove"]);
    let main = fs::read_to_string(sandbox.main_cf()).unwrap();
    assert!(!main.contains("mua_"), "{main}");
}

#[test]
fn snippet_outside_includes_rejected() {
    if !tools_present() {
        return;
    }
    let sandbox = Sandbox::new();
    let config = sandbox.path("dovecot/dovecot.conf");
    let text = fs::read_to_string(&config)
        .unwrap()
        .replace("!include_try conf.d/*.conf\n", "");
    fs::write(&config, text).unwrap();
    let before = sandbox.fingerprints();
    let output = sandbox.run(&["apply"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("Dovecot does not read"), "{stderr}");
    assert!(!sandbox.snippet().exists());
    assert_eq!(sandbox.fingerprints(), before);
}

/// Runs `apply` with a postconf wrapper first in PATH that kills the binary right after
/// its first `postconf -e`, as a power cut or an OOM kill would.
fn apply_killed_after_first_write(sandbox: &Sandbox) -> std::process::Output {
    use std::os::unix::fs::PermissionsExt;

    let bin = sandbox.path("kill-bin");
    fs::create_dir_all(&bin).unwrap();
    let wrapper = bin.join("postconf");
    fs::write(
        &wrapper,
        "#!/bin/sh\n/usr/sbin/postconf \"$@\"\nstatus=$?\n\
         case \" $* \" in *\" -e \"*) kill -9 $PPID ;; esac\nexit $status\n",
    )
    .unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let templates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
    sandbox
        .command(&["apply"], &templates)
        .env("PATH", path)
        .output()
        .unwrap()
}

#[test]
fn interrupted_first_apply_completes_and_removes_exactly() {
    if !tools_present() {
        return;
    }
    let sandbox = Sandbox::new();
    let reference = Sandbox::new();
    let main_before = fs::read(sandbox.main_cf()).unwrap();
    let master_before = fs::read(sandbox.master_cf()).unwrap();
    apply_killed_after_first_write(&sandbox);
    let interrupted = fs::read_to_string(sandbox.state_file()).unwrap();
    assert!(interrupted.contains("\"pending\": true"), "{interrupted}");
    assert_eq!(
        fs::read(sandbox.master_cf()).unwrap(),
        master_before,
        "master.cf written early"
    );

    apply_ok(&sandbox);
    apply_ok(&reference);
    // The sandboxes were set up with postconf calls whose order of appended parameters
    // varies, so the settings are compared, not the bytes.
    for query in ["-n", "-M", "-P"] {
        let resumed = sandbox.postconf(&[query]);
        let uninterrupted = reference.postconf(&[query]);
        // The sandboxes differ only in their temporary directory names.
        let resumed = resumed.replace(&sandbox.dir.path().display().to_string(), "SANDBOX");
        let uninterrupted =
            uninterrupted.replace(&reference.dir.path().display().to_string(), "SANDBOX");
        assert_eq!(
            resumed, uninterrupted,
            "postconf {query} differs from an uninterrupted run"
        );
    }
    let stderr = apply_ok(&sandbox);
    assert!(stderr.contains("up to date"), "{stderr}");

    sandbox.run_ok(&["remove"]);
    assert_eq!(fs::read(sandbox.main_cf()).unwrap(), main_before);
    assert_eq!(fs::read(sandbox.master_cf()).unwrap(), master_before);
}
