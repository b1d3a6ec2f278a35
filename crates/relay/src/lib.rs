//! The relay side of strainer: re-inject a message into Postfix's second smtpd (normally
//! 127.0.0.1:10026) with its original envelope, parameters and XFORWARD client facts, and
//! report each recipient's fate; plus the DSN sent when some recipients are refused.
//!
//! Design choice: a connection is reused only after a transaction that ended with the reply to
//! the final dot (a clean session state), and a reused connection that turns out to be closed is
//! replaced only while no message byte has been sent: reuse may cost a retry, never a duplicate.
#![deny(missing_docs)]

mod client;
pub mod dsn;

pub use client::{Delivery, Outgoing, Pool, RelayConfig, RelayError, deliver};
