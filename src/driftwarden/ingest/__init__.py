"""Getting values into the drift workers: the batch wire format and the Sender.

``wire`` is the columnar batch codec both sides share; ``sender`` routes batches by
the shard map to their owner shards, retries until acknowledged and sheds load with a
bound. The model server uses the Sender today; the ingest gateway will too.
"""
