"""Runs a PxL script through Pixie's own Python client (pxapi), connected straight to
`px local`'s API without TLS, and prints what the client decoded, as JSON lines:
{"table": ..., "row": {column: [python type name, value as text]}}, or
{"error": type name, "message": ...} when the client raised.

    python run_script.py ADDR SCRIPT_FILE TABLE
"""
import json
import sys

import grpc
import pxapi


def main():
    addr, script_path, table = sys.argv[1:4]
    conn = pxapi.Conn(
        token="",
        pixie_url=addr,
        cluster_id="local",
        use_encryption=False,
        channel_fn=lambda url: grpc.aio.insecure_channel(url),
    )
    script = conn.prepare_script(open(script_path).read())
    try:
        for row in script.results(table):
            relation = row.relation
            cells = {}
            for i in range(relation.num_cols()):
                value = row[i]
                cells[relation.get_col_name(i)] = [type(value).__name__, str(value)]
            print(json.dumps({"table": table, "row": cells}), flush=True)
    except Exception as error:  # the test asserts on the exception's type
        print(json.dumps({"error": type(error).__name__, "message": str(error)}), flush=True)


if __name__ == "__main__":
    main()
