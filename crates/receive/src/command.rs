//! Parsing one SMTP/LMTP command line into a [`Command`], sans I/O.

use strainer_types::{Body, MailParams, Recipient, Ret, xtext};

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// EHLO domain
    Ehlo(String),
    /// HELO domain
    Helo(String),
    /// LHLO domain
    Lhlo(String),
    /// MAIL FROM:<path> params
    Mail(String, MailParams),
    /// RCPT TO:<path> params
    Rcpt(Recipient),
    /// DATA
    Data,
    /// RSET
    Rset,
    /// NOOP
    Noop,
    /// QUIT
    Quit,
    /// VRFY (answered without looking anything up)
    Vrfy,
    /// HELP
    Help,
    /// XFORWARD with (attribute, value) pairs; value `None` for [UNAVAILABLE]/[TEMPUNAVAIL].
    Xforward(Vec<(String, Option<String>)>),
}

/// Why a line is not a command we accept, with the reply it deserves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Unknown verb: 502 5.5.2.
    Unknown,
    /// Wrong arguments: 501 5.5.4 with this text.
    Syntax(&'static str),
    /// A parameter we do not support: 555 5.5.4 with this text.
    Param(String),
}

/// Parses one command line (without its CRLF).
pub fn parse(line: &str) -> Result<Command, ParseError> {
    let (verb, arg) = match line.find(' ') {
        Some(i) => (&line[..i], line[i + 1..].trim()),
        None => (line.trim_end(), ""),
    };
    let verb = verb.to_ascii_uppercase();
    let no_arg = |c: Command| {
        if arg.is_empty() { Ok(c) } else { Err(ParseError::Syntax("Syntax: no arguments allowed")) }
    };
    match verb.as_str() {
        "EHLO" | "HELO" | "LHLO" => {
            let name = arg.split_whitespace().next().ok_or(ParseError::Syntax("Syntax: EHLO hostname"))?;
            let name = name.to_string();
            Ok(match verb.as_str() {
                "EHLO" => Command::Ehlo(name),
                "HELO" => Command::Helo(name),
                _ => Command::Lhlo(name),
            })
        }
        "MAIL" => parse_mail(arg),
        "RCPT" => parse_rcpt(arg),
        "DATA" => no_arg(Command::Data),
        "RSET" => no_arg(Command::Rset),
        "NOOP" => Ok(Command::Noop),
        "QUIT" => Ok(Command::Quit),
        "VRFY" => Ok(Command::Vrfy),
        "HELP" => Ok(Command::Help),
        "XFORWARD" => parse_xforward(arg),
        _ => Err(ParseError::Unknown),
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// Splits `<path> params` into the bare address and the parameter text.
fn split_path(s: &str) -> Result<(String, &str), ParseError> {
    let s = s.trim_start();
    if let Some(rest) = s.strip_prefix('<') {
        let mut quoted = false;
        let mut escaped = false;
        for (i, c) in rest.char_indices() {
            if escaped {
                escaped = false;
                continue;
            }
            match c {
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                '>' if !quoted => {
                    let addr = strip_source_route(&rest[..i]);
                    return Ok((addr.to_string(), rest[i + 1..].trim()));
                }
                _ => {}
            }
        }
        Err(ParseError::Syntax("Syntax: missing >"))
    } else {
        // Postfix accepts a bare address too; so do we.
        let (addr, params) = s.split_once(' ').unwrap_or((s, ""));
        if addr.is_empty() {
            return Err(ParseError::Syntax("Syntax: missing address"));
        }
        Ok((addr.to_string(), params.trim()))
    }
}

/// Drops an obsolete source route (`@a,@b:user@c` -> `user@c`).
fn strip_source_route(addr: &str) -> &str {
    match addr.find(':') {
        Some(i) if addr.starts_with('@') => &addr[i + 1..],
        _ => addr,
    }
}

fn params(s: &str) -> impl Iterator<Item = (String, Option<&str>)> {
    s.split_ascii_whitespace().map(|p| match p.split_once('=') {
        Some((k, v)) => (k.to_ascii_uppercase(), Some(v)),
        None => (p.to_ascii_uppercase(), None),
    })
}

fn parse_mail(arg: &str) -> Result<Command, ParseError> {
    let rest = strip_prefix_ci(arg, "FROM:").ok_or(ParseError::Syntax("Syntax: MAIL FROM:<address>"))?;
    let (addr, ptext) = split_path(rest)?;
    let mut p = MailParams::default();
    for (key, value) in params(ptext) {
        match (key.as_str(), value) {
            ("SIZE", Some(v)) => p.size = Some(v.parse().map_err(|_| ParseError::Syntax("Syntax: bad SIZE value"))?),
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => p.body = Some(Body::SevenBit),
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => p.body = Some(Body::EightBitMime),
            ("SMTPUTF8", None) => p.smtputf8 = true,
            ("RET", Some(v)) if v.eq_ignore_ascii_case("FULL") => p.ret = Some(Ret::Full),
            ("RET", Some(v)) if v.eq_ignore_ascii_case("HDRS") => p.ret = Some(Ret::Hdrs),
            ("ENVID", Some(v)) => {
                p.envid = Some(xtext::decode(v).ok_or(ParseError::Syntax("Syntax: bad ENVID xtext"))?)
            }
            // Postfix sends AUTH=<> only when AUTH is offered; accept and drop it.
            ("AUTH", Some(_)) => {}
            _ => return Err(ParseError::Param(format!("Unsupported option: {key}"))),
        }
    }
    Ok(Command::Mail(addr, p))
}

fn parse_rcpt(arg: &str) -> Result<Command, ParseError> {
    let rest = strip_prefix_ci(arg, "TO:").ok_or(ParseError::Syntax("Syntax: RCPT TO:<address>"))?;
    let (addr, ptext) = split_path(rest)?;
    if addr.is_empty() {
        return Err(ParseError::Syntax("Syntax: empty recipient"));
    }
    let mut r = Recipient::new(addr);
    for (key, value) in params(ptext) {
        match (key.as_str(), value) {
            ("NOTIFY", Some(v)) if valid_notify(v) => r.notify = Some(v.to_ascii_uppercase()),
            ("ORCPT", Some(v)) => {
                r.orcpt = Some(xtext::decode(v).ok_or(ParseError::Syntax("Syntax: bad ORCPT xtext"))?)
            }
            _ => return Err(ParseError::Param(format!("Unsupported option: {key}"))),
        }
    }
    Ok(Command::Rcpt(r))
}

fn valid_notify(v: &str) -> bool {
    let words: Vec<String> = v.split(',').map(str::to_ascii_uppercase).collect();
    if words.iter().any(|w| w == "NEVER") {
        return words.len() == 1;
    }
    words.iter().all(|w| matches!(w.as_str(), "SUCCESS" | "FAILURE" | "DELAY"))
}

fn parse_xforward(arg: &str) -> Result<Command, ParseError> {
    let mut attrs = Vec::new();
    for (key, value) in params(arg) {
        let v = value.ok_or(ParseError::Syntax("Syntax: XFORWARD name=value..."))?;
        let decoded = xtext::decode(v).ok_or(ParseError::Syntax("Syntax: bad XFORWARD xtext"))?;
        let value = match decoded.as_str() {
            "[UNAVAILABLE]" | "[TEMPUNAVAIL]" => None,
            _ => Some(decoded),
        };
        attrs.push((key, value));
    }
    if attrs.is_empty() {
        return Err(ParseError::Syntax("Syntax: XFORWARD name=value..."));
    }
    Ok(Command::Xforward(attrs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_with_all_parameters() {
        let c = parse("MAIL FROM:<a@b.example> SIZE=123 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=x+2By").unwrap();
        let Command::Mail(addr, p) = c else { panic!("not MAIL") };
        assert_eq!(addr, "a@b.example");
        assert_eq!(p.size, Some(123));
        assert_eq!(p.body, Some(Body::EightBitMime));
        assert!(p.smtputf8);
        assert_eq!(p.ret, Some(Ret::Hdrs));
        assert_eq!(p.envid.as_deref(), Some("x+y"));
    }

    #[test]
    fn null_sender_and_case() {
        assert_eq!(parse("mail from:<>").unwrap(), Command::Mail(String::new(), MailParams::default()));
        assert_eq!(parse("MAIL FROM: <>").unwrap(), Command::Mail(String::new(), MailParams::default()));
    }

    #[test]
    fn rcpt_parameters_and_quoted_local_part() {
        let c = parse("RCPT TO:<\"a>b\"@c.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x+40y").unwrap();
        let Command::Rcpt(r) = c else { panic!("not RCPT") };
        assert_eq!(r.address, "\"a>b\"@c.example");
        assert_eq!(r.notify.as_deref(), Some("SUCCESS,FAILURE"));
        assert_eq!(r.orcpt.as_deref(), Some("rfc822;x@y"));
        assert!(matches!(parse("RCPT TO:<a@b> NOTIFY=NEVER,SUCCESS"), Err(ParseError::Param(_))));
        assert!(matches!(parse("RCPT TO:<@r1,@r2:u@d>").unwrap(), Command::Rcpt(r) if r.address == "u@d"));
    }

    #[test]
    fn rejects_bad_forms() {
        assert_eq!(parse("FOO"), Err(ParseError::Unknown));
        assert!(matches!(parse("MAIL TO:<a@b>"), Err(ParseError::Syntax(_))));
        assert!(matches!(parse("MAIL FROM:<a@b"), Err(ParseError::Syntax(_))));
        assert!(matches!(parse("MAIL FROM:<a@b> BODY=BINARYMIME"), Err(ParseError::Param(_))));
        assert!(matches!(parse("MAIL FROM:<a@b> SIZE=x"), Err(ParseError::Syntax(_))));
        assert!(matches!(parse("RCPT TO:<>"), Err(ParseError::Syntax(_))));
        assert!(matches!(parse("EHLO"), Err(ParseError::Syntax(_))));
        assert!(matches!(parse("DATA x"), Err(ParseError::Syntax(_))));
    }

    #[test]
    fn xforward_attributes() {
        let c = parse("XFORWARD NAME=spike.porcupine.org ADDR=168.100.189.2 HELO=[UNAVAILABLE] IDENT=4Xyz+2B").unwrap();
        assert_eq!(
            c,
            Command::Xforward(vec![
                ("NAME".into(), Some("spike.porcupine.org".into())),
                ("ADDR".into(), Some("168.100.189.2".into())),
                ("HELO".into(), None),
                ("IDENT".into(), Some("4Xyz+".into())),
            ])
        );
    }
}
