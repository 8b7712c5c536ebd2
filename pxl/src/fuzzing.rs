//! The compiler as `cargo fuzz` (`fuzz/fuzz_targets/pxl_compiler.rs`) and the smoke test
//! (`tests/fuzz_smoke.rs`) drive it: any bytes as a script, over a catalog with Pixie's
//! `http_events` columns. Any input must end in a script or a [`CompileError`], never a
//! panic, a hang or unbounded memory. Not part of the API.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::datasource::{empty::EmptyTable, provider_as_source};
use datafusion::logical_expr::TableSource;
use px_tablestore::{ColumnSchema, DataType, SemanticType, TableSchema};

use crate::{CompileError, CompileOptions, Script, TableCatalog, compile};

/// Inputs longer than this are cut: a script's size is bounded by the API's message size,
/// and the fuzzer should spend its time on structure, not length.
pub const MAX_SOURCE_BYTES: usize = 16 << 10;

struct Catalog(Arc<dyn TableProvider>);

impl TableCatalog for Catalog {
    fn table(&self, name: &str) -> Option<Arc<dyn TableSource>> {
        (name == "http_events").then(|| provider_as_source(Arc::clone(&self.0)))
    }

    fn table_names(&self) -> Vec<String> {
        vec!["http_events".to_owned()]
    }
}

/// Compiles `data` (as UTF-8, lossily) against an empty `http_events`.
///
/// # Errors
/// The compiler's error, which is what most inputs get.
pub fn compile_any(data: &[u8]) -> Result<Script, CompileError> {
    let text = String::from_utf8_lossy(&data[..data.len().min(MAX_SOURCE_BYTES)]);
    let columns = [
        ("time_", DataType::Time64Ns, SemanticType::None),
        ("upid", DataType::UInt128, SemanticType::Upid),
        ("req_path", DataType::String, SemanticType::None),
        ("req_body", DataType::String, SemanticType::None),
        ("resp_status", DataType::Int64, SemanticType::HttpRespStatus),
        ("latency", DataType::Int64, SemanticType::DurationNs),
    ]
    .into_iter()
    .map(|(name, t, s)| ColumnSchema::new(name, t, s, ""))
    .collect();
    let schema = TableSchema::new("http_events", "", columns);
    let catalog = Catalog(Arc::new(EmptyTable::new(schema.arrow_schema())));
    compile(
        &text,
        &catalog,
        &CompileOptions::at(1_700_000_000_000_000_000),
    )
}
