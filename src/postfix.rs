//! The main.cf and master.cf lines that put strainer between Postfix's queue and delivery.

use crate::config::{Config, Protocol};

/// Renders the Postfix wiring for `config` (FILTER_README's advanced content filter).
pub fn wiring(config: &Config) -> String {
    let s = &config.server;
    let listen = match s.listen {
        std::net::SocketAddr::V4(a) => format!("[{}]:{}", a.ip(), a.port()),
        std::net::SocketAddr::V6(a) => format!("[ipv6:{}]:{}", a.ip(), a.port()),
    };
    let (transport, prefix) = match s.protocol {
        Protocol::Smtp => ("smtp", "smtp"),
        Protocol::Lmtp => ("lmtp", "lmtp"),
    };
    let relay = &config.relay.address;
    let relay_net = if relay.starts_with('[') || relay.contains("::") { "[::1]/128" } else { "127.0.0.0/8" };
    let max = s.max_sessions;
    let size = s.max_message_size;
    format!(
        "# /etc/postfix/main.cf: hand every queued message to strainer.
content_filter = scan:{listen}
# Keep address rewriting for after the filter (FILTER_README).
receive_override_options = no_address_mappings
# Postfix's message_size_limit (default 10240000) must stay below strainer's SIZE ({size}).

# /etc/postfix/master.cf: the transport to strainer (maxproc = strainer's max_sessions),
# and the smtpd that takes filtered mail back on {relay}.
scan      unix  -       -       n       -       {max}      {transport}
    -o {prefix}_send_xforward_command=yes
    -o disable_mime_output_conversion=yes
    -o {prefix}_generic_maps=
{relay} inet  n       -       n       -       -       smtpd
    -o content_filter=
    -o receive_override_options=no_unknown_recipient_checks,no_header_body_checks,no_milters
    -o smtpd_helo_restrictions=
    -o smtpd_client_restrictions=
    -o smtpd_sender_restrictions=
    -o smtpd_relay_restrictions=
    -o smtpd_recipient_restrictions=permit_mynetworks,reject
    -o smtpd_data_restrictions=
    -o mynetworks={relay_net}
    -o smtpd_authorized_xforward_hosts={relay_net}
    -o smtpd_error_sleep_time=0
    -o smtpd_soft_error_limit=1001
    -o smtpd_hard_error_limit=1000
    -o smtpd_client_connection_count_limit=0
    -o smtpd_client_connection_rate_limit=0
",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_in_addresses_and_limits() {
        let mut c = Config::default();
        c.server.max_sessions = 7;
        let w = wiring(&c);
        assert!(w.contains("content_filter = scan:[127.0.0.1]:10025"));
        assert!(w.contains("scan      unix  -       -       n       -       7      smtp"));
        assert!(w.contains("127.0.0.1:10026 inet"));
        assert!(w.contains("smtp_send_xforward_command=yes"));
        assert!(w.contains("smtpd_authorized_xforward_hosts=127.0.0.0/8"));
        c.server.protocol = Protocol::Lmtp;
        assert!(wiring(&c).contains("lmtp_send_xforward_command=yes"));
    }
}
