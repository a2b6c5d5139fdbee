"""The Batch API: uploaded files, batches of requests and their lines, run in spare capacity.

``files`` stores the files (``/v1/files``), ``batches`` holds a batch's state machine (validate,
run, finalize, cancel, expire) over the record store, and ``runner`` sends the lines through the
gateway's pipeline at the batch tier.
"""
