"""The platform's dialect, pure: records, method contracts, command envelopes, results, signatures.

No I/O and no Flask: everything below (transports, runtime, Flask glue) builds on these.
"""
