//! Client (confmodule) side of the debconf protocol described in debconf-devel(7).
//!
//! [`run_under_frontend`] starts the debconf frontend when the program was run without one,
//! [`Client::from_env`] connects to the frontend that started the program, and
//! [`report_output`] returns where the program's own report goes without mixing it into the
//! protocol stream.

use std::env;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use log::debug;

/// Path of the debconf frontend, which runs a confmodule and replies to its commands.
pub const FRONTEND_PATH: &str = "/usr/share/debconf/frontend";

/// Package name that [`run_under_frontend`] passes to the frontend in `DEBCONF_PACKAGE`.
pub const PACKAGE_NAME: &str = "postfix-submission";

/// Environment variable that carries a duplicate of the original stdout across the re-exec.
pub const OUTPUT_FD_VAR: &str = "POSTFIX_SUBMISSION_OUTPUT_FD";

/// Protocol version that [`Client::version`] announces.
pub const PROTOCOL_VERSION: &str = "2.0";

/// Descriptor that carries commands once a confmodule has set `DEBCONF_REDIR`.
const REDIRECTED_FD: RawFd = 3;
const STDIN_FD: RawFd = 0;
const STDOUT_FD: RawFd = 1;
const STDERR_FD: RawFd = 2;

mod channel;
mod protocol;

use channel::{
    claim_channel, locate_channel, take_redirected_channel, take_stdin_channel,
    take_stdout_channel, ChannelLocation,
};
pub use channel::{report_output, run_under_frontend};
use protocol::{escape, parse_reply, unescape, Reply, Request};

/// Set once [`Client::from_env`] has taken this process's debconf channel.
static CHANNEL_CLAIMED: AtomicBool = AtomicBool::new(false);

/// Failure of a debconf command, of the connection to debconf, or of starting the frontend.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// debconf rejected a command. `arguments` lists the command's single-word arguments
    /// (question names, flags, fields), never a value sent with SET, SUBST or TITLE.
    #[error(
        "debconf {} failed with code {code} ({}): {message}",
        describe_command(.command, .arguments),
        code_meaning(*.code)
    )]
    Command {
        command: &'static str,
        arguments: String,
        code: u16,
        message: String,
    },

    /// Reading from or writing to a descriptor failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    /// debconf closed the reply stream before it replied.
    #[error("debconf closed the connection before replying to {command}")]
    ConnectionClosed { command: &'static str },

    /// debconf sent a reply that this client cannot interpret.
    #[error("invalid debconf reply to {command}: {problem}")]
    InvalidReply {
        command: &'static str,
        problem: String,
    },

    /// An argument cannot be sent to debconf unchanged, so nothing was sent.
    #[error("invalid {argument} for debconf {command}: {problem}")]
    InvalidArgument {
        command: &'static str,
        argument: &'static str,
        problem: &'static str,
    },

    /// No frontend is running, so there is no channel to connect to.
    #[error(
        "no debconf frontend is running because DEBIAN_HAS_FRONTEND is not set; \
         call run_under_frontend() first"
    )]
    NoFrontend,

    /// A second [`Client::from_env`] call in the same process.
    #[error("the debconf channel of this process was already taken by Client::from_env")]
    ChannelInUse,

    /// The frontend program is missing.
    #[error(
        "debconf is not installed: {} does not exist; install the debconf package",
        .path.display()
    )]
    NotInstalled { path: PathBuf },

    /// exec of the frontend failed.
    #[error("failed to execute the debconf frontend {}: {source}", .path.display())]
    Exec {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn describe_command(command: &str, arguments: &str) -> String {
    if arguments.is_empty() {
        command.to_owned()
    } else {
        format!("{command} {arguments}")
    }
}

/// Names the class of a reply code: 0 and 1 success, 10-19 invalid parameters, 20-29 syntax
/// error, 30-99 command-specific, 100 and up internal error. debconf 1.5.82 sends 0, 1, 10,
/// 20, 30 and 100 (Debconf/ConfModule.pm).
fn code_meaning(code: u16) -> &'static str {
    match code {
        0 | 1 => "success",
        2..=9 => "reserved code",
        10..=19 => "invalid parameters",
        20..=29 => "syntax error",
        30..=99 => "command-specific failure",
        _ => "internal error in debconf",
    }
}

fn io_error(context: impl Into<String>, source: impl Into<io::Error>) -> Error {
    Error::Io {
        context: context.into(),
        source: source.into(),
    }
}

/// Priority of a question passed to INPUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Low,
    Medium,
    High,
    Critical,
}

impl Priority {
    /// Returns the protocol word for this priority.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Medium => "medium",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }
}

/// Result of GO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoOutcome {
    /// The user answered the questions (code 0).
    Continue,
    /// The user asked to go back to the previous step (code 30, only after CAPB backup).
    Backup,
}

/// Connection to a debconf frontend: commands go to `writer`, replies come from `reader`.
#[derive(Debug)]
pub struct Client<R = BufReader<File>, W = File> {
    reader: R,
    writer: W,
    escape: bool,
}

impl Client {
    /// Connects to the frontend that started this process, as the confmodule libraries do.
    ///
    /// With `DEBCONF_REDIR` set, commands go to fd 3. Otherwise the frontend started this
    /// process directly and commands go to stdout, so the channel moves to a new descriptor,
    /// fd 1 is pointed at stderr and `DEBCONF_REDIR=1` is exported for child processes.
    /// Replies are read from a duplicate of stdin, and fd 0 is then reopened on /dev/null so
    /// that child processes cannot consume replies. Every channel descriptor is close-on-exec.
    /// Call this before starting threads because it changes the environment, and only once:
    /// a second call returns [`Error::ChannelInUse`].
    pub fn from_env() -> Result<Client, Error> {
        let location = locate_channel(
            env::var_os("DEBIAN_HAS_FRONTEND").as_deref(),
            env::var_os("DEBCONF_REDIR").as_deref(),
        )?;
        claim_channel(&CHANNEL_CLAIMED)?;
        let writer = match location {
            ChannelLocation::Redirected => take_redirected_channel()?,
            ChannelLocation::Stdout => take_stdout_channel()?,
        };
        let reader = take_stdin_channel()?;
        debug!("connected to debconf through {location:?}");
        Ok(Client::new(
            BufReader::new(File::from(reader)),
            File::from(writer),
        ))
    }
}

impl<R: BufRead, W: Write> Client<R, W> {
    /// Creates a client that reads replies from `reader` and writes commands to `writer`.
    pub fn new(reader: R, writer: W) -> Self {
        Client {
            reader,
            writer,
            escape: false,
        }
    }

    /// Returns whether CAPB negotiated the `escape` capability.
    pub fn escape_enabled(&self) -> bool {
        self.escape
    }

    /// Sends VERSION with [`PROTOCOL_VERSION`] and returns the version debconf speaks.
    pub fn version(&mut self) -> Result<String, Error> {
        self.expect_success(&Request::new("VERSION", &[("version", PROTOCOL_VERSION)]))
    }

    /// Sends CAPB with `capabilities` and returns the capabilities debconf supports. Escaping
    /// is used afterwards when both sides list `escape`.
    pub fn capb(&mut self, capabilities: &[&str]) -> Result<Vec<String>, Error> {
        let words: Vec<(&'static str, &str)> = capabilities
            .iter()
            .map(|capability| ("capability", *capability))
            .collect();
        let text = self.expect_success(&Request::new("CAPB", &words))?;
        let supported: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
        let requested = capabilities.contains(&"escape");
        self.escape = requested && supported.iter().any(|capability| capability == "escape");
        Ok(supported)
    }

    /// Returns the value of `question`. Without `escape`, debconf 1.5.82 truncates a
    /// multi-line value to its first line.
    pub fn get(&mut self, question: &str) -> Result<String, Error> {
        self.expect_success(&Request::new("GET", &[("question name", question)]))
    }

    /// Sets the value of `question`. A newline needs `escape`. Other control characters are
    /// rejected in both modes, because debconf 1.5.82 splits the line at tabs and carriage
    /// returns and the protocol has no escape for them.
    ///
    /// NOTE: debconf splits the command at whitespace and joins the words with one space, so
    /// leading, trailing and repeated spaces in `value` are lost.
    pub fn set(&mut self, question: &str, value: &str) -> Result<(), Error> {
        let words = [("question name", question)];
        let request = Request::new("SET", &words).with_text("value", value);
        self.expect_success(&request).map(drop)
    }

    /// Resets `question` to the default of its template and clears its seen flag.
    pub fn reset(&mut self, question: &str) -> Result<(), Error> {
        self.expect_success(&Request::new("RESET", &[("question name", question)]))
            .map(drop)
    }

    /// Queues `question` for the next GO and returns whether it will be shown: code 30
    /// means debconf skips it (priority too low, already seen, or a noninteractive frontend).
    pub fn input(&mut self, priority: Priority, question: &str) -> Result<bool, Error> {
        let words = [("priority", priority.as_str()), ("question name", question)];
        let request = Request::new("INPUT", &words);
        let reply = self.request(&request)?;
        match reply.code {
            0 => Ok(true),
            30 => Ok(false),
            _ => Err(self.command_error(&request, reply)),
        }
    }

    /// Shows the questions queued by INPUT.
    pub fn go(&mut self) -> Result<GoOutcome, Error> {
        let request = Request::new("GO", &[]);
        let reply = self.request(&request)?;
        match reply.code {
            0 => Ok(GoOutcome::Continue),
            30 => Ok(GoOutcome::Backup),
            _ => Err(self.command_error(&request, reply)),
        }
    }

    /// Drops the questions queued by INPUT without showing them.
    pub fn clear(&mut self) -> Result<(), Error> {
        self.expect_success(&Request::new("CLEAR", &[])).map(drop)
    }

    /// Returns the value of `flag` (such as `seen`) on `question`.
    pub fn fget(&mut self, question: &str, flag: &str) -> Result<bool, Error> {
        let words = [("question name", question), ("flag", flag)];
        let text = self.expect_success(&Request::new("FGET", &words))?;
        match text.as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(Error::InvalidReply {
                command: "FGET",
                problem: format!("expected true or false, got {text:?}"),
            }),
        }
    }

    /// Sets `flag` (such as `seen`) on `question`.
    pub fn fset(&mut self, question: &str, flag: &str, value: bool) -> Result<(), Error> {
        let value = if value { "true" } else { "false" };
        let words = [
            ("question name", question),
            ("flag", flag),
            ("flag value", value),
        ];
        self.expect_success(&Request::new("FSET", &words)).map(drop)
    }

    /// Returns `field` (such as `description` or `extended_description`) of the template
    /// of `question`.
    pub fn metaget(&mut self, question: &str, field: &str) -> Result<String, Error> {
        let words = [("question name", question), ("field", field)];
        self.expect_success(&Request::new("METAGET", &words))
    }

    /// Sets the substitution variable `key`, written `${key}` in the template of `question`.
    /// `value` follows the same rules as in [`Client::set`].
    pub fn subst(&mut self, question: &str, key: &str, value: &str) -> Result<(), Error> {
        let words = [("question name", question), ("substitution key", key)];
        let request = Request::new("SUBST", &words).with_text("substitution value", value);
        self.expect_success(&request).map(drop)
    }

    /// Creates `question` from `template`, or adds this package as an owner if it exists.
    pub fn register(&mut self, template: &str, question: &str) -> Result<(), Error> {
        let words = [("template name", template), ("question name", question)];
        self.expect_success(&Request::new("REGISTER", &words))
            .map(drop)
    }

    /// Removes this package as an owner of `question`. debconf deletes a question that has
    /// no owner left.
    pub fn unregister(&mut self, question: &str) -> Result<(), Error> {
        let words = [("question name", question)];
        self.expect_success(&Request::new("UNREGISTER", &words))
            .map(drop)
    }

    /// Removes this package as an owner of all its questions, as a postrm does on purge.
    pub fn purge(&mut self) -> Result<(), Error> {
        self.expect_success(&Request::new("PURGE", &[])).map(drop)
    }

    /// Returns whether `question` exists.
    pub fn exist(&mut self, question: &str) -> Result<bool, Error> {
        let text = self.expect_success(&Request::new("EXIST", &[("question name", question)]))?;
        Ok(text == "true")
    }

    /// Sets the title of the following screens to `title`.
    pub fn title(&mut self, title: &str) -> Result<(), Error> {
        let request = Request::new("TITLE", &[]).with_text("title", title);
        self.expect_success(&request).map(drop)
    }

    /// Sets the title of the following screens to the description of `question`.
    pub fn settitle(&mut self, question: &str) -> Result<(), Error> {
        let words = [("question name", question)];
        self.expect_success(&Request::new("SETTITLE", &words))
            .map(drop)
    }

    /// Loads the templates file at `path`, owned by `owner` or else by the package that
    /// debconf is configuring.
    pub fn x_loadtemplatefile(&mut self, path: &Path, owner: Option<&str>) -> Result<(), Error> {
        let Some(path) = path.to_str() else {
            return Err(Error::InvalidArgument {
                command: "X_LOADTEMPLATEFILE",
                argument: "templates file path",
                problem: "it is not valid UTF-8",
            });
        };
        let mut words = vec![("templates file path", path)];
        words.extend(owner.map(|owner| ("owner", owner)));
        let request = Request::new("X_LOADTEMPLATEFILE", &words);
        self.expect_success(&request).map(drop)
    }

    /// Sends STOP, which ends the conversation. debconf sends no reply to it.
    pub fn stop(mut self) -> Result<(), Error> {
        debug!("sending debconf command STOP");
        self.send("STOP", "STOP\n")
    }

    /// Sends `request` and returns the text of a success reply, unescaped for code 1.
    fn expect_success(&mut self, request: &Request) -> Result<String, Error> {
        let reply = self.request(request)?;
        match reply.code {
            0 => Ok(reply.text),
            1 => Ok(unescape(&reply.text)),
            _ => Err(self.command_error(request, reply)),
        }
    }

    fn request(&mut self, request: &Request) -> Result<Reply, Error> {
        let line = self.format_line(request)?;
        debug!(
            "sending debconf command {}",
            describe_command(request.command, &request.arguments())
        );
        self.send(request.command, &line)?;
        let reply = self.receive(request.command)?;
        debug!("debconf replied {} to {}", reply.code, request.command);
        Ok(reply)
    }

    /// Builds the protocol line for `request`, escaped when `escape` was negotiated.
    fn format_line(&self, request: &Request) -> Result<String, Error> {
        let mut line = request.command.to_owned();
        for &(name, word) in request.words {
            check_word(request, name, word)?;
            line.push(' ');
            line.push_str(&self.encode(word));
        }
        if let Some((name, text)) = request.text {
            self.check_text(request, name, text)?;
            line.push(' ');
            line.push_str(&self.encode(text));
        }
        line.push('\n');
        Ok(line)
    }

    fn encode(&self, argument: &str) -> String {
        if self.escape {
            escape(argument)
        } else {
            argument.to_owned()
        }
    }

    fn check_text(&self, request: &Request, name: &'static str, text: &str) -> Result<(), Error> {
        if text.contains('\n') && !self.escape {
            return Err(request.invalid(
                name,
                "it contains a newline, which debconf accepts only after CAPB escape",
            ));
        }
        if text.chars().any(|c| c.is_control() && c != '\n') {
            return Err(request.invalid(
                name,
                "it contains a control character such as a tab or carriage return, \
                 which debconf does not store unchanged",
            ));
        }
        Ok(())
    }

    fn send(&mut self, command: &'static str, line: &str) -> Result<(), Error> {
        self.writer
            .write_all(line.as_bytes())
            .and_then(|()| self.writer.flush())
            .map_err(|source| {
                io_error(
                    format!("failed to send the debconf command {command}"),
                    source,
                )
            })
    }

    fn receive(&mut self, command: &'static str) -> Result<Reply, Error> {
        let mut line = String::new();
        let count = self.reader.read_line(&mut line).map_err(|source| {
            io_error(
                format!("failed to read the debconf reply to {command}"),
                source,
            )
        })?;
        if count == 0 {
            return Err(Error::ConnectionClosed { command });
        }
        parse_reply(&line).ok_or_else(|| Error::InvalidReply {
            command,
            problem: "the reply does not start with a numeric code".to_owned(),
        })
    }

    /// Builds the error for a failure reply. debconf echoes the whole command line in some
    /// messages (such as for an unsupported command), so a message that contains the
    /// free-form argument is withheld: that argument may be a password.
    fn command_error(&self, request: &Request, reply: Reply) -> Error {
        let mut message = reply.text;
        if let Some((_, text)) = request.text {
            let echoed = message.contains(text) || message.contains(&escape(text));
            if !text.is_empty() && echoed {
                message = "(message withheld because it contains the value sent)".to_owned();
            }
        }
        Error::Command {
            command: request.command,
            arguments: request.arguments(),
            code: reply.code,
            message,
        }
    }
}

/// Rejects a single-word argument that debconf would split, merge or misread.
fn check_word(request: &Request, name: &'static str, word: &str) -> Result<(), Error> {
    if word.is_empty() {
        return Err(request.invalid(name, "it is empty"));
    }
    if word.chars().any(char::is_whitespace) {
        return Err(request.invalid(
            name,
            "it contains whitespace, which separates arguments in the debconf protocol",
        ));
    }
    if word.chars().any(char::is_control) {
        return Err(request.invalid(name, "it contains a control character"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::channel::*;
    use super::protocol::*;
    use super::*;

    use std::ffi::OsStr;
    use std::os::fd::AsRawFd;

    use nix::fcntl::{fcntl, FcntlArg, FdFlag};

    use std::cell::RefCell;
    use std::io::{Cursor, Read};
    use std::os::unix::fs::PermissionsExt;
    use std::rc::Rc;

    /// Returns a client whose replies are `replies` and whose commands collect in a Vec.
    fn scripted(replies: &str) -> Client<Cursor<Vec<u8>>, Vec<u8>> {
        Client::new(Cursor::new(replies.as_bytes().to_vec()), Vec::new())
    }

    fn sent(client: &Client<Cursor<Vec<u8>>, Vec<u8>>) -> String {
        String::from_utf8(client.writer.clone()).unwrap()
    }

    fn escaped_client(replies: &str) -> Client<Cursor<Vec<u8>>, Vec<u8>> {
        let mut client = scripted(replies);
        client.escape = true;
        client
    }

    /// Writer whose bytes stay readable after the client that owns it is consumed.
    #[derive(Clone, Default)]
    struct SharedBuffer(Rc<RefCell<Vec<u8>>>);

    impl Write for SharedBuffer {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.borrow_mut().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct FailingWriter;

    impl Write for FailingWriter {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::BrokenPipe, "pipe closed"))
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct FailingReader;

    impl Read for FailingReader {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"))
        }
    }

    #[test]
    fn escape_replaces_backslash_and_newline() {
        let cases = [
            ("plain", "plain"),
            ("a\nb", "a\\nb"),
            ("back\\slash", "back\\\\slash"),
            ("\\n literal", "\\\\n literal"),
            ("end\n", "end\\n"),
            ("", ""),
        ];
        for (text, expected) in cases {
            assert_eq!(escape(text), expected, "escape({text:?})");
        }
    }

    #[test]
    fn unescape_reverses_escape() {
        let cases = [
            "plain",
            "a\nb",
            "back\\slash",
            "\\n literal",
            "\n\n",
            "x\\\ny",
            "",
        ];
        for text in cases {
            assert_eq!(unescape(&escape(text)), text, "round trip of {text:?}");
        }
    }

    #[test]
    fn unescape_other_and_trailing_backslash() {
        assert_eq!(unescape("a\\tb"), "atb");
        assert_eq!(unescape("a\\ b"), "a b");
        assert_eq!(unescape("end\\"), "end\\");
    }

    #[test]
    fn parse_reply_splits_code_and_text() {
        let cases = [
            ("0 value\n", 0, "value"),
            ("0\n", 0, ""),
            ("0 \n", 0, ""),
            ("0  two spaces", 0, " two spaces"),
            ("1 a\\nb\n", 1, "a\\nb"),
            ("30\tquestion skipped\n", 30, "question skipped"),
            ("10 foo/bar doesn't exist\n", 10, "foo/bar doesn't exist"),
            ("100 internal", 100, "internal"),
        ];
        for (line, code, text) in cases {
            let reply = parse_reply(line).unwrap_or_else(|| panic!("no reply from {line:?}"));
            assert_eq!(reply.code, code, "code of {line:?}");
            assert_eq!(reply.text, text, "text of {line:?}");
        }
    }

    #[test]
    fn parse_reply_rejects_non_numeric() {
        for line in [
            "",
            "\n",
            "ok 0",
            " 0 leading space",
            "0x1 hex",
            "99999999 big",
            "-1 x",
        ] {
            assert_eq!(parse_reply(line), None, "{line:?}");
        }
    }

    #[test]
    fn commands_format_as_protocol_lines() {
        let mut client = scripted("0\n".repeat(12).as_str());
        client.set("pkg/q", "a value").unwrap();
        client.reset("pkg/q").unwrap();
        client.fset("pkg/q", "seen", true).unwrap();
        client.fset("pkg/q", "seen", false).unwrap();
        client.subst("pkg/q", "KEY", "some text").unwrap();
        client.register("pkg/template", "pkg/q2").unwrap();
        client.unregister("pkg/q2").unwrap();
        client.purge().unwrap();
        client.clear().unwrap();
        client.title("Mail submission").unwrap();
        client.settitle("pkg/title").unwrap();
        client
            .x_loadtemplatefile(Path::new("/tmp/x.templates"), Some("pkg"))
            .unwrap();
        let expected = "SET pkg/q a value\nRESET pkg/q\nFSET pkg/q seen true\n\
                        FSET pkg/q seen false\nSUBST pkg/q KEY some text\n\
                        REGISTER pkg/template pkg/q2\nUNREGISTER pkg/q2\nPURGE\nCLEAR\n\
                        TITLE Mail submission\nSETTITLE pkg/title\n\
                        X_LOADTEMPLATEFILE /tmp/x.templates pkg\n";
        assert_eq!(sent(&client), expected);
    }

    #[test]
    fn get_returns_reply_text() {
        let mut client = scripted("0 some value\n");
        assert_eq!(client.get("pkg/q").unwrap(), "some value");
        assert_eq!(sent(&client), "GET pkg/q\n");
    }

    #[test]
    fn get_unescapes_code_one() {
        let mut client = escaped_client("1 line one\\nline two \\\\ end\n");
        assert_eq!(client.get("pkg/q").unwrap(), "line one\nline two \\ end");
    }

    #[test]
    fn metaget_and_exist_return_text() {
        let mut client = scripted("0 A description\n0 true\n0 false\n");
        assert_eq!(
            client.metaget("pkg/q", "description").unwrap(),
            "A description"
        );
        assert!(client.exist("pkg/q").unwrap());
        assert!(!client.exist("pkg/none").unwrap());
        assert_eq!(
            sent(&client),
            "METAGET pkg/q description\nEXIST pkg/q\nEXIST pkg/none\n"
        );
    }

    #[test]
    fn version_returns_server_version() {
        let mut client = scripted("0 2.0\n");
        assert_eq!(client.version().unwrap(), "2.0");
        assert_eq!(sent(&client), "VERSION 2.0\n");
    }

    #[test]
    fn version_too_low_is_error() {
        let mut client = scripted("30 Version too low (2.0)\n");
        let error = client.version().unwrap_err();
        assert!(
            matches!(
                error,
                Error::Command {
                    code: 30,
                    command: "VERSION",
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn capb_enables_escape_when_both_support_it() {
        let mut client = scripted("0 multiselect escape \n");
        let supported = client.capb(&["backup", "escape"]).unwrap();
        assert_eq!(supported, ["multiselect", "escape"]);
        assert!(client.escape_enabled());
        assert_eq!(sent(&client), "CAPB backup escape\n");
    }

    #[test]
    fn capb_without_server_escape() {
        let mut client = scripted("0 multiselect\n");
        client.capb(&["escape"]).unwrap();
        assert!(!client.escape_enabled());
    }

    #[test]
    fn capb_without_client_escape() {
        let mut client = escaped_client("0 multiselect escape\n");
        client.capb(&["backup"]).unwrap();
        assert!(!client.escape_enabled());
    }

    #[test]
    fn set_escapes_value_after_capb() {
        let mut client = escaped_client("0 value set\n");
        client.set("pkg/q", "one\ntwo\\three").unwrap();
        assert_eq!(sent(&client), "SET pkg/q one\\ntwo\\\\three\n");
    }

    #[test]
    fn set_rejects_newline_without_escape() {
        let mut client = scripted("0 value set\n");
        let error = client.set("pkg/q", "one\ntwo").unwrap_err();
        let Error::InvalidArgument {
            command,
            argument,
            problem,
        } = &error
        else {
            panic!("expected InvalidArgument, got {error:?}");
        };
        assert_eq!(*command, "SET");
        assert_eq!(*argument, "value");
        assert!(problem.contains("CAPB escape"), "{problem}");
        assert!(!error.to_string().contains("two"), "{error}");
        assert_eq!(sent(&client), "", "nothing may be sent");
    }

    #[test]
    fn set_rejects_other_control_characters() {
        for value in ["tab\there", "carriage\rreturn", "bell\u{7}", "del\u{7f}"] {
            for escape_enabled in [false, true] {
                let mut client = scripted("0 value set\n");
                client.escape = escape_enabled;
                let error = client.set("pkg/q", value).unwrap_err();
                assert!(
                    matches!(
                        error,
                        Error::InvalidArgument {
                            argument: "value",
                            ..
                        }
                    ),
                    "{value:?} with escape={escape_enabled}: {error:?}"
                );
                assert_eq!(sent(&client), "");
            }
        }
    }

    #[test]
    fn set_accepts_empty_value() {
        let mut client = scripted("0 value set\n");
        client.set("pkg/q", "").unwrap();
        assert_eq!(sent(&client), "SET pkg/q \n");
    }

    #[test]
    fn words_reject_whitespace_and_empty() {
        let cases = [
            ("", "it is empty"),
            ("pkg/a b", "whitespace"),
            ("pkg/a\u{1}", "control"),
        ];
        for (question, problem_part) in cases {
            let mut client = scripted("0\n");
            let error = client.get(question).unwrap_err();
            let Error::InvalidArgument {
                argument, problem, ..
            } = error
            else {
                panic!("expected InvalidArgument for {question:?}, got {error:?}");
            };
            assert_eq!(argument, "question name");
            assert!(problem.contains(problem_part), "{question:?}: {problem}");
        }
    }

    #[test]
    fn loadtemplatefile_rejects_non_utf8_path() {
        use std::os::unix::ffi::OsStrExt;
        let mut client = scripted("0\n");
        let path = Path::new(OsStr::from_bytes(b"/tmp/\xff.templates"));
        let error = client.x_loadtemplatefile(path, None).unwrap_err();
        assert!(
            matches!(error, Error::InvalidArgument { problem, .. } if problem.contains("UTF-8"))
        );
        assert_eq!(sent(&client), "");
    }

    #[test]
    fn loadtemplatefile_without_owner() {
        let mut client = scripted("0\n");
        client
            .x_loadtemplatefile(Path::new("/tmp/x.templates"), None)
            .unwrap();
        assert_eq!(sent(&client), "X_LOADTEMPLATEFILE /tmp/x.templates\n");
    }

    #[test]
    fn command_error_carries_details() {
        let mut client = scripted("10 pkg/none doesn't exist\n");
        let error = client.fget("pkg/none", "seen").unwrap_err();
        let Error::Command {
            command,
            arguments,
            code,
            message,
        } = &error
        else {
            panic!("expected Command, got {error:?}");
        };
        assert_eq!(*command, "FGET");
        assert_eq!(arguments, "pkg/none seen");
        assert_eq!(*code, 10);
        assert_eq!(message, "pkg/none doesn't exist");
        assert_eq!(
            error.to_string(),
            "debconf FGET pkg/none seen failed with code 10 (invalid parameters): \
             pkg/none doesn't exist"
        );
    }

    #[test]
    fn set_error_omits_value() {
        let mut client = scripted("10 pkg/none doesn't exist\n");
        let error = client.set("pkg/none", "hunter2").unwrap_err();
        assert!(matches!(&error, Error::Command { arguments, .. } if arguments == "pkg/none"));
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    #[test]
    fn set_error_withholds_echoed_value() {
        let reply = "20 Unsupported command \"set\" (full line was \"SET pkg/q hunter2\")\n";
        let mut client = scripted(reply);
        let error = client.set("pkg/q", "hunter2").unwrap_err();
        let Error::Command { message, .. } = &error else {
            panic!("expected Command, got {error:?}");
        };
        assert!(message.contains("withheld"), "{message}");
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    #[test]
    fn set_error_withholds_escaped_echo() {
        let reply = "20 Bad line \"SET pkg/q a\\nb\"\n";
        let mut client = escaped_client(reply);
        let error = client.set("pkg/q", "a\nb").unwrap_err();
        assert!(matches!(error, Error::Command { message, .. } if message.contains("withheld")));
    }

    #[test]
    fn code_meaning_follows_ranges() {
        let cases = [
            (0, "success"),
            (1, "success"),
            (5, "reserved code"),
            (10, "invalid parameters"),
            (19, "invalid parameters"),
            (20, "syntax error"),
            (29, "syntax error"),
            (30, "command-specific failure"),
            (99, "command-specific failure"),
            (100, "internal error in debconf"),
            (255, "internal error in debconf"),
        ];
        for (code, meaning) in cases {
            assert_eq!(code_meaning(code), meaning, "code {code}");
        }
    }

    #[test]
    fn input_reports_visibility() {
        let mut client = scripted("0 question will be asked\n30 question skipped\n");
        assert!(client.input(Priority::High, "pkg/q").unwrap());
        assert!(!client.input(Priority::Low, "pkg/q").unwrap());
        assert_eq!(sent(&client), "INPUT high pkg/q\nINPUT low pkg/q\n");
    }

    #[test]
    fn input_other_code_is_error() {
        let mut client = scripted("20 \"urgent\" is not a valid priority\n");
        let error = client.input(Priority::Critical, "pkg/q").unwrap_err();
        assert!(
            matches!(
                error,
                Error::Command {
                    code: 20,
                    command: "INPUT",
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn go_reports_backup() {
        let mut client = scripted("0 ok\n30 backup\n100 broken\n");
        assert_eq!(client.go().unwrap(), GoOutcome::Continue);
        assert_eq!(client.go().unwrap(), GoOutcome::Backup);
        let error = client.go().unwrap_err();
        assert!(
            matches!(
                error,
                Error::Command {
                    code: 100,
                    command: "GO",
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn fget_parses_flag() {
        let mut client = scripted("0 true\n0 false\n0 maybe\n");
        assert!(client.fget("pkg/q", "seen").unwrap());
        assert!(!client.fget("pkg/q", "seen").unwrap());
        let error = client.fget("pkg/q", "seen").unwrap_err();
        let Error::InvalidReply { command, problem } = error else {
            panic!("expected InvalidReply, got {error:?}");
        };
        assert_eq!(command, "FGET");
        assert!(problem.contains("\"maybe\""), "{problem}");
    }

    #[test]
    fn non_numeric_reply_is_invalid() {
        let mut client = scripted("secret answer\n");
        let error = client.get("pkg/q").unwrap_err();
        assert!(
            matches!(error, Error::InvalidReply { command: "GET", .. }),
            "{error:?}"
        );
        assert!(!error.to_string().contains("secret"), "{error}");
    }

    #[test]
    fn eof_is_connection_closed() {
        let mut client = scripted("");
        let error = client.get("pkg/q").unwrap_err();
        assert!(
            matches!(error, Error::ConnectionClosed { command: "GET" }),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "debconf closed the connection before replying to GET"
        );
    }

    #[test]
    fn write_failure_is_io_error() {
        let mut client = Client::new(Cursor::new(b"0\n".to_vec()), FailingWriter);
        let error = client.purge().unwrap_err();
        let Error::Io { context, source } = &error else {
            panic!("expected Io, got {error:?}");
        };
        assert!(
            context.contains("send the debconf command PURGE"),
            "{context}"
        );
        assert_eq!(source.kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn read_failure_is_io_error() {
        let mut client = Client::new(BufReader::new(FailingReader), Vec::new());
        let error = client.purge().unwrap_err();
        let Error::Io { context, source } = &error else {
            panic!("expected Io, got {error:?}");
        };
        assert!(
            context.contains("read the debconf reply to PURGE"),
            "{context}"
        );
        assert_eq!(source.kind(), io::ErrorKind::ConnectionReset);
    }

    #[test]
    fn stop_sends_stop_without_reading() {
        let buffer = SharedBuffer::default();
        let client = Client::new(BufReader::new(FailingReader), buffer.clone());
        client.stop().unwrap();
        assert_eq!(buffer.0.borrow().as_slice(), b"STOP\n");
    }

    #[test]
    fn locate_channel_follows_environment() {
        let set = Some(OsStr::new("1"));
        let empty = Some(OsStr::new(""));
        let error = locate_channel(None, set).unwrap_err();
        assert!(matches!(error, Error::NoFrontend), "{error:?}");
        assert!(matches!(
            locate_channel(empty, None),
            Err(Error::NoFrontend)
        ));
        assert_eq!(
            locate_channel(set, set).unwrap(),
            ChannelLocation::Redirected
        );
        assert_eq!(locate_channel(set, None).unwrap(), ChannelLocation::Stdout);
        assert_eq!(locate_channel(set, empty).unwrap(), ChannelLocation::Stdout);
    }

    #[test]
    fn second_claim_is_channel_in_use() {
        let claimed = AtomicBool::new(false);
        claim_channel(&claimed).unwrap();
        let error = claim_channel(&claimed).unwrap_err();
        assert!(matches!(error, Error::ChannelInUse), "{error:?}");
    }

    #[test]
    fn missing_frontend_is_not_installed() {
        let directory = tempfile::tempdir().unwrap();
        let missing = directory.path().join("frontend");
        let error = exec_frontend(&missing);
        assert!(
            matches!(&error, Error::NotInstalled { path } if *path == missing),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("debconf is not installed"),
            "{error}"
        );
    }

    #[test]
    fn unexecutable_frontend_is_exec_error() {
        let directory = tempfile::tempdir().unwrap();
        let frontend = directory.path().join("frontend");
        std::fs::write(&frontend, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&frontend, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = exec_frontend(&frontend);
        let Error::Exec { path, source } = &error else {
            panic!("expected Exec, got {error:?}");
        };
        assert_eq!(*path, frontend);
        assert_eq!(source.kind(), io::ErrorKind::PermissionDenied);
    }

    #[test]
    fn inherited_output_fd_validation() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("report");
        let writable = File::create(&path).unwrap();
        let read_only = File::open(&path).unwrap();
        let writable_fd = writable.as_raw_fd().to_string();
        let read_only_fd = read_only.as_raw_fd().to_string();
        // No process can have this descriptor open, because it exceeds every RLIMIT_NOFILE.
        let closed_fd = RawFd::MAX.to_string();
        let rejected = [
            "",
            "abc",
            "-1",
            "1",
            "2",
            read_only_fd.as_str(),
            closed_fd.as_str(),
        ];
        for value in rejected {
            assert_eq!(
                inherited_output_fd(Some(OsStr::new(value))),
                None,
                "{value:?}"
            );
        }
        assert_eq!(inherited_output_fd(None), None);
        let accepted = inherited_output_fd(Some(OsStr::new(&writable_fd)));
        assert_eq!(accepted, Some(writable.as_raw_fd()));
    }

    #[test]
    fn duplicate_cloexec_sets_flag() {
        let file = tempfile::tempfile().unwrap();
        let duplicate = duplicate_cloexec(file.as_raw_fd()).unwrap();
        assert!(duplicate.as_raw_fd() >= 3);
        let flags =
            FdFlag::from_bits_truncate(fcntl(duplicate.as_raw_fd(), FcntlArg::F_GETFD).unwrap());
        assert!(flags.contains(FdFlag::FD_CLOEXEC));
    }
}
