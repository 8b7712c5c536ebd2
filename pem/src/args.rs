//! The PEM's command-line settings, shared by `vizier-pem` (the DaemonSet's process)
//! and `px local` (which hosts a PEM in its own process), so both take the same flags.

use std::path::PathBuf;

use crate::config::PemConfig;
use crate::error::Error;

/// How the PEM traces and how much memory its tables may use.
#[derive(Clone, Debug, clap::Args)]
pub struct PemArgs {
    /// Memory limit of the PEM, as a Kubernetes quantity. Tables get 60% of it.
    #[arg(long, env = "PX_PEM_MEMORY_LIMIT", default_value = "2Gi", value_parser = parse_bytes)]
    pub memory_limit: u64,
    /// Bytes for all tables together [default: 60% of --memory-limit].
    #[arg(long, value_parser = parse_bytes)]
    pub table_store_limit: Option<u64>,
    /// Share of the tables' memory given to http_events, in percent.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub http_events_percent: u8,
    /// A fixed budget for one table, as TABLE=QUANTITY (e.g. conn_stats=16Mi); repeatable.
    /// Taken out of the tables' memory before the rest is shared.
    #[arg(long = "table-limit", value_name = "TABLE=QUANTITY", value_parser = parse_table_limit)]
    pub table_limits: Vec<(String, u64)>,
    /// Payload bytes copied from the kernel per syscall (1 to 8192).
    #[arg(long, default_value_t = 8192)]
    pub chunk_limit: u32,
    /// Body bytes kept per HTTP message; the real size is recorded as well.
    #[arg(long, default_value_t = 512)]
    pub max_body_bytes: usize,
    /// Record the values of credential headers (Authorization, Cookie, Set-Cookie,
    /// Proxy-Authorization, X-Api-Key) in http_events. By default they are recorded as
    /// present with the value `[REDACTED]` (an Authorization keeps its scheme, a cookie
    /// its name): whoever may query the tables should not get every session's secrets.
    #[arg(long, env = "PX_PEM_KEEP_CREDENTIAL_HEADERS")]
    pub keep_credential_headers: bool,
    /// What queries may see of the sensitive columns (bodies and headers): Full,
    /// Restricted (they hold `REDACTED`) or PIIRestricted (e-mail and IP addresses, card,
    /// IBAN, IMEI and social security numbers, MAC addresses masked), as Pixie's
    /// `dataAccess`. Applied before rows are stored: no query sees the raw values.
    #[arg(long, env = "PX_PEM_DATA_ACCESS", default_value = "Full", value_parser = parse_data_access)]
    pub data_access: px_tablestore::DataAccess,
    /// Bytes buffered per connection and direction while a message's head (request or
    /// status line and headers) is incomplete, 1Ki to 1Mi; a longer head is not parsed
    /// (the Vizier's `dataCollectorParams.datastreamBufferSize`).
    #[arg(long, env = "PX_PEM_DATASTREAM_BUFFER", default_value = "8Ki", value_parser = parse_bytes)]
    pub datastream_buffer: u64,
    /// Size of the kernel-to-PEM ring buffer (a power of two).
    #[arg(long, default_value = "8Mi", value_parser = parse_bytes)]
    pub ring_buffer: u64,
    /// Trace only the processes in this cgroup v2 directory and below it (for several
    /// simulated nodes on one machine) [default: every process of the host].
    #[arg(long, env = "PX_PEM_CGROUP", value_name = "DIR")]
    pub cgroup: Option<PathBuf>,
    /// Dynamic probes (Tracepoints) loaded at once, at most 64.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub max_probes: u16,
    /// Events per second one dynamic probe records; the rest are counted as dropped, so a
    /// probe on a hot function cannot flood the node.
    #[arg(long, default_value_t = 100_000)]
    pub probe_rate: u32,
}

impl PemArgs {
    /// The PEM's configuration from these flags.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when a value is out of range.
    pub fn to_config(&self) -> Result<PemConfig, Error> {
        let mut config = PemConfig::for_memory_limit(self.memory_limit);
        config.budgets.table_store_bytes = self.table_store_limit;
        config.budgets.http_events_percent = self.http_events_percent;
        config.budgets.table_bytes = self.table_limits.iter().cloned().collect();
        config.chunk_limit = self.chunk_limit;
        config.max_body_bytes = self.max_body_bytes;
        config.keep_credential_headers = self.keep_credential_headers;
        config.data_access = self.data_access;
        config.ring_buffer_bytes =
            u32::try_from(self.ring_buffer).map_err(|_| Error::InvalidConfig {
                reason: "--ring-buffer must be below 4Gi".to_owned(),
            })?;
        config.datastream_buffer_bytes =
            usize::try_from(self.datastream_buffer).unwrap_or(usize::MAX);
        config.cgroup.clone_from(&self.cgroup);
        config.max_probes = usize::from(self.max_probes);
        config.probe_rate_per_sec = self.probe_rate;
        Ok(config)
    }
}

/// Parses a memory quantity the way Kubernetes does (`2Gi`, `512Mi`, `1G`, `1500`);
/// for clap's `value_parser`.
///
/// # Errors
/// A message that says how to write a quantity.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    match px_crds::quantity_bytes(text) {
        Some(0) => Err(format!(
            "{text:?} must be a positive number of bytes, like 2Gi"
        )),
        Some(bytes) => Ok(bytes),
        None => Err(format!(
            "{text:?} is not a Kubernetes quantity; write it like 2Gi, 512Mi or 1G"
        )),
    }
}

fn parse_data_access(text: &str) -> Result<px_tablestore::DataAccess, String> {
    text.parse()
}

fn parse_table_limit(text: &str) -> Result<(String, u64), String> {
    let (table, quantity) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} must be TABLE=QUANTITY, like conn_stats=16Mi"))?;
    Ok((table.to_owned(), parse_bytes(quantity)?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn kubernetes_forms_parse() {
        assert_eq!(parse_bytes("2Gi"), Ok(2 << 30));
        assert_eq!(parse_bytes("512Mi"), Ok(512 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1_000_000_000));
        assert_eq!(parse_bytes("1500"), Ok(1500));
        assert_eq!(parse_bytes("1.5Gi"), Ok(3 << 29), "fractions are kept");
    }

    #[test]
    fn bad_quantities_say_what_to_write() {
        assert!(parse_bytes("two gigs").unwrap_err().contains("like 2Gi"));
        assert!(parse_bytes("0").is_err());
        assert!(
            parse_table_limit("conn_stats")
                .unwrap_err()
                .contains("TABLE=QUANTITY")
        );
    }
}
