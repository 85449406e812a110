//! postfix-submission configures authenticated mail submission on a Debian server that
//! runs Postfix with Dovecot: SASL through Dovecot's auth socket, TLS before any password,
//! ports 587 and 465, no relaying for anybody else, and sender login maps.
//!
//! The binary reads the package's debconf answers, renders the settings from templates,
//! compares them with what Postfix has now and with the record of its own earlier runs,
//! and writes only the differences with postconf.

pub mod answers;
pub mod apply;
pub mod cli;
pub mod commands;
pub mod debconf;
pub mod dovecot;
pub mod logger;
pub mod plan;
pub mod postfix;
pub mod preflight;
pub mod render;
pub mod state;
pub mod status;
