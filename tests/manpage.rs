//! The man page doc/postfix-submission.8 is generated from the command line definition;
//! this test fails when the two drift apart. `UPDATE_GOLDEN=1 cargo test --test manpage`
//! regenerates it.

use std::fs;
use std::path::Path;

use clap::CommandFactory;
use postfix_submission::cli::Cli;

/// Escapes text for roff: backslashes, and a leading dot or quote.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    match escaped.chars().next() {
        Some('.') | Some('\'') => format!("\\&{escaped}"),
        _ => escaped,
    }
}

/// Renders the page: clap_mangen's sections for the program, then one subsection per
/// subcommand with its own options, which clap_mangen leaves out.
fn render() -> String {
    let command = Cli::command().name("postfix-submission");
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone())
        .section("8")
        .render(&mut page)
        .unwrap();
    let mut text = String::from_utf8(page).unwrap();
    // clap_mangen refers to one page per subcommand; this page documents them all.
    for sub in command.get_subcommands() {
        let reference = format!("postfix\\-submission\\-{}(8)", sub.get_name());
        text = text.replace(&reference, sub.get_name());
    }
    text.push_str(".SH \"SUBCOMMAND OPTIONS\"\n");
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        text.push_str(&format!(".SS {}\n", sub.get_name()));
        if let Some(about) = sub.get_long_about().or(sub.get_about()) {
            text.push_str(&format!("{}\n", roff(&about.to_string())));
        }
        for arg in sub.get_arguments().filter(|a| a.get_id() != "help") {
            let Some(long) = arg.get_long() else { continue };
            text.push_str(&format!(".TP\n\\fB\\-\\-{}\\fR", roff(long)));
            let values: Vec<String> = arg
                .get_possible_values()
                .iter()
                .map(|v| v.get_name().to_string())
                .collect();
            if !values.is_empty() {
                text.push_str(&format!(" \\fI{}\\fR", values.join("|")));
            }
            text.push('\n');
            if let Some(help) = arg.get_help() {
                text.push_str(&format!("{}\n", roff(&help.to_string())));
            }
        }
    }
    text.push_str(
        ".SH FILES\n.TP\n/var/lib/postfix\\-submission/state.json\n\
         The record of every setting the package wrote, with its earlier value.\n\
         .TP\n/usr/share/postfix\\-submission/templates/\n\
         The templates the settings are rendered from.\n\
         .TP\n/etc/dovecot/conf.d/90\\-postfix\\-submission.conf\n\
         The Dovecot listener for Postfix's SASL socket, when the package added it.\n\
         .SH \"SEE ALSO\"\n\\fBpostconf\\fR(1), \\fBpostconf\\fR(5), \\fBmaster\\fR(5), \
         \\fBdpkg\\-reconfigure\\fR(8), \\fBdebconf\\-set\\-selections\\fR(1)\n",
    );
    text
}

#[test]
fn man_page_matches_command_line() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("doc/postfix-submission.8");
    let page = render();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        fs::write(&path, &page).unwrap();
    }
    let committed = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run UPDATE_GOLDEN=1 cargo test --test manpage",
            path.display()
        )
    });
    let stale = format!(
        "{} is stale; run UPDATE_GOLDEN=1 cargo test --test manpage",
        path.display()
    );
    assert!(committed == page, "{stale}");
}
