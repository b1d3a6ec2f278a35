//! The relay side of strainer: re-inject a message into Postfix's second smtpd (normally
//! 127.0.0.1:10026) with its original envelope, parameters and XFORWARD client facts, and
//! report each recipient's fate; plus the DSN sent when some recipients are refused.
//!
//! Design choice: one connection per message, closed with QUIT. Postfix's smtpd costs little
//! per connection on loopback, and a fresh connection can never carry state (an unfinished
//! transaction, a stale XFORWARD) from one message into the next.
#![deny(missing_docs)]

mod client;
pub mod dsn;

pub use client::{Delivery, Outgoing, RelayConfig, RelayError, deliver};
