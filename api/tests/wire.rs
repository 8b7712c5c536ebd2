//! Encoding of the generated messages: round trips, and field numbers checked on
//! the wire by decoding the bytes by hand.

use prost::Message;
use px_api::pem::{ListTablesResponse, ScanRequest, TableInfo};
use px_api::vizierpb::{
    BooleanColumn, Column, CompilerError, Configs, DataType, ErrorDetails, ExecuteScriptRequest,
    ExecuteScriptResponse, Float64Column, Int64Column, MutationInfo, QueryData,
    QueryExecutionStats, QueryMetadata, QueryTimingInfo, Relation, RowBatchData, SemanticType,
    Status, StringColumn, Time64NsColumn, UInt128, UInt128Column, column, configs, error_details,
    execute_script_request, execute_script_response, mutation_info, relation,
};

/// Protobuf wire types.
const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;

/// One top-level field of an encoded message: number, wire type, raw payload
/// (the varint's bytes, the 8 bytes, or the length-delimited contents).
#[derive(Debug, PartialEq)]
struct RawField {
    number: u64,
    wire_type: u8,
    payload: Vec<u8>,
}

fn read_varint(bytes: &[u8], pos: &mut usize) -> u64 {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = bytes[*pos];
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return value;
        }
    }
    panic!("varint longer than 10 bytes");
}

/// Splits an encoded message into its top-level fields, by hand.
fn raw_fields(bytes: &[u8]) -> Vec<RawField> {
    let mut fields = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let key = read_varint(bytes, &mut pos);
        let (number, wire_type) = (key >> 3, (key & 7) as u8);
        let start = pos;
        let end = match wire_type {
            VARINT => {
                read_varint(bytes, &mut pos);
                pos
            }
            I64 => pos + 8,
            LEN => {
                let len = read_varint(bytes, &mut pos) as usize;
                pos + len
            }
            other => panic!("unexpected wire type {other}"),
        };
        let payload_start = if wire_type == LEN { pos } else { start };
        fields.push(RawField {
            number,
            wire_type,
            payload: bytes[payload_start..end].to_vec(),
        });
        pos = end;
    }
    fields
}

fn field(fields: &[RawField], number: u64) -> &RawField {
    fields
        .iter()
        .find(|f| f.number == number)
        .unwrap_or_else(|| panic!("no field #{number} in {fields:?}"))
}

fn numbers(fields: &[RawField]) -> Vec<(u64, u8)> {
    let mut numbers: Vec<_> = fields.iter().map(|f| (f.number, f.wire_type)).collect();
    numbers.sort_unstable();
    numbers
}

fn column(data: column::ColData) -> Column {
    Column {
        col_data: Some(data),
    }
}

/// A row batch with one column of each of the six column types, two rows.
fn batch_of_every_type() -> RowBatchData {
    RowBatchData {
        table_id: "http_events_0".into(),
        cols: vec![
            column(column::ColData::BooleanData(BooleanColumn {
                data: vec![true, false],
            })),
            column(column::ColData::Int64Data(Int64Column {
                data: vec![-1, i64::MAX],
            })),
            column(column::ColData::Uint128Data(UInt128Column {
                data: vec![
                    UInt128 { low: 1, high: 2 },
                    UInt128 {
                        low: u64::MAX,
                        high: 0,
                    },
                ],
            })),
            column(column::ColData::Time64nsData(Time64NsColumn {
                data: vec![1_700_000_000_000_000_000, 0],
            })),
            column(column::ColData::Float64Data(Float64Column {
                data: vec![0.5, f64::MIN_POSITIVE],
            })),
            column(column::ColData::StringData(StringColumn {
                data: vec![b"GET".to_vec(), vec![0xff, 0x00]],
            })),
        ],
        num_rows: 2,
        eow: true,
        eos: true,
    }
}

#[test]
fn execute_script_response_with_every_column_type_round_trips() {
    let response = ExecuteScriptResponse {
        status: Some(Status {
            code: 3,
            message: "bad".into(),
            error_details: vec![ErrorDetails {
                error: Some(error_details::Error::CompilerError(CompilerError {
                    line: 4,
                    column: 2,
                    message: "no such table".into(),
                })),
            }],
        }),
        query_id: "4a1c-query".into(),
        result: Some(execute_script_response::Result::Data(QueryData {
            batch: Some(batch_of_every_type()),
            encrypted_batch: vec![1, 2, 3],
            execution_stats: Some(QueryExecutionStats {
                timing: Some(QueryTimingInfo {
                    execution_time_ns: 10,
                    compilation_time_ns: 20,
                }),
                bytes_processed: 1 << 40,
                records_processed: 7,
            }),
        })),
        mutation_info: Some(MutationInfo {
            status: None,
            states: vec![mutation_info::MutationState {
                id: "tp-1".into(),
                state: 2,
                name: "probe".into(),
            }],
        }),
    };
    let bytes = response.encode_to_vec();
    let decoded = ExecuteScriptResponse::decode(bytes.as_slice()).expect("decodes");
    assert_eq!(decoded, response);

    let top = raw_fields(&bytes);
    assert_eq!(
        numbers(&top),
        vec![(1, LEN), (2, LEN), (3, LEN), (5, LEN)],
        "status, query_id, data (oneof result), mutation_info"
    );
    let data = raw_fields(&field(&top, 3).payload);
    assert_eq!(
        numbers(&data),
        vec![(1, LEN), (2, LEN), (3, LEN)],
        "batch, execution_stats, encrypted_batch"
    );
    assert_eq!(field(&data, 3).payload, vec![1, 2, 3]);

    let batch = raw_fields(&field(&data, 1).payload);
    assert_eq!(
        numbers(&batch),
        vec![
            (1, LEN),
            (1, LEN),
            (1, LEN),
            (1, LEN),
            (1, LEN),
            (1, LEN),
            (2, VARINT),
            (3, VARINT),
            (4, VARINT),
            (5, LEN),
        ]
    );
    assert_eq!(field(&batch, 5).payload, b"http_events_0");
    // Each column carries its data in the oneof field of its type, in order:
    // boolean 1, int64 2, uint128 3, time64ns 4, float64 5, string 6.
    let column_fields: Vec<u64> = batch
        .iter()
        .filter(|f| f.number == 1)
        .map(|f| {
            let inner = raw_fields(&f.payload);
            assert_eq!(inner.len(), 1);
            inner[0].number
        })
        .collect();
    assert_eq!(column_fields, vec![1, 2, 3, 4, 5, 6]);
}

#[test]
fn row_batch_table_id_is_field_5() {
    let batch = RowBatchData {
        table_id: "t".into(),
        ..Default::default()
    };
    // Tag (5 << 3) | LEN = 0x2a, length 1, "t".
    assert_eq!(batch.encode_to_vec(), vec![0x2a, 0x01, b't']);
}

#[test]
fn hand_encoded_pixie_bytes_decode() {
    // ExecuteScriptResponse { query_id: "q", meta_data: QueryMetadata { name: "out",
    // id: "x", relation: Relation { columns: [ColumnInfo { column_name: "n",
    // column_type: INT64, column_semantic_type: ST_BYTES (800) }] } } }, as bytes.
    let column_info = [
        0x0a, 0x01, b'n', // column_name = "n"
        0x10, 0x02, // column_type = INT64
        0x20, 0xa0, 0x06, // column_semantic_type = 800
    ];
    let mut relation = vec![0x0a, column_info.len() as u8];
    relation.extend_from_slice(&column_info);
    let mut meta = vec![0x0a, relation.len() as u8];
    meta.extend_from_slice(&relation);
    meta.extend_from_slice(&[0x12, 0x03, b'o', b'u', b't', 0x1a, 0x01, b'x']);
    let mut bytes = vec![0x12, 0x01, b'q', 0x22, meta.len() as u8];
    bytes.extend_from_slice(&meta);

    let decoded = ExecuteScriptResponse::decode(bytes.as_slice()).expect("decodes");
    let expected = ExecuteScriptResponse {
        query_id: "q".into(),
        result: Some(execute_script_response::Result::MetaData(QueryMetadata {
            relation: Some(Relation {
                columns: vec![relation::ColumnInfo {
                    column_name: "n".into(),
                    column_type: DataType::Int64 as i32,
                    column_desc: String::new(),
                    column_semantic_type: SemanticType::StBytes as i32,
                }],
            }),
            name: "out".into(),
            id: "x".into(),
        })),
        ..Default::default()
    };
    assert_eq!(decoded, expected);
    assert_eq!(decoded.encode_to_vec(), bytes);
}

#[test]
fn execute_script_request_fields_and_headers_map() {
    let request = ExecuteScriptRequest {
        query_str: "px.display(1)".into(),
        exec_funcs: vec![execute_script_request::FuncToExecute {
            func_name: "f".into(),
            arg_values: vec![execute_script_request::func_to_execute::ArgValue {
                name: "start".into(),
                value: "-5m".into(),
            }],
            output_table_prefix: "p".into(),
        }],
        configs: Some(Configs {
            otel_endpoint_config: Some(configs::OTelEndpointConfig {
                url: "http://collector".into(),
                headers: [("k".to_string(), "v".to_string())].into(),
                insecure: true,
                timeout: 5,
            }),
            plugin_config: None,
        }),
        query_name: "name".into(),
        ..Default::default()
    };
    let bytes = request.encode_to_vec();
    assert_eq!(
        ExecuteScriptRequest::decode(bytes.as_slice()).expect("decodes"),
        request
    );
    let top = raw_fields(&bytes);
    assert_eq!(numbers(&top), vec![(1, LEN), (4, LEN), (9, LEN), (10, LEN)]);
    assert_eq!(field(&top, 10).payload, b"name");

    let func = raw_fields(&field(&top, 4).payload);
    let arg = raw_fields(&field(&func, 2).payload);
    assert_eq!(field(&arg, 1).payload, b"start");
    assert_eq!(field(&arg, 2).payload, b"-5m");

    // A map<string, string> is a repeated entry message { key = 1; value = 2 }.
    let configs = raw_fields(&field(&top, 9).payload);
    let otel = raw_fields(&field(&configs, 1).payload);
    assert_eq!(
        numbers(&otel),
        vec![(1, LEN), (2, LEN), (3, VARINT), (4, VARINT)]
    );
    let entry = raw_fields(&field(&otel, 2).payload);
    assert_eq!(field(&entry, 1).payload, b"k");
    assert_eq!(field(&entry, 2).payload, b"v");
}

#[test]
fn scan_request_time_bounds_have_presence() {
    let unbounded = ScanRequest {
        table: "http_events".into(),
        ..Default::default()
    };
    assert_eq!(
        numbers(&raw_fields(&unbounded.encode_to_vec())),
        vec![(1, LEN)]
    );

    // Zero is a real bound and is sent, unlike a plain proto3 scalar.
    let from_zero = ScanRequest {
        table: "http_events".into(),
        columns: vec!["time_".into(), "req_path".into()],
        start_time_ns: Some(0),
        end_time_ns: Some(10),
        filter: vec![9],
        limit: 100,
    };
    let bytes = from_zero.encode_to_vec();
    assert_eq!(
        numbers(&raw_fields(&bytes)),
        vec![
            (1, LEN),
            (2, LEN),
            (2, LEN),
            (3, VARINT),
            (4, VARINT),
            (5, LEN),
            (6, VARINT)
        ]
    );
    assert_eq!(
        ScanRequest::decode(bytes.as_slice()).expect("decodes"),
        from_zero
    );
}

#[test]
fn list_tables_response_round_trips() {
    let response = ListTablesResponse {
        tables: vec![TableInfo {
            name: "conn_stats".into(),
            desc: "connection statistics".into(),
            arrow_schema_ipc: vec![0xff, 0xff, 0xff, 0xff],
        }],
    };
    let bytes = response.encode_to_vec();
    assert_eq!(
        ListTablesResponse::decode(bytes.as_slice()).expect("decodes"),
        response
    );
    let table = raw_fields(&field(&raw_fields(&bytes), 1).payload);
    assert_eq!(numbers(&table), vec![(1, LEN), (2, LEN), (3, LEN)]);
}

#[test]
fn file_descriptor_set_holds_both_packages() {
    let fds = px_api::FILE_DESCRIPTOR_SET;
    let files: Vec<_> = raw_fields(fds)
        .into_iter()
        .filter(|f| f.number == 1)
        .map(|f| {
            let file = raw_fields(&f.payload);
            let name = String::from_utf8(field(&file, 1).payload.clone()).expect("utf-8");
            let package = String::from_utf8(field(&file, 2).payload.clone()).expect("utf-8");
            (name, package)
        })
        .collect();
    assert!(files.contains(&("vizierapi.proto".into(), "px.api.vizierpb".into())));
    assert!(files.contains(&("pem.proto".into(), "px.internal.pem.v1".into())));
}
