//! The receive side of strainer: an SMTP or LMTP server session, generic over the byte stream and
//! over a [`Handler`] that answers MAIL, RCPT and end-of-data.
//!
//! Design choice: the protocol core ([`command`], [`data`]) is sans-I/O and the async [`Session`]
//! is a thin shell over any `AsyncRead + AsyncWrite`, so every dialogue, including broken and
//! stalled clients, is tested in memory without sockets.
#![deny(missing_docs)]

pub mod command;
pub mod data;
mod line;
mod session;
pub mod spool;

pub use session::{DataReply, Handler, Session, SessionConfig, Shutdown, new_id, refuse_busy};
pub use spool::SpoolConfig;
