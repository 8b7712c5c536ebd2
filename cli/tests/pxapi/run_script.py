"""Runs a PxL script through Pixie's own Python client (pxapi), connected straight to
`px local`'s API (with TLS when given the CA that signed its certificate), and prints what the client decoded, as JSON lines:
{"table": ..., "row": {column: [python type name, value as text]}}, or
{"error": type name, "message": ...} when the client raised.

    python run_script.py ADDR SCRIPT_FILE TABLE [CA_FILE]

PX_API_KEY, if set, is the token (pxapi sends it as `pixie-api-key`); PX_TLS_SERVER_NAME,
if set, is the name the server's certificate must carry when not ADDR's host (a pod IP
reached for its Service's name).
"""
import json
import os
import sys

import grpc
import pxapi


def main():
    addr, script_path, table = sys.argv[1:4]
    if len(sys.argv) > 4:
        credentials = grpc.ssl_channel_credentials(root_certificates=open(sys.argv[4], "rb").read())
        name = os.environ.get("PX_TLS_SERVER_NAME")
        options = [("grpc.ssl_target_name_override", name)] if name else []
        channel_fn = lambda url: grpc.aio.secure_channel(url, credentials, options=options)
    else:
        channel_fn = lambda url: grpc.aio.insecure_channel(url)
    conn = pxapi.Conn(
        token=os.environ.get("PX_API_KEY", ""),
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
