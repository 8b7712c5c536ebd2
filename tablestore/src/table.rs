//! One append-only table of record batches with a byte budget: oldest batches go first.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{PoisonError, RwLock};

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::TimestampNanosecondType;
use arrow_schema::SchemaRef;

use crate::error::Error;
use crate::redaction::{DataAccess, redact_batch};
use crate::schema::TableSchema;

/// What a table holds and what it has let go, for `px.GetDebugTableInfo`-style reports
/// and the DataRetention status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Byte budget in force.
    pub budget_bytes: u64,
    /// Bytes held now (Arrow buffer memory of the batches held).
    pub bytes_held: u64,
    /// Rows held now.
    pub rows_held: u64,
    /// Batches held now.
    pub batches_held: u64,
    /// Rows appended since the table was created.
    pub rows_added: u64,
    /// Batches appended since the table was created.
    pub batches_added: u64,
    /// Rows dropped to stay within the budget.
    pub rows_expired: u64,
    /// Batches dropped to stay within the budget.
    pub batches_expired: u64,
    /// Bytes dropped to stay within the budget.
    pub bytes_expired: u64,
    /// `time_` of the oldest row still held (ns since the epoch), if the table has one.
    pub oldest_time_ns: Option<i64>,
    /// `time_` of the newest row held.
    pub newest_time_ns: Option<i64>,
}

struct StoredBatch {
    first_row: u64,
    batch: RecordBatch,
    bytes: u64,
    min_time: Option<i64>,
    max_time: Option<i64>,
}

struct Inner {
    batches: VecDeque<StoredBatch>,
    next_row: u64,
    stats: TableStats,
}

/// A bounded, append-only, columnar table.
///
/// Appends never block readers for long: readers take a snapshot of `Arc`-backed batches
/// under a read lock. When the bytes held would pass the budget, the oldest batches are
/// dropped first and counted in [`TableStats`].
pub struct Table {
    schema: TableSchema,
    arrow_schema: SchemaRef,
    time_column: Option<usize>,
    /// The columns the schema marks sensitive.
    sensitive: Vec<usize>,
    /// What those columns may keep: [`DataAccess`] as a number, so appends need no lock.
    data_access: AtomicU8,
    inner: RwLock<Inner>,
}

/// Rows read from a table after a given position, and the position to read from next.
#[derive(Debug)]
pub struct ReadSince {
    /// The rows, oldest first.
    pub batches: Vec<RecordBatch>,
    /// Pass this to the next call to get only newer rows.
    pub next_row: u64,
    /// Rows between the requested position and the first returned that had already expired.
    pub missed_rows: u64,
}

impl Table {
    /// An empty table with a byte budget.
    #[must_use]
    pub fn new(schema: TableSchema, budget_bytes: u64) -> Self {
        let time_column = schema.column_index("time_");
        let arrow_schema = schema.arrow_schema();
        let sensitive = schema
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.sensitive)
            .map(|(i, _)| i)
            .collect();
        Self {
            schema,
            arrow_schema,
            time_column,
            sensitive,
            data_access: AtomicU8::new(0),
            inner: RwLock::new(Inner {
                batches: VecDeque::new(),
                next_row: 0,
                stats: TableStats {
                    budget_bytes,
                    ..TableStats::default()
                },
            }),
        }
    }

    /// The table's schema.
    #[must_use]
    pub fn schema(&self) -> &TableSchema {
        &self.schema
    }

    /// The Arrow schema of its batches.
    #[must_use]
    pub fn arrow_schema(&self) -> SchemaRef {
        SchemaRef::clone(&self.arrow_schema)
    }

    /// What the sensitive columns of rows appended from now on keep.
    pub fn set_data_access(&self, access: DataAccess) {
        self.data_access.store(access as u8, Ordering::Relaxed);
    }

    /// What the sensitive columns keep.
    #[must_use]
    pub fn data_access(&self) -> DataAccess {
        match self.data_access.load(Ordering::Relaxed) {
            0 => DataAccess::Full,
            1 => DataAccess::Restricted,
            _ => DataAccess::PiiRestricted,
        }
    }

    /// Appends a batch, dropping the oldest batches as needed to stay within budget.
    /// Its sensitive columns are redacted first, as the table's data access mode says.
    ///
    /// A batch larger than the whole budget cannot be held: it is counted as expired
    /// at once (nothing older is dropped for it).
    ///
    /// # Errors
    /// [`Error::SchemaMismatch`] when the batch's columns differ from the table's.
    pub fn append(&self, batch: RecordBatch) -> Result<(), Error> {
        if batch.schema().fields() != self.arrow_schema.fields() {
            return Err(Error::SchemaMismatch {
                table: self.schema.name.clone(),
                expected: self.arrow_schema.to_string(),
                found: batch.schema().to_string(),
            });
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let batch = redact_batch(batch, &self.sensitive, self.data_access());
        let rows = batch.num_rows() as u64;
        let bytes = batch.get_array_memory_size() as u64;
        let (min_time, max_time) = self.time_bounds(&batch);
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let first_row = inner.next_row;
        inner.next_row += rows;
        let stats = &mut inner.stats;
        stats.rows_added += rows;
        stats.batches_added += 1;
        if bytes > stats.budget_bytes {
            stats.rows_expired += rows;
            stats.batches_expired += 1;
            stats.bytes_expired += bytes;
            return Ok(());
        }
        inner.batches.push_back(StoredBatch {
            first_row,
            batch,
            bytes,
            min_time,
            max_time,
        });
        inner.stats.bytes_held += bytes;
        inner.stats.rows_held += rows;
        inner.stats.batches_held += 1;
        expire(&mut inner);
        Ok(())
    }

    /// Changes the budget, dropping the oldest batches at once if it shrank.
    pub fn set_budget(&self, budget_bytes: u64) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        inner.stats.budget_bytes = budget_bytes;
        expire(&mut inner);
    }

    /// Every batch held now, oldest first.
    #[must_use]
    pub fn snapshot(&self) -> Vec<RecordBatch> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner.batches.iter().map(|b| b.batch.clone()).collect()
    }

    /// The batches that may hold rows with `time_` in `[start_ns, end_ns]`, oldest first.
    /// Batches wholly outside the range are skipped; rows are not filtered.
    #[must_use]
    pub fn snapshot_time_range(
        &self,
        start_ns: Option<i64>,
        end_ns: Option<i64>,
    ) -> Vec<RecordBatch> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner
            .batches
            .iter()
            .filter(|b| match (b.min_time, b.max_time) {
                (Some(lo), Some(hi)) => {
                    start_ns.is_none_or(|s| hi >= s) && end_ns.is_none_or(|e| lo <= e)
                }
                _ => true,
            })
            .map(|b| b.batch.clone())
            .collect()
    }

    /// Rows appended at or after position `row` (positions count every row ever appended).
    #[must_use]
    pub fn read_since(&self, row: u64) -> ReadSince {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let mut batches = Vec::new();
        let mut missed_rows = 0;
        for stored in &inner.batches {
            let len = stored.batch.num_rows() as u64;
            let end = stored.first_row + len;
            if end <= row {
                continue;
            }
            if batches.is_empty() && stored.first_row > row {
                missed_rows = stored.first_row - row;
            }
            let skip = row.saturating_sub(stored.first_row);
            // skip < len here, and both fit in usize because they came from one batch.
            let skip = usize::try_from(skip).unwrap_or(0);
            batches.push(stored.batch.slice(skip, stored.batch.num_rows() - skip));
        }
        if batches.is_empty() && inner.next_row > row {
            missed_rows = inner.next_row - row;
        }
        ReadSince {
            batches,
            next_row: inner.next_row.max(row),
            missed_rows,
        }
    }

    /// Drops the batches whose every row is older than `cutoff_ns` (a maximum age); a
    /// batch with some newer rows stays whole. Returns the rows dropped.
    pub fn expire_before(&self, cutoff_ns: i64) -> u64 {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let before = inner.stats.rows_expired;
        while inner
            .batches
            .front()
            .is_some_and(|b| b.max_time.is_some_and(|t| t < cutoff_ns))
        {
            drop_oldest(&mut inner);
        }
        inner.stats.rows_expired - before
    }

    /// Counters and the time span held.
    #[must_use]
    pub fn stats(&self) -> TableStats {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let mut stats = inner.stats.clone();
        stats.oldest_time_ns = inner.batches.iter().filter_map(|b| b.min_time).min();
        stats.newest_time_ns = inner.batches.iter().filter_map(|b| b.max_time).max();
        stats
    }

    fn time_bounds(&self, batch: &RecordBatch) -> (Option<i64>, Option<i64>) {
        let Some(index) = self.time_column else {
            return (None, None);
        };
        let Some(times) = batch
            .column(index)
            .as_primitive_opt::<TimestampNanosecondType>()
        else {
            return (None, None);
        };
        let values = times.iter().flatten();
        (values.clone().min(), values.max())
    }
}

/// Drops the oldest batches until the bytes held fit the budget.
fn expire(inner: &mut Inner) {
    while inner.stats.bytes_held > inner.stats.budget_bytes {
        if !drop_oldest(inner) {
            break;
        }
    }
}

/// Drops the oldest batch, counting it as expired; false when there is none.
fn drop_oldest(inner: &mut Inner) -> bool {
    {
        let Some(oldest) = inner.batches.pop_front() else {
            return false;
        };
        let rows = oldest.batch.num_rows() as u64;
        let stats = &mut inner.stats;
        stats.bytes_held -= oldest.bytes;
        stats.rows_held -= rows;
        stats.batches_held -= 1;
        stats.rows_expired += rows;
        stats.batches_expired += 1;
        stats.bytes_expired += oldest.bytes;
    }
    true
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::row_builder::RowBuilder;
    use crate::schema::{ColumnSchema, DataType, SemanticType};

    fn schema() -> TableSchema {
        TableSchema::new(
            "t",
            "test",
            vec![
                ColumnSchema::new("time_", DataType::Time64Ns, SemanticType::None, ""),
                ColumnSchema::new("v", DataType::Int64, SemanticType::None, ""),
            ],
        )
    }

    fn batch(first: i64, rows: i64) -> RecordBatch {
        let mut b = RowBuilder::new(&schema());
        for i in first..first + rows {
            b.append_time(i);
            b.append_i64(i);
            b.finish_row();
        }
        b.finish()
    }

    #[test]
    fn expire_before_drops_only_wholly_older_batches() {
        let table = Table::new(schema(), 1 << 30);
        table.append(batch(0, 10)).unwrap();
        table.append(batch(10, 10)).unwrap();
        table.append(batch(20, 10)).unwrap();
        assert_eq!(table.expire_before(15), 10, "the first batch ends at 9");
        assert_eq!(
            values(&table.snapshot())[0],
            10,
            "the straddling batch stays whole"
        );
        assert_eq!(table.stats().oldest_time_ns, Some(10));
        assert_eq!(table.expire_before(i64::MAX), 20);
        assert_eq!(table.stats().bytes_held, 0);
    }

    fn values(batches: &[RecordBatch]) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| {
                b.column(1)
                    .as_primitive::<arrow_array::types::Int64Type>()
                    .values()
                    .to_vec()
            })
            .collect()
    }

    #[test]
    fn budget_holds_under_appends_far_larger_than_it() {
        let one = batch(0, 100).get_array_memory_size() as u64;
        let table = Table::new(schema(), one * 10);
        for i in 0..1000 {
            table.append(batch(i * 100, 100)).unwrap();
            assert!(table.stats().bytes_held <= one * 10);
        }
        let stats = table.stats();
        assert_eq!(stats.batches_added, 1000);
        assert_eq!(stats.batches_held, 10);
        assert_eq!(stats.batches_expired, 990);
        assert_eq!(stats.rows_expired, 99_000);
        assert_eq!(stats.rows_held + stats.rows_expired, stats.rows_added);
        assert_eq!(stats.bytes_expired, one * 990);
        // The newest data is what remains, in order.
        let held = values(&table.snapshot());
        assert_eq!(held, (99_000..100_000).collect::<Vec<_>>());
        assert_eq!(stats.oldest_time_ns, Some(99_000));
        assert_eq!(stats.newest_time_ns, Some(99_999));
    }

    #[test]
    fn oldest_goes_first_when_the_budget_shrinks() {
        let one = batch(0, 10).get_array_memory_size() as u64;
        let table = Table::new(schema(), one * 4);
        for i in 0..4 {
            table.append(batch(i * 10, 10)).unwrap();
        }
        table.set_budget(one * 2);
        assert_eq!(values(&table.snapshot()), (20..40).collect::<Vec<_>>());
        assert_eq!(table.stats().batches_expired, 2);
    }

    #[test]
    fn a_batch_larger_than_the_budget_is_counted_as_expired() {
        let table = Table::new(schema(), 64);
        table.append(batch(0, 1000)).unwrap();
        let stats = table.stats();
        assert_eq!((stats.rows_held, stats.rows_expired), (0, 1000));
    }

    #[test]
    fn read_since_returns_only_new_rows_and_counts_missed_ones() {
        let one = batch(0, 10).get_array_memory_size() as u64;
        let table = Table::new(schema(), one * 2);
        table.append(batch(0, 10)).unwrap();
        let first = table.read_since(0);
        assert_eq!(values(&first.batches), (0..10).collect::<Vec<_>>());
        table.append(batch(10, 10)).unwrap();
        let second = table.read_since(first.next_row - 5);
        assert_eq!(values(&second.batches), (5..20).collect::<Vec<_>>());
        for i in 2..6 {
            table.append(batch(i * 10, 10)).unwrap();
        }
        let third = table.read_since(second.next_row);
        assert_eq!(third.missed_rows, 20);
        assert_eq!(values(&third.batches), (40..60).collect::<Vec<_>>());
    }

    #[test]
    fn time_range_skips_batches_outside_it() {
        let table = Table::new(schema(), u64::MAX);
        for i in 0..5 {
            table.append(batch(i * 10, 10)).unwrap();
        }
        let hit = table.snapshot_time_range(Some(25), Some(31));
        assert_eq!(values(&hit), (20..40).collect::<Vec<_>>());
    }

    #[test]
    fn wrong_schema_is_refused() {
        let table = Table::new(schema(), u64::MAX);
        let other = TableSchema::new(
            "o",
            "",
            vec![ColumnSchema::new(
                "x",
                DataType::String,
                SemanticType::None,
                "",
            )],
        );
        let mut b = RowBuilder::new(&other);
        b.append_str("x");
        b.finish_row();
        let err = table.append(b.finish()).unwrap_err();
        assert!(err.to_string().contains("table t"), "{err}");
    }
}
