//! An SMTP server for tests, in-process: it speaks enough of RFC 5321
//! (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT) for a real client to
//! deliver to it, keeps what it received, and can be told to refuse or to
//! drop connections.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// How the server treats the next connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Accept,
    /// Greets with `421` (service not available): a transient refusal.
    Refuse,
    /// Closes the connection once the message data has arrived, before
    /// answering it.
    DropAfterData,
    /// Answers the recipient with `550`: a permanent refusal.
    RejectRecipient,
}

/// One message as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    /// The message as sent (headers and body), dot-unstuffed.
    pub data: Vec<u8>,
}

#[derive(Clone)]
pub struct SmtpSink {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    mode: Arc<Mutex<Mode>>,
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let sink = SmtpSink {
            addr: listener.local_addr().expect("address"),
            received: Default::default(),
            mode: Arc::new(Mutex::new(Mode::Accept)),
        };
        let server = sink.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let s = server.clone();
                tokio::spawn(async move {
                    let _ = s.session(stream).await;
                });
            }
        });
        sink
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().expect("lock") = mode;
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    async fn session(&self, stream: TcpStream) -> std::io::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read);
        let mode = *self.mode.lock().expect("lock");
        if mode == Mode::Refuse {
            write
                .write_all(b"421 4.3.2 sink closed for tests\r\n")
                .await?;
            return Ok(());
        }
        write.write_all(b"220 sink ESMTP\r\n").await?;
        let mut from = String::new();
        let mut to = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            if lines.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let upper = line.trim_end().to_ascii_uppercase();
            // A pooled connection sees a mode set after it opened.
            let mode = *self.mode.lock().expect("lock");
            if mode == Mode::Refuse && upper.starts_with("MAIL FROM:") {
                write
                    .write_all(b"421 4.3.2 sink closed for tests\r\n")
                    .await?;
                return Ok(());
            }
            let reply: &[u8] = if upper.starts_with("EHLO") {
                b"250-sink\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 10485760\r\n"
            } else if upper.starts_with("HELO") {
                b"250 sink\r\n"
            } else if upper.starts_with("MAIL FROM:") {
                from = line.trim_end()[10..].trim().to_owned();
                to.clear();
                b"250 2.1.0 ok\r\n"
            } else if upper.starts_with("RCPT TO:") {
                if mode == Mode::RejectRecipient {
                    b"550 5.1.1 no such mailbox\r\n"
                } else {
                    to.push(line.trim_end()[8..].trim().to_owned());
                    b"250 2.1.5 ok\r\n"
                }
            } else if upper == "DATA" {
                write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                let mut data = Vec::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    let unstuffed = line.strip_prefix('.').unwrap_or(&line);
                    data.extend_from_slice(unstuffed.as_bytes());
                }
                if *self.mode.lock().expect("lock") == Mode::DropAfterData {
                    return Ok(());
                }
                self.received.lock().expect("lock").push(Received {
                    from: from.clone(),
                    to: to.clone(),
                    data,
                });
                b"250 2.0.0 queued\r\n"
            } else if upper == "RSET" {
                to.clear();
                b"250 2.0.0 ok\r\n"
            } else if upper == "NOOP" {
                b"250 2.0.0 ok\r\n"
            } else if upper == "QUIT" {
                write.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            } else {
                b"502 5.5.2 not implemented\r\n"
            };
            write.write_all(reply).await?;
        }
    }
}
