"""Runs a PxL script through Pixie's own Python client (pxapi), connected straight to
`px local`'s API (with TLS when given the CA that signed its certificate), and prints what the client decoded, as JSON lines:
{"table": ..., "row": {column: [python type name, value as text]}}, or
{"error": type name, "message": ...} when the client raised.

    python run_script.py ADDR SCRIPT_FILE TABLE [CA_FILE]
"""
import json
import sys

import grpc
import pxapi


def main():
    addr, script_path, table = sys.argv[1:4]
    if len(sys.argv) > 4:
        credentials = grpc.ssl_channel_credentials(root_certificates=open(sys.argv[4], "rb").read())
        channel_fn = lambda url: grpc.aio.secure_channel(url, credentials)
    else:
        channel_fn = lambda url: grpc.aio.insecure_channel(url)
    conn = pxapi.Conn(
        token="",
        pixie_url=addr,
        cluster_id="local",
        use_encryption=len(sys.argv) > 4,
        channel_fn=channel_fn,
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
