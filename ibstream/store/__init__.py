"""The tick store: what the server recorded, as hive-partitioned Parquet (see `layout`)."""
