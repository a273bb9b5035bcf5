//! Connecting: options from the URL, TLS (rustls) or plaintext to loopback only, the pool.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

use crate::store::StoreError;

/// How to reach the database and how long claims last.
#[derive(Clone)]
pub struct PostgresOptions {
    /// Connection settings (from the URL).
    pub config: tokio_postgres::Config,
    /// CA file trusted for TLS to the database (with the webpki roots); `None`: plaintext,
    /// allowed only to a loopback host or a Unix socket.
    pub tls_ca: Option<PathBuf>,
    /// Use TLS (with the webpki roots alone when `tls_ca` is `None`).
    pub tls: bool,
    /// Claim lease (see `state.postgres.lease_ms`).
    pub lease: Duration,
    /// Pool size.
    pub pool_size: usize,
    /// Connect timeout and the longest wait for a pooled connection.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // tokio-postgres redacts the password in its Debug; the hosts and database say
        // enough, and nothing else from the URL is printed.
        f.debug_struct("PostgresOptions")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .field("tls", &self.tls)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl PostgresOptions {
    /// Options from a connection URL (or `key=value` string) with the defaults of
    /// `state.postgres`. The URL never appears in an error.
    pub fn from_url(url: &str) -> Result<PostgresOptions, StoreError> {
        let config = tokio_postgres::Config::from_str(url).map_err(|_| {
            // The driver's message may quote the URL: say only that it did not parse.
            StoreError::PostgresConfig {
                field: "url",
                message: "not a valid postgres:// URL or key=value connection string".into(),
            }
        })?;
        Ok(PostgresOptions {
            config,
            tls_ca: None,
            tls: false,
            lease: Duration::from_secs(10),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
        })
    }
}

/// Whether a host may be reached without TLS: loopback or a Unix socket.
fn loopback(config: &tokio_postgres::Config) -> bool {
    use tokio_postgres::config::Host;
    !config.get_hosts().is_empty()
        && config.get_hosts().iter().all(|host| match host {
            Host::Unix(_) => true,
            Host::Tcp(name) => {
                name == "localhost"
                    || name
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
        })
        && config.get_hostaddrs().iter().all(|ip| ip.is_loopback())
}

/// The connection pool for `options`: TLS when asked for, plaintext only to loopback.
pub(super) fn pool(options: &PostgresOptions) -> Result<Pool, StoreError> {
    let mut config = options.config.clone();
    config.connect_timeout(options.connect_timeout);
    config.application_name("payproxy");
    // A connection black-holed by a partition (or a paused database host) is given up in
    // seconds, not after the kernel's ~15 min retransmission timeout: unacknowledged data
    // and silent idle connections both end it.
    config.tcp_user_timeout(options.connect_timeout.max(Duration::from_secs(5)));
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(10));
    config.keepalives_interval(Duration::from_secs(2));
    config.keepalives_retries(3);
    if options.tls {
        // Never the driver's default `prefer`, which falls back to plaintext when the server
        // offers no TLS: with `tls` configured, TLS (with a verified certificate) or nothing.
        config.ssl_mode(tokio_postgres::config::SslMode::Require);
    }
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = if options.tls {
        let ca = match &options.tls_ca {
            Some(path) => Some((
                path.clone(),
                crate::files::read(path, crate::files::PEM).map_err(|e| {
                    StoreError::PostgresConfig {
                        field: "tls.ca_file",
                        message: e.to_string(),
                    }
                })?,
            )),
            None => None,
        };
        let client =
            crate::tls::client_config(ca.as_ref().map(|(p, pem)| (p.as_path(), pem.as_slice())))
                .map_err(|message| StoreError::PostgresConfig {
                    field: "tls.ca_file",
                    message,
                })?;
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client);
        Manager::from_config(config, tls, manager_config)
    } else {
        if !loopback(&config) {
            return Err(StoreError::PostgresConfig {
                field: "tls",
                message: "required: plaintext is allowed only to a loopback host or a \
                          Unix socket"
                    .into(),
            });
        }
        Manager::from_config(config, tokio_postgres::NoTls, manager_config)
    };
    let pool = Pool::builder(manager)
        .max_size(options.pool_size.max(1))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(options.connect_timeout))
        .create_timeout(Some(options.connect_timeout))
        .recycle_timeout(Some(options.connect_timeout))
        .build()
        .map_err(|e| StoreError::PostgresConfig {
            field: "pool_size",
            message: e.to_string(),
        })?;
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PostgresStore;

    fn options(url: &str) -> PostgresOptions {
        PostgresOptions::from_url(url).unwrap()
    }

    #[test]
    fn plaintext_only_to_loopback() {
        for url in [
            "postgres://u:p@127.0.0.1:5432/db",
            "postgres://u:p@localhost/db",
            "postgres://u:p@[::1]:5432/db",
            "host=/run/postgresql user=u",
        ] {
            assert!(loopback(&options(url).config), "{url}");
        }
        for url in [
            "postgres://u:p@db.example.com/db",
            "postgres://u:p@10.0.0.5/db",
            "postgres://u:p@127.0.0.1,db.example.com/db",
        ] {
            assert!(!loopback(&options(url).config), "{url}");
        }
    }

    #[test]
    fn the_password_never_shows() {
        let secret = "s3cr3t-pw";
        let url = format!("postgres://payproxy:{secret}@db.example.com:5432/pp");
        let opts = options(&url);
        assert!(!format!("{opts:?}").contains(secret), "{opts:?}");
        let refused = PostgresStore::open(opts).unwrap_err().to_string();
        assert!(refused.contains("state.postgres.tls"), "{refused}");
        assert!(!refused.contains(secret), "{refused}");
        let bad = format!("postgres://payproxy:{secret}@host:notaport/pp");
        let error = PostgresOptions::from_url(&bad).unwrap_err().to_string();
        assert!(!error.contains(secret), "{error}");
        assert!(error.contains("state.postgres.url"), "{error}");
    }
}
