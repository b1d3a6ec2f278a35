//! Values that flow between strainer's stages, with no I/O: the SMTP envelope and its parameters,
//! the client facts Postfix forwards with XFORWARD, a received transaction, and SMTP replies.
//!
//! Design choice: the message is kept as the exact bytes received (dot-unstuffed, CRLF), never as a
//! parsed tree, because what passes must be re-sent byte for byte; parsed views borrow from it.
#![deny(missing_docs)]

mod envelope;
mod finding;
pub mod headers;
mod reply;
mod rule_error;
pub mod xtext;

pub use envelope::{Body, ClientInfo, Envelope, MailParams, Recipient, Ret, Transaction};
pub use finding::Finding;
pub use reply::{Enhanced, Reply, ReplyClass};
pub use rule_error::RuleError;
