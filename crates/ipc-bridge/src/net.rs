//! The Zenoh session a bridge runs on: peer mode, no broker, no multicast
//! scouting (peers are the endpoints given), TCP or TLS links only.

use std::path::PathBuf;
use std::time::Duration;

use zenoh::{Config, Session, Wait};

/// TLS material (`--tls-*`): PEM files.
#[derive(Debug, Clone)]
pub struct Tls {
    /// The certificate authority that signed the peers' certificates.
    pub ca: PathBuf,
    /// This bridge's certificate (needed to listen, or for mutual TLS).
    pub cert: Option<PathBuf>,
    /// Its private key.
    pub key: Option<PathBuf>,
    /// Peers must show a certificate too (mutual TLS).
    pub mutual: bool,
}

/// How the session is reached and how fast a silent peer is declared gone.
#[derive(Debug, Clone)]
pub struct NetOptions {
    /// Endpoints to listen on, `tcp/ADDR:PORT` or `tls/ADDR:PORT`.
    pub listen: Vec<String>,
    /// Endpoints of peers to connect to (retried until they answer).
    pub connect: Vec<String>,
    /// A peer that sends nothing for this long is gone (Zenoh's lease).
    pub lease: Duration,
    /// TLS, if any endpoint is `tls/`.
    pub tls: Option<Tls>,
    /// Largest write to a link (Zenoh's batch size), in bytes.
    pub batch_size: usize,
}

/// Smallest batch size taken: below it, Zenoh's own headers dominate.
pub const MIN_BATCH: usize = 1024;
/// Largest batch size (Zenoh's limit, and its default).
pub const MAX_BATCH: usize = 65535;

/// Checks one endpoint: `tcp/` or `tls/`, an address and a port, given
/// explicitly (never guessed).
pub fn check_endpoint(e: &str) -> Result<(), String> {
    let (proto, addr) = e
        .split_once('/')
        .ok_or_else(|| format!("endpoint {e:?}: expected tcp/ADDR:PORT or tls/ADDR:PORT"))?;
    if proto != "tcp" && proto != "tls" {
        return Err(format!(
            "endpoint {e:?}: the transport is {proto:?}; only tcp and tls are built in"
        ));
    }
    if proto == "tls" && !cfg!(feature = "tls") {
        return Err(format!(
            "endpoint {e:?}: this ipc-bridge was built without TLS"
        ));
    }
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("endpoint {e:?}: no port (ADDR:PORT)"))?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!("endpoint {e:?}: bad address or port"));
    }
    Ok(())
}

/// The Zenoh configuration for `o`, checked.
pub fn config(o: &NetOptions) -> Result<Config, String> {
    if o.listen.is_empty() && o.connect.is_empty() {
        return Err("give at least one --listen or --connect endpoint".into());
    }
    for e in o.listen.iter().chain(&o.connect) {
        check_endpoint(e)?;
    }
    let uses_tls = o
        .listen
        .iter()
        .chain(&o.connect)
        .any(|e| e.starts_with("tls/"));
    match (&o.tls, uses_tls) {
        (None, true) => {
            return Err(
                "a tls/ endpoint needs --tls-ca (and --tls-cert, --tls-key to listen)".into(),
            )
        }
        (Some(_), false) => {
            return Err(
                "--tls-* given but no endpoint is tls/: the link would not be encrypted".into(),
            )
        }
        _ => {}
    }
    let mut c = Config::default();
    let mut set = |k: &str, v: String| {
        c.insert_json5(k, &v)
            .map_err(|e| format!("zenoh configuration {k} = {v}: {e}"))
    };
    let list = |v: &[String]| {
        format!(
            "[{}]",
            v.iter()
                .map(|e| format!("{e:?}"))
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    set("mode", r#""peer""#.into())?;
    set("scouting/multicast/enabled", "false".into())?;
    set("scouting/gossip/enabled", "false".into())?;
    set("listen/endpoints", list(&o.listen))?;
    set("connect/endpoints", list(&o.connect))?;
    // Keep retrying a peer that is not up yet, at most a second apart.
    set("connect/timeout_ms", "-1".into())?;
    set("connect/exit_on_failure", "false".into())?;
    set(
        "connect/retry",
        r#"{ period_init_ms: 250, period_max_ms: 1000, period_increase_factor: 2 }"#.into(),
    )?;
    set(
        "transport/link/tx/lease",
        o.lease.as_millis().max(100).to_string(),
    )?;
    set("transport/link/tx/keep_alive", "4".into())?;
    if !(MIN_BATCH..=MAX_BATCH).contains(&o.batch_size) {
        return Err(format!(
            "--batch-size takes {MIN_BATCH} to {MAX_BATCH} bytes, not {}",
            o.batch_size
        ));
    }
    set("transport/link/tx/batch_size", o.batch_size.to_string())?;
    if let Some(t) = &o.tls {
        let path = |p: &PathBuf| -> Result<String, String> {
            if !p.is_file() {
                return Err(format!("TLS file {} is missing", p.display()));
            }
            Ok(format!("{:?}", p.display().to_string()))
        };
        set("transport/link/tls/root_ca_certificate", path(&t.ca)?)?;
        match (&t.cert, &t.key) {
            (Some(cert), Some(key)) => {
                set("transport/link/tls/listen_certificate", path(cert)?)?;
                set("transport/link/tls/listen_private_key", path(key)?)?;
                if t.mutual {
                    set("transport/link/tls/connect_certificate", path(cert)?)?;
                    set("transport/link/tls/connect_private_key", path(key)?)?;
                }
            }
            (None, None) if !o.listen.is_empty() || t.mutual => {
                return Err(
                    "listening on tls/, or --tls-mutual, needs --tls-cert and --tls-key".into(),
                )
            }
            (None, None) => {}
            _ => return Err("--tls-cert and --tls-key go together".into()),
        }
        if t.mutual {
            set("transport/link/tls/enable_mtls", "true".into())?;
        }
    }
    Ok(c)
}

/// Opens the session.
pub fn open(o: &NetOptions) -> anyhow::Result<Session> {
    let cfg = config(o).map_err(ipc_cli::UsageError)?;
    zenoh::open(cfg)
        .wait()
        .map_err(|e| anyhow::anyhow!("opening the network session: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(listen: &[&str], connect: &[&str]) -> NetOptions {
        NetOptions {
            listen: listen.iter().map(|s| s.to_string()).collect(),
            connect: connect.iter().map(|s| s.to_string()).collect(),
            lease: Duration::from_secs(1),
            tls: None,
            batch_size: MAX_BATCH,
        }
    }

    #[test]
    fn the_batch_size_is_checked() {
        let mut o = opts(&["tcp/127.0.0.1:7447"], &[]);
        for ok in [MIN_BATCH, 2048, MAX_BATCH] {
            o.batch_size = ok;
            assert!(config(&o).is_ok(), "{ok}");
        }
        for bad in [0, MIN_BATCH - 1, MAX_BATCH + 1] {
            o.batch_size = bad;
            assert!(config(&o).unwrap_err().contains("--batch-size"), "{bad}");
        }
    }

    #[test]
    fn endpoints_are_checked_before_anything_opens() {
        assert!(config(&opts(&["tcp/127.0.0.1:7447"], &[])).is_ok());
        assert!(config(&opts(&[], &[])).unwrap_err().contains("--listen"));
        assert!(config(&opts(&["udp/1.2.3.4:5"], &[]))
            .unwrap_err()
            .contains("udp"));
        assert!(config(&opts(&["tcp/1.2.3.4"], &[]))
            .unwrap_err()
            .contains("port"));
        assert!(config(&opts(&["tcp/:80"], &[])).is_err());
        assert!(config(&opts(&[], &["tcp/1.2.3.4:0"])).is_err());
        assert!(config(&opts(&["tls/127.0.0.1:7447"], &[]))
            .unwrap_err()
            .contains("--tls-ca"));
    }
}
