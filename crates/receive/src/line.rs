//! Reading one command line with a length limit.

use std::io;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// One read from the command channel.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// A line without its CRLF (or bare LF).
    Text(Vec<u8>),
    /// The line exceeded the limit; it was read and dropped.
    TooLong,
    /// The client closed the connection.
    Eof,
}

pub(crate) async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R, max: usize) -> io::Result<Line> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(Line::Eof);
        }
        let (take, found) = match memchr::memchr(b'\n', buf) {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if !too_long {
            if line.len() + take > max + 2 {
                too_long = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(&buf[..take]);
            }
        }
        r.consume(take);
        if found {
            if too_long {
                return Ok(Line::TooLong);
            }
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Line::Text(line));
        }
    }
}
