"""Reads a collector's Arrow or Parquet output with DuckDB and prints what
the test checks, as one JSON object: the row count, every column's DuckDB
type, the flows per dependency edge (src workload, dst workload), the
distinct record ids, and how many Community IDs join two records.

usage: duckdb_flows.py arrow|parquet DIR
"""

import glob
import json
import sys

import duckdb


def arrow_table(files):
    """Each file of the Arrow output is complete IPC streams one after
    another (one per chunk): read streams until the file ends."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    tables = []
    for path in files:
        with open(path, "rb") as f:
            reader = pa.BufferReader(f.read())
        while reader.tell() < reader.size():
            tables.append(ipc.open_stream(reader).read_all())
    return pa.concat_tables(tables)


def main():
    kind, out = sys.argv[1], sys.argv[2]
    con = duckdb.connect()
    if kind == "arrow":
        flows = arrow_table(sorted(glob.glob(f"{out}/*.arrows")))
        con.register("flows", flows)
    else:
        files = sorted(glob.glob(f"{out}/*.parquet"))
        con.execute(f"CREATE VIEW flows AS SELECT * FROM read_parquet({files!r})")
    result = {
        "rows": con.execute("SELECT count(*) FROM flows").fetchone()[0],
        "types": {name: t for name, t, *_ in con.execute("DESCRIBE flows").fetchall()},
        "edges": con.execute(
            "SELECT src_workload_id, dst_workload_id, count(*) FROM flows GROUP BY ALL ORDER BY ALL NULLS FIRST"
        ).fetchall(),
        "distinct_record_ids": con.execute(
            "SELECT count(DISTINCT record_id) FROM flows"
        ).fetchone()[0],
        "joined_connections": con.execute(
            "SELECT count(*) FROM (SELECT community_id FROM flows GROUP BY community_id HAVING count(*) = 2)"
        ).fetchone()[0],
        "egress_from_a": con.execute(
            "SELECT count(*) FROM flows WHERE flow_direction = 'egress' AND srcaddr LIKE '10.1.%'"
        ).fetchone()[0],
    }
    print(json.dumps(result))


main()
