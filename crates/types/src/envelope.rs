use std::net::SocketAddr;

/// The BODY= parameter of MAIL FROM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// BODY=7BIT
    SevenBit,
    /// BODY=8BITMIME
    EightBitMime,
}

/// The RET= parameter of MAIL FROM (RFC 3461).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    /// Return the full message in a DSN.
    Full,
    /// Return only the headers.
    Hdrs,
}

/// The MAIL FROM parameters strainer understands and carries downstream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// SIZE= as declared by the client.
    pub size: Option<u64>,
    /// BODY=
    pub body: Option<Body>,
    /// SMTPUTF8 was given.
    pub smtputf8: bool,
    /// RET=
    pub ret: Option<Ret>,
    /// ENVID=, decoded from xtext.
    pub envid: Option<String>,
}

/// One RCPT TO with its DSN parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The address without angle brackets.
    pub address: String,
    /// NOTIFY= as given (e.g. `SUCCESS,FAILURE` or `NEVER`), upper-cased.
    pub notify: Option<String>,
    /// ORCPT=, decoded from xtext, e.g. `rfc822;user@example.org`.
    pub orcpt: Option<String>,
}

impl Recipient {
    /// A recipient without DSN parameters.
    pub fn new(address: impl Into<String>) -> Self {
        Recipient { address: address.into(), notify: None, orcpt: None }
    }

    /// Whether the sender asked to hear about a failure for this recipient (the default).
    pub fn wants_failure_notice(&self) -> bool {
        match &self.notify {
            None => true,
            Some(n) => n.split(',').any(|k| k.trim().eq_ignore_ascii_case("FAILURE")),
        }
    }
}

/// The SMTP envelope of one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    /// MAIL FROM address without brackets; empty for the null sender.
    pub sender: String,
    /// MAIL FROM parameters.
    pub params: MailParams,
    /// Accepted recipients in the order given.
    pub recipients: Vec<Recipient>,
}

/// Client facts forwarded by Postfix with XFORWARD; `None` where unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// Client host name (NAME).
    pub name: Option<String>,
    /// Client address (ADDR).
    pub addr: Option<String>,
    /// Client port (PORT).
    pub port: Option<String>,
    /// SMTP or ESMTP (PROTO).
    pub proto: Option<String>,
    /// The client's HELO name (HELO).
    pub helo: Option<String>,
    /// The Postfix queue id (IDENT).
    pub ident: Option<String>,
    /// LOCAL or REMOTE (SOURCE).
    pub source: Option<String>,
    /// Server address the client connected to (DESTADDR).
    pub destaddr: Option<String>,
    /// Server port the client connected to (DESTPORT).
    pub destport: Option<String>,
}

impl ClientInfo {
    /// The attributes as (XFORWARD name, value) pairs, known ones only.
    pub fn attributes(&self) -> Vec<(&'static str, &str)> {
        let all = [
            ("NAME", &self.name),
            ("ADDR", &self.addr),
            ("PORT", &self.port),
            ("PROTO", &self.proto),
            ("HELO", &self.helo),
            ("IDENT", &self.ident),
            ("SOURCE", &self.source),
            ("DESTADDR", &self.destaddr),
            ("DESTPORT", &self.destport),
        ];
        all.into_iter().filter_map(|(k, v)| v.as_deref().map(|v| (k, v))).collect()
    }

    /// Sets an attribute by its XFORWARD name; false for a name we do not know.
    pub fn set(&mut self, name: &str, value: Option<String>) -> bool {
        let slot = match name.to_ascii_uppercase().as_str() {
            "NAME" => &mut self.name,
            "ADDR" => &mut self.addr,
            "PORT" => &mut self.port,
            "PROTO" => &mut self.proto,
            "HELO" => &mut self.helo,
            "IDENT" => &mut self.ident,
            "SOURCE" => &mut self.source,
            "DESTADDR" => &mut self.destaddr,
            "DESTPORT" => &mut self.destport,
            _ => return false,
        };
        *slot = value;
        true
    }
}

/// One received message: who sent it to us, its envelope, and its bytes exactly as received.
#[derive(Debug, Clone)]
pub struct Transaction {
    /// Our own id for this transaction (logs, Received header).
    pub id: String,
    /// The TCP peer that gave us the message (normally Postfix itself).
    pub peer: SocketAddr,
    /// The HELO/EHLO/LHLO name the peer gave.
    pub peer_helo: String,
    /// True when the message came in over LMTP.
    pub lmtp: bool,
    /// Client facts from XFORWARD, empty when none were sent.
    pub client: ClientInfo,
    /// The envelope.
    pub envelope: Envelope,
    /// The message: dot-unstuffed, CRLF line ends, otherwise the bytes as sent.
    pub message: Vec<u8>,
    /// How long receiving the DATA took (354 to the final dot).
    pub receive_time: std::time::Duration,
}
